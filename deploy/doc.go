// Package deploy holds the container build and the Kubernetes manifests of
// the chat, and the tests that check them offline: the Dockerfile is parsed
// with BuildKit's parser, every manifest is decoded strictly into the
// Kubernetes API types, the kustomize overlays are rendered with the
// kustomize API, and ports, probes, environment variables and images are
// checked against the flags and environment that the binaries' mains read.
//
// Run the checks with `go test ./...` from this directory. The package has
// no code of its own; it is a separate module so that the Kubernetes and
// kustomize dependencies stay out of the application's module.
package deploy
