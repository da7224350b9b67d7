package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// What the Cloudstate operator (0.5) makes of a StatefulService: a Service
// named after it on this port, and a user container whose port is the first
// one declared, or this default, passed to it as PORT.
const (
	operatorServicePort     = 80
	operatorUserPortDefault = 8080
	operatorUserPortEnv     = "PORT"
)

// gatewayHealthPath is the gateway's health check, on its one port.
const gatewayHealthPath = "/healthz"

// operatorFunctions lists the StatefulServices of the operator route.
var operatorFunctions = []string{"presence", "friends"}

func loadOperatorManifests(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("operator", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in operator/: %v", err)
	}
	var objs []object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		o, err := decodeManifests(f, data)
		if err != nil {
			t.Fatal(err)
		}
		if len(o) == 0 {
			t.Errorf("%s holds no manifest", f)
		}
		objs = append(objs, o...)
	}
	return objs
}

func TestOperatorStatefulServices(t *testing.T) {
	t.Parallel()
	objs := loadOperatorManifests(t)
	services := objectsOf[*statefulService](objs)
	var names []string
	for _, s := range services {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	want := slices.Sorted(slices.Values(operatorFunctions))
	if !slices.Equal(names, want) {
		t.Fatalf("StatefulServices: got %v, want %v", names, want)
	}
	for _, s := range services {
		t.Run(s.Name, func(t *testing.T) {
			where := "StatefulService " + s.Name
			if len(s.Spec.Containers) != 1 {
				t.Fatalf("%s: %d containers; the operator runs only the first",
					where, len(s.Spec.Containers))
			}
			c := s.Spec.Containers[0]
			b, img := containerBinary(t, c)
			if img.name != s.Name {
				t.Errorf("%s runs image %s, want the %s function", where, c.Image, s.Name)
			}
			if s.Spec.Datastore != nil {
				t.Errorf("%s: CRDT services need no datastore", where)
			}
			checkEnvAndArgs(t, where, c, b)
			checkResources(t, where, s.Spec.Containers)

			// The operator passes the user port as PORT and its sidecar
			// dials 127.0.0.1 there.
			if _, ok := b.env[operatorUserPortEnv]; !ok {
				t.Errorf("%s: cmd/%s does not read %s, which the operator sets",
					where, b.name, operatorUserPortEnv)
			}
			if _, ok := envValue(c, operatorUserPortEnv); ok {
				t.Errorf("%s: sets %s, which the operator owns", where, operatorUserPortEnv)
			}
			userPort := int32(operatorUserPortDefault)
			if len(c.Ports) > 0 {
				userPort = c.Ports[0].ContainerPort
			}
			if want := portNumber(t, where, "PORT", b.defaultOf("PORT")); userPort != want {
				t.Errorf("%s: the operator would use port %d, cmd/%s listens on %d",
					where, userPort, b.name, want)
			}
			if host := effective(c, b, "HOST"); host != "" && host != "127.0.0.1" &&
				host != "0.0.0.0" && host != "localhost" {
				t.Errorf("%s: HOST %q is out of reach of the sidecar on 127.0.0.1", where, host)
			}
		})
	}
}

func TestOperatorGateway(t *testing.T) {
	t.Parallel()
	objs := loadOperatorManifests(t)
	deps := objectsOf[*appsv1.Deployment](objs)
	svcs := objectsOf[*corev1.Service](objs)
	if len(deps) != 1 || deps[0].Name != "gateway" {
		t.Fatalf("operator route: want exactly the gateway Deployment, got %d", len(deps))
	}
	d := deps[0]
	where := "deployment gateway"
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("%s: want 3 replicas", where)
	}
	checkSelector(t, d)
	spec := d.Spec.Template.Spec
	checkPodSecurity(t, where, spec)
	checkResources(t, where, spec.Containers)
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: want one container, got %d", where, len(spec.Containers))
	}
	c := spec.Containers[0]
	b, img := containerBinary(t, c)
	if img.name != "gateway" {
		t.Fatalf("%s runs %s, want the gateway image", where, c.Image)
	}
	checkEnvAndArgs(t, where, c, b)
	checkGatewayContainer(t, where, c, b)

	// The upstreams are the Services that the operator creates.
	for env, fn := range map[string]string{"PRESENCE": "presence", "FRIENDS": "friends"} {
		host, port := splitHostPort(t, where, effective(c, b, env))
		name, err := serviceHost(host, "")
		if err != nil {
			t.Errorf("%s: %s: %v", where, env, err)
			continue
		}
		if name != fn || port != operatorServicePort {
			t.Errorf("%s: %s is %s:%d, want the operator's Service %s:%d",
				where, env, host, port, fn, operatorServicePort)
		}
	}

	s := findService(svcs, "gateway")
	if s == nil {
		t.Fatalf("operator route: no gateway Service")
	}
	checkServiceTargets(t, s, []*appsv1.Deployment{d})
	if _, ok := findServicePort(s, 80, corev1.ProtocolTCP); !ok {
		t.Errorf("service gateway: no port 80")
	}
}

// checkGatewayContainer checks the gateway's port, probes and token secret.
func checkGatewayContainer(t *testing.T, where string, c corev1.Container, b binary) {
	t.Helper()
	want := portNumber(t, where, "PORT", effective(c, b, "PORT"))
	p, ok := containerPort(c, intstr.FromString("http"), corev1.ProtocolTCP)
	if !ok || p.ContainerPort != want {
		t.Errorf("%s: port http is %d, but the gateway listens on %d", where,
			p.ContainerPort, want)
	}
	checkProbe(t, where, "readiness", c, c.ReadinessProbe, gatewayHealthPath, b, "PORT")
	checkProbe(t, where, "liveness", c, c.LivenessProbe, gatewayHealthPath, b, "PORT")
	if err := servesPath("gateway", gatewayHealthPath); err != nil {
		t.Error(err)
	}
	e, ok := envValue(c, "TOKEN_SECRET")
	if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("%s: TOKEN_SECRET must come from a Secret, shared by every replica", where)
	} else if ref := e.ValueFrom.SecretKeyRef; ref.Optional != nil && *ref.Optional {
		t.Errorf("%s: TOKEN_SECRET is optional; replicas would sign with different keys",
			where)
	}
}

// checkServiceTargets checks that a Service selects exactly one of the
// Deployments and that each of its ports reaches a declared container port.
func checkServiceTargets(t *testing.T, s *corev1.Service,
	deps []*appsv1.Deployment) *appsv1.Deployment {
	t.Helper()
	where := "service " + s.Name
	if len(s.Spec.Selector) == 0 {
		t.Errorf("%s: no selector", where)
		return nil
	}
	sel := labels.SelectorFromSet(s.Spec.Selector)
	got := selectedDeployments(sel, deps)
	if len(got) != 1 {
		t.Errorf("%s: selector %s selects %d deployments, want 1", where, sel, len(got))
		return nil
	}
	d := got[0]
	for _, p := range s.Spec.Ports {
		ref := p.TargetPort
		if ref.Type == intstr.Int && ref.IntVal == 0 {
			ref = intstr.FromInt32(p.Port)
		}
		if _, _, ok := podPort(d.Spec.Template.Spec, ref, p.Protocol); !ok {
			t.Errorf("%s: port %d targets %s/%s, which deployment %s does not declare",
				where, p.Port, ref.String(), p.Protocol, d.Name)
		}
	}
	return d
}

func TestOperatorIstio(t *testing.T) {
	t.Parallel()
	objs := loadOperatorManifests(t)
	gws := objectsOf[*istioGateway](objs)
	vss := objectsOf[*istioVirtualService](objs)
	svcs := objectsOf[*corev1.Service](objs)
	if len(gws) != 1 || len(vss) != 1 {
		t.Fatalf("want one Istio Gateway and one VirtualService, got %d and %d",
			len(gws), len(vss))
	}
	gw, vs := gws[0], vss[0]
	if len(gw.Spec.Servers) == 0 || len(gw.Spec.Selector) == 0 {
		t.Errorf("gateway %s: no servers or no selector", gw.Name)
	}
	if !slices.Contains(vs.Spec.Gateways, gw.Name) {
		t.Errorf("virtualservice %s binds %v, not gateway %s", vs.Name, vs.Spec.Gateways,
			gw.Name)
	}
	if len(vs.Spec.HTTP) == 0 {
		t.Fatalf("virtualservice %s: no HTTP routes", vs.Name)
	}
	for _, r := range vs.Spec.HTTP {
		for _, dst := range r.Route {
			s := findService(svcs, dst.Destination.Host)
			if s == nil {
				t.Errorf("virtualservice %s routes to %s, which is no Service here", vs.Name,
					dst.Destination.Host)
				continue
			}
			if _, ok := findServicePort(s, dst.Destination.Port.Number,
				corev1.ProtocolTCP); !ok {
				t.Errorf("virtualservice %s routes to %s:%d, which has no such port",
					vs.Name, s.Name, dst.Destination.Port.Number)
			}
		}
	}
}

// TestOperatorRecommendedLabels checks the labels on the operator route's
// own objects; the operator labels what it creates itself.
func TestOperatorRecommendedLabels(t *testing.T) {
	t.Parallel()
	for _, o := range loadOperatorManifests(t) {
		meta := o.value.(metav1.Object)
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/component",
			"app.kubernetes.io/part-of"} {
			if meta.GetLabels()[k] == "" {
				t.Errorf("%s %s: no label %s", o.kind, o.name, k)
			}
		}
	}
}
