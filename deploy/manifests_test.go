package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// imagePrefix is the registry and organisation of every image of the chat.
const imagePrefix = "ghcr.io/cloudchat/"

// secretName is the Secret that holds the cluster keys and the token secret.
const secretName = "cloudchat"

// object is one decoded manifest.
type object struct {
	source string // file or overlay, and document number
	kind   string
	name   string
	value  any // pointer to the typed object
}

// newObject returns an empty typed value for an apiVersion and kind, or nil
// when the manifests are not expected to hold that kind.
func newObject(apiVersion, kind string) any {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}
	case "v1 Service":
		return &corev1.Service{}
	case "v1 Secret":
		return &corev1.Secret{}
	case "v1 Namespace":
		return &corev1.Namespace{}
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "cloudstate.io/v1alpha1 StatefulService":
		return &statefulService{}
	case "networking.istio.io/v1 Gateway":
		return &istioGateway{}
	case "networking.istio.io/v1 VirtualService":
		return &istioVirtualService{}
	}
	return nil
}

// decodeManifests splits a multi-document YAML stream and decodes each
// document strictly into its type: unknown or duplicate fields fail.
func decodeManifests(source string, data []byte) ([]object, error) {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: split documents: %w", source, err)
		}
		where := fmt.Sprintf("%s#%d", source, i)
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if head.APIVersion == "" && head.Kind == "" {
			if strings.TrimSpace(stripComments(doc)) != "" {
				return nil, fmt.Errorf("%s: document without apiVersion and kind", where)
			}
			continue
		}
		v := newObject(head.APIVersion, head.Kind)
		if v == nil {
			return nil, fmt.Errorf("%s: unexpected %s %s", where, head.APIVersion, head.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, v); err != nil {
			return nil, fmt.Errorf("%s: decode %s: %w", where, head.Kind, err)
		}
		meta, ok := v.(metav1.Object)
		if !ok {
			return nil, fmt.Errorf("%s: %T has no metadata", where, v)
		}
		if errs := validation.IsDNS1123Subdomain(meta.GetName()); len(errs) > 0 {
			return nil, fmt.Errorf("%s: name %q: %s", where, meta.GetName(),
				strings.Join(errs, "; "))
		}
		if err := validateLabels(meta.GetLabels()); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		objs = append(objs, object{source: where, kind: head.Kind, name: meta.GetName(),
			value: v})
	}
	return objs, nil
}

func stripComments(doc []byte) string {
	var b strings.Builder
	for line := range strings.SplitSeq(string(doc), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") && t != "---" {
			b.WriteString(line)
		}
	}
	return b.String()
}

func validateLabels(set map[string]string) error {
	for k, v := range set {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("label %s value %q: %s", k, v, strings.Join(errs, "; "))
		}
	}
	return nil
}

// statefulService mirrors the fields of a Cloudstate StatefulService that the
// Cloudstate operator reads; decoding into it strictly rejects any other.
type statefulService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              statefulServiceSpec `json:"spec"`
}

type statefulServiceSpec struct {
	// Containers holds the user function; the operator uses only the first
	// and names it user-container.
	Containers         []corev1.Container           `json:"containers"`
	Volumes            []corev1.Volume              `json:"volumes,omitempty"`
	ServiceAccountName string                       `json:"serviceAccountName,omitempty"`
	NodeSelector       map[string]string            `json:"nodeSelector,omitempty"`
	Tolerations        []corev1.Toleration          `json:"tolerations,omitempty"`
	Datastore          *statefulServiceDatastore    `json:"datastore,omitempty"`
	Autoscaling        *statefulServiceAutoscaling  `json:"autoscaling,omitempty"`
	SidecarResources   *corev1.ResourceRequirements `json:"sidecarResources,omitempty"`
	SidecarJvmMemory   string                       `json:"sidecarJvmMemory,omitempty"`
}

type statefulServiceDatastore struct {
	Name   string            `json:"name"`
	Config map[string]string `json:"config,omitempty"`
}

type statefulServiceAutoscaling struct {
	Enabled                       *bool  `json:"enabled,omitempty"`
	UserFunctionTargetConcurrency *int32 `json:"userFunctionTargetConcurrency,omitempty"`
	RequestTargetConcurrency      *int32 `json:"requestTargetConcurrency,omitempty"`
	TargetConcurrencyWindow       string `json:"targetConcurrencyWindow,omitempty"`
	ScaleUpStableDeadline         string `json:"scaleUpStableDeadline,omitempty"`
	ScaleDownStableDeadline       string `json:"scaleDownStableDeadline,omitempty"`
	RequestRateThresholdFactor    *int32 `json:"requestRateThresholdFactor,omitempty"`
	RequestRateWindow             string `json:"requestRateWindow,omitempty"`
}

// istioGateway mirrors the fields of an Istio Gateway that the manifests use.
type istioGateway struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector map[string]string `json:"selector"`
		Servers  []struct {
			Port struct {
				Number   int32  `json:"number"`
				Name     string `json:"name"`
				Protocol string `json:"protocol"`
			} `json:"port"`
			Hosts []string `json:"hosts"`
		} `json:"servers"`
	} `json:"spec"`
}

// istioVirtualService mirrors the fields of an Istio VirtualService that the
// manifests use.
type istioVirtualService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Hosts    []string `json:"hosts"`
		Gateways []string `json:"gateways"`
		HTTP     []struct {
			Name  string `json:"name,omitempty"`
			Match []struct {
				URI struct {
					Prefix string `json:"prefix,omitempty"`
					Exact  string `json:"exact,omitempty"`
				} `json:"uri"`
			} `json:"match,omitempty"`
			Route []struct {
				Destination struct {
					Host string `json:"host"`
					Port struct {
						Number int32 `json:"number"`
					} `json:"port"`
				} `json:"destination"`
				Weight int32 `json:"weight,omitempty"`
			} `json:"route"`
		} `json:"http"`
	} `json:"spec"`
}

// objectsOf returns the objects of one Go type, in order.
func objectsOf[T any](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.value.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// image is a container image reference split into its parts.
type image struct {
	repository string // ghcr.io/cloudchat/presence
	name       string // presence
	tag        string // latest; "" when pinned by digest only
}

func parseImage(ref string) (image, error) {
	rest, _, _ := strings.Cut(ref, "@")
	repo, tag := rest, ""
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		repo, tag = rest[:i], rest[i+1:]
	}
	if !strings.HasPrefix(repo, imagePrefix) {
		return image{}, fmt.Errorf("image %q is not under %s", ref, imagePrefix)
	}
	name := strings.TrimPrefix(repo, imagePrefix)
	if !slices.Contains(binaryNames, name) {
		return image{}, fmt.Errorf("image %q names no binary of the chat %v", ref, binaryNames)
	}
	if tag == "" && !strings.Contains(ref, "@") {
		return image{}, fmt.Errorf("image %q has neither tag nor digest", ref)
	}
	return image{repository: repo, name: name, tag: tag}, nil
}

// containerBinary returns the binary that a container runs, from its image.
func containerBinary(t *testing.T, c corev1.Container) (binary, image) {
	t.Helper()
	img, err := parseImage(c.Image)
	if err != nil {
		t.Fatalf("container %s: %v", c.Name, err)
	}
	return loadBinary(t, img.name), img
}

// envValue returns the literal value of env var name in container c and
// whether c sets it; a value from a Secret or field reference counts as set
// with the value "".
func envValue(c corev1.Container, name string) (*corev1.EnvVar, bool) {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i], true
		}
	}
	return nil, false
}

// effective returns what the binary in c sees for env var name: the value
// set in the manifest, or the binary's default.
func effective(c corev1.Container, b binary, name string) string {
	if e, ok := envValue(c, name); ok && e.ValueFrom == nil {
		return e.Value
	}
	return b.defaultOf(name)
}

// checkEnvAndArgs checks that a container sets only environment variables
// its binary reads, each at most once, and passes only flags it defines.
func checkEnvAndArgs(t *testing.T, where string, c corev1.Container, b binary) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range c.Env {
		if seen[e.Name] {
			t.Errorf("%s: container %s sets %s twice", where, c.Name, e.Name)
		}
		seen[e.Name] = true
		if _, ok := b.env[e.Name]; !ok {
			t.Errorf("%s: container %s sets %s, which cmd/%s does not read (it reads %v)",
				where, c.Name, e.Name, b.name, sortedKeys(b.env))
		}
		if e.Value != "" && e.ValueFrom != nil {
			t.Errorf("%s: %s has both value and valueFrom", where, e.Name)
		}
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("%s: container %s uses envFrom, which hides the names it sets", where, c.Name)
	}
	if len(c.Command) > 0 {
		t.Errorf("%s: container %s overrides the image's entrypoint", where, c.Name)
	}
	for _, arg := range c.Args {
		if !strings.HasPrefix(arg, "-") {
			t.Errorf("%s: container %s has argument %q; pass flags as -name=value",
				where, c.Name, arg)
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if _, ok := b.flags[name]; !ok {
			t.Errorf("%s: container %s passes -%s, which cmd/%s does not define",
				where, c.Name, name, b.name)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// portNumber parses a port in an environment variable or default.
func portNumber(t *testing.T, where, what, v string) int32 {
	t.Helper()
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		t.Fatalf("%s: %s is %q, not a port", where, what, v)
	}
	return int32(n)
}

// containerPort returns the port of c that ref names or numbers, with the
// given protocol.
func containerPort(c corev1.Container, ref intstr.IntOrString, proto corev1.Protocol) (
	corev1.ContainerPort, bool) {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, p := range c.Ports {
		pp := p.Protocol
		if pp == "" {
			pp = corev1.ProtocolTCP
		}
		if pp != proto {
			continue
		}
		if ref.Type == intstr.String && p.Name == ref.StrVal {
			return p, true
		}
		if ref.Type == intstr.Int && p.ContainerPort == ref.IntVal {
			return p, true
		}
	}
	return corev1.ContainerPort{}, false
}

// podPort finds a port that ref names or numbers among the containers of a
// pod, and the container that declares it.
func podPort(spec corev1.PodSpec, ref intstr.IntOrString, proto corev1.Protocol) (
	corev1.Container, corev1.ContainerPort, bool) {
	for _, c := range spec.Containers {
		if p, ok := containerPort(c, ref, proto); ok {
			return c, p, true
		}
	}
	return corev1.Container{}, corev1.ContainerPort{}, false
}

// checkPodSecurity checks that a pod meets the restricted Pod Security
// Standard and runs with a read-only root file system.
func checkPodSecurity(t *testing.T, where string, spec corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	podNonRoot := psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	podSeccomp := psc != nil && psc.SeccompProfile != nil &&
		psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	if psc != nil && psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		t.Errorf("%s: pod runs as uid 0", where)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: pod shares a host namespace", where)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: pod mounts a service account token it does not need", where)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("%s: container %s has no securityContext", where, c.Name)
			continue
		}
		if !podNonRoot && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) {
			t.Errorf("%s: container %s may run as root", where, c.Name)
		}
		if !podSeccomp && (sc.SeccompProfile == nil ||
			sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
			t.Errorf("%s: container %s has no RuntimeDefault seccomp profile", where, c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: container %s allows privilege escalation", where, c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: container %s is privileged", where, c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: container %s has a writable root file system", where, c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") ||
			len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: container %s does not drop ALL capabilities (and add none)",
				where, c.Name)
		}
	}
}

// checkResources checks that every container requests and limits CPU and
// memory, with requests within limits.
func checkResources(t *testing.T, where string, containers []corev1.Container) {
	t.Helper()
	for _, c := range containers {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, okReq := c.Resources.Requests[r]
			lim, okLim := c.Resources.Limits[r]
			if !okReq || !okLim {
				t.Errorf("%s: container %s lacks a %s request or limit", where, c.Name, r)
				continue
			}
			if req.Sign() <= 0 {
				t.Errorf("%s: container %s requests no %s", where, c.Name, r)
			}
			if req.Cmp(lim) > 0 {
				t.Errorf("%s: container %s requests more %s (%s) than its limit (%s)",
					where, c.Name, r, req.String(), lim.String())
			}
		}
	}
}

// checkProbe checks that an HTTP probe hits path on the port that env var
// portEnv of container c (running binary b) gives.
func checkProbe(t *testing.T, where, kind string, c corev1.Container, p *corev1.Probe,
	path string, b binary, portEnv string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: container %s has no HTTP %s probe", where, c.Name, kind)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: %s probe of %s hits %s, want %s", where, kind, c.Name,
			p.HTTPGet.Path, path)
	}
	want := portNumber(t, where, portEnv, effective(c, b, portEnv))
	port, ok := containerPort(c, p.HTTPGet.Port, corev1.ProtocolTCP)
	got := p.HTTPGet.Port.IntVal
	if p.HTTPGet.Port.Type == intstr.String {
		if !ok {
			t.Errorf("%s: %s probe of %s names port %q, which %s does not declare",
				where, kind, c.Name, p.HTTPGet.Port.StrVal, c.Name)
			return
		}
		got = port.ContainerPort
	}
	if got != want {
		t.Errorf("%s: %s probe of %s hits port %d, but %s is %d", where, kind, c.Name,
			got, portEnv, want)
	}
}

// checkSelector checks that a Deployment's selector is not empty and
// matches its pod template.
func checkSelector(t *testing.T, d *appsv1.Deployment) labels.Selector {
	t.Helper()
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels)+
		len(d.Spec.Selector.MatchExpressions) == 0 {
		t.Fatalf("deployment %s: empty selector", d.Name)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		t.Fatalf("deployment %s: selector: %v", d.Name, err)
	}
	if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("deployment %s: selector %s does not match its pod labels %v",
			d.Name, sel, d.Spec.Template.Labels)
	}
	for _, tsc := range d.Spec.Template.Spec.TopologySpreadConstraints {
		s, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector)
		if err != nil || tsc.LabelSelector == nil {
			t.Errorf("deployment %s: spread constraint without a valid selector", d.Name)
			continue
		}
		if !s.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("deployment %s: spread constraint selector %s misses its own pods",
				d.Name, s)
		}
	}
	return sel
}

// selectedDeployments returns the Deployments whose pods a label selector
// (a Service's or a PodDisruptionBudget's) selects.
func selectedDeployments(sel labels.Selector, deps []*appsv1.Deployment) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, d := range deps {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, d)
		}
	}
	return out
}

// splitHostPort splits an address such as presence:80.
func splitHostPort(t *testing.T, where, addr string) (string, int32) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: address %q: %v", where, addr, err)
	}
	return host, portNumber(t, where, "port of "+addr, port)
}

// serviceHost returns the Service name in a cluster DNS name such as
// presence, presence.ns or presence.ns.svc.cluster.local, given the
// namespace the caller lives in ("" for any).
func serviceHost(host, namespace string) (string, error) {
	parts := strings.Split(host, ".")
	switch {
	case len(parts) == 1:
		return host, nil
	case namespace != "" && parts[1] != namespace:
		return "", fmt.Errorf("%q points into namespace %s, not %s", host, parts[1], namespace)
	case len(parts) == 2,
		len(parts) >= 3 && parts[2] == "svc":
		return parts[0], nil
	}
	return "", fmt.Errorf("%q is not a cluster Service name", host)
}

func findService(svcs []*corev1.Service, name string) *corev1.Service {
	for _, s := range svcs {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func findServicePort(s *corev1.Service, port int32, proto corev1.Protocol) (
	corev1.ServicePort, bool) {
	for _, p := range s.Spec.Ports {
		pp := p.Protocol
		if pp == "" {
			pp = corev1.ProtocolTCP
		}
		if p.Port == port && pp == proto {
			return p, true
		}
	}
	return corev1.ServicePort{}, false
}

// TestDecodeStrict makes sure that the decoder really rejects what a
// cluster would reject or silently drop.
func TestDecodeStrict(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		doc     string
		wantErr string
	}{
		{
			name: "good",
			doc: "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n" +
				"spec:\n  ports:\n    - port: 80\n",
		},
		{
			name:    "unknown field",
			doc:     "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  prots: []\n",
			wantErr: "unknown field",
		},
		{
			name:    "duplicate field",
			doc:     "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\n",
			wantErr: "name",
		},
		{
			name:    "unknown kind",
			doc:     "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n",
			wantErr: "unexpected v1 Pod",
		},
		{
			name: "unknown StatefulService field",
			doc: "apiVersion: cloudstate.io/v1alpha1\nkind: StatefulService\n" +
				"metadata:\n  name: a\nspec:\n  container: []\n",
			wantErr: "unknown field",
		},
		{
			name:    "bad name",
			doc:     "apiVersion: v1\nkind: Service\nmetadata:\n  name: A_b\n",
			wantErr: "name",
		},
		{
			name: "bad label",
			doc: "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n" +
				"  labels:\n    app: \"-x\"\n",
			wantErr: "label",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			objs, err := decodeManifests("test", []byte(tt.doc))
			if tt.wantErr == "" {
				if err != nil || len(objs) != 1 {
					t.Fatalf("decode: got %d objects, %v; want 1, nil", len(objs), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("decode: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestReadmeNamesManifests checks that the README's commands name every
// manifest and overlay that exists, so that no step points at a moved file.
func TestReadmeNamesManifests(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatalf("read README.md: %v", err)
	}
	files, err := filepath.Glob(filepath.Join("operator", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kustomizations {
		if strings.Contains(k.dir, "/overlays/") {
			files = append(files, k.dir) // the base is applied through them
		}
	}
	for _, f := range files {
		if !strings.Contains(string(readme), "deploy/"+filepath.ToSlash(f)) {
			t.Errorf("README.md never names deploy/%s", filepath.ToSlash(f))
		}
	}
}
