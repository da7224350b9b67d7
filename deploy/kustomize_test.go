package deploy

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// A kustomization to render, and what is particular to it.
type kustomization struct {
	dir string
	// namespace every namespaced object must be in; "" for none.
	namespace string
	// versioned is true when the overlay sets the version label and pins the
	// image tags; the version label must then equal every image's tag.
	versioned bool
	// ownsSecret is true when the Secret is generated here; otherwise it is
	// created beside the overlay and documented in the README.
	ownsSecret bool
	// minReplicas is the least replicas of each function the rendering may
	// have.
	minReplicas int32
}

var kustomizations = []kustomization{
	{dir: "kustomize/base", minReplicas: 3},
	{dir: "kustomize/overlays/local", namespace: "cloudchat", versioned: true,
		ownsSecret: true, minReplicas: 2},
	{dir: "kustomize/overlays/production", namespace: "cloudchat", versioned: true,
		minReplicas: 3},
}

// functionServices maps each user function to the gateway env var that
// names its Service.
var functionServices = map[string]string{"presence": "PRESENCE", "friends": "FRIENDS"}

// recommendedLabels must be on every object and pod of the standalone route.
var recommendedLabels = []string{
	"app.kubernetes.io/name",
	"app.kubernetes.io/instance",
	"app.kubernetes.io/component",
	"app.kubernetes.io/part-of",
}

const versionLabel = "app.kubernetes.io/version"

// The proxy's health checks on its metrics port: live while it runs, ready
// once it has discovered its user function.
const (
	proxyReadyPath = "/readyz"
	proxyLivePath  = "/healthz"
)

func TestProxyServesProbes(t *testing.T) {
	t.Parallel()
	for _, p := range []string{proxyReadyPath, proxyLivePath} {
		if err := servesPath("cloudstate/proxy", p); err != nil {
			t.Error(err)
		}
	}
}

// rendered is one kustomization's output, decoded.
type rendered struct {
	objs    []object
	deps    []*appsv1.Deployment
	svcs    []*corev1.Service
	pdbs    []*policyv1.PodDisruptionBudget
	secrets []*corev1.Secret
}

var (
	renderMu    sync.Mutex
	renderCache = map[string]rendered{}
)

// render runs kustomize on dir, as kubectl apply -k would, and decodes its
// output strictly.
func render(t *testing.T, dir string) rendered {
	t.Helper()
	renderMu.Lock()
	defer renderMu.Unlock()
	if r, ok := renderCache[dir]; ok {
		return r
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: encode: %v", dir, err)
	}
	objs, err := decodeManifests(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{
		objs:    objs,
		deps:    objectsOf[*appsv1.Deployment](objs),
		svcs:    objectsOf[*corev1.Service](objs),
		pdbs:    objectsOf[*policyv1.PodDisruptionBudget](objs),
		secrets: objectsOf[*corev1.Secret](objs),
	}
	renderCache[dir] = r
	return r
}

// pod is a Deployment's pod with its containers sorted by binary.
type pod struct {
	d        *appsv1.Deployment
	function *corev1.Container // a user function, if the pod runs one
	fnBinary binary
	proxy    *corev1.Container
	gateway  *corev1.Container
}

func classify(t *testing.T, d *appsv1.Deployment) pod {
	t.Helper()
	p := pod{d: d}
	for i := range d.Spec.Template.Spec.Containers {
		c := &d.Spec.Template.Spec.Containers[i]
		b, img := containerBinary(t, *c)
		switch img.name {
		case "proxy":
			p.proxy = c
		case "gateway":
			p.gateway = c
		default:
			p.function = c
			p.fnBinary = b
		}
	}
	return p
}

func TestKustomize(t *testing.T) {
	t.Parallel()
	for _, k := range kustomizations {
		t.Run(filepath.Base(k.dir), func(t *testing.T) {
			t.Parallel()
			r := render(t, k.dir)
			t.Run("objects", func(t *testing.T) { checkObjects(t, k, r) })
			t.Run("images", func(t *testing.T) { checkImages(t, k, r) })
			t.Run("functions", func(t *testing.T) { checkFunctions(t, k, r) })
			t.Run("gateway", func(t *testing.T) { checkGateway(t, r) })
			t.Run("services", func(t *testing.T) { checkServices(t, r) })
			t.Run("disruption budgets", func(t *testing.T) { checkBudgets(t, r) })
			t.Run("secrets", func(t *testing.T) { checkSecrets(t, k, r) })
		})
	}
}

// checkObjects checks what every object and pod needs: labels, namespace,
// selectors, security and resources.
func checkObjects(t *testing.T, k kustomization, r rendered) {
	wantKinds := []string{"Deployment", "PodDisruptionBudget", "Service"}
	var kinds []string
	for _, o := range r.objs {
		if !slices.Contains(kinds, o.kind) {
			kinds = append(kinds, o.kind)
		}
		meta := o.value.(metav1.Object)
		if o.kind == "Namespace" {
			if meta.GetName() != k.namespace {
				t.Errorf("%s: namespace %s, want %s", o.source, meta.GetName(), k.namespace)
			}
			continue
		}
		if meta.GetNamespace() != k.namespace {
			t.Errorf("%s %s: namespace %q, want %q", o.kind, o.name, meta.GetNamespace(),
				k.namespace)
		}
		if o.kind == "Secret" {
			continue
		}
		checkRecommendedLabels(t, o.kind+" "+o.name, meta.GetLabels(), k.versioned)
	}
	for _, want := range wantKinds {
		if !slices.Contains(kinds, want) {
			t.Errorf("no %s in the output", want)
		}
	}
	for _, d := range r.deps {
		where := "deployment " + d.Name
		checkSelector(t, d)
		checkRecommendedLabels(t, where+" pods", d.Spec.Template.Labels, k.versioned)
		if _, ok := d.Spec.Selector.MatchLabels[versionLabel]; ok {
			t.Errorf("%s: the selector holds the version, so no upgrade could apply", where)
		}
		checkPodSecurity(t, where, d.Spec.Template.Spec)
		checkResources(t, where, d.Spec.Template.Spec.Containers)
	}
}

func checkRecommendedLabels(t *testing.T, where string, set map[string]string,
	versioned bool) {
	t.Helper()
	want := recommendedLabels
	if versioned {
		want = append(slices.Clone(want), versionLabel)
	}
	for _, l := range want {
		if set[l] == "" {
			t.Errorf("%s: no label %s", where, l)
		}
	}
	if set["app.kubernetes.io/part-of"] != "" && set["app.kubernetes.io/part-of"] != "cloudchat" {
		t.Errorf("%s: part-of %q, want cloudchat", where, set["app.kubernetes.io/part-of"])
	}
}

// checkImages checks that every image is one of ours, and that an
// overlay's version label is the tag of the images it runs.
func checkImages(t *testing.T, k kustomization, r rendered) {
	for _, d := range r.deps {
		version := d.Spec.Template.Labels[versionLabel]
		for _, c := range d.Spec.Template.Spec.Containers {
			_, img := containerBinary(t, c)
			if k.versioned && img.tag != version {
				t.Errorf("deployment %s: container %s runs tag %q, but the pods are "+
					"labelled version %q", d.Name, c.Name, img.tag, version)
			}
			if k.versioned && img.tag == "latest" {
				t.Errorf("deployment %s: container %s runs :latest", d.Name, c.Name)
			}
		}
	}
}

// checkFunctions checks each user function's pod: the function, the proxy
// beside it, and the proxy's cluster wiring.
func checkFunctions(t *testing.T, k kustomization, r rendered) {
	seen := map[string]bool{}
	for _, d := range r.deps {
		p := classify(t, d)
		if p.function == nil && p.proxy == nil {
			continue
		}
		where := "deployment " + d.Name
		if p.function == nil || p.proxy == nil || p.gateway != nil ||
			len(d.Spec.Template.Spec.Containers) != 2 {
			t.Errorf("%s: want exactly a user function and a proxy", where)
			continue
		}
		fn, fb, pc := *p.function, p.fnBinary, *p.proxy
		pb := loadBinary(t, "proxy")
		if d.Name != fb.name {
			t.Errorf("%s runs the %s function; name it after it", where, fb.name)
		}
		seen[fb.name] = true
		if d.Spec.Replicas == nil || *d.Spec.Replicas < k.minReplicas {
			t.Errorf("%s: want at least %d replicas", where, k.minReplicas)
		}
		if s := d.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil ||
			s.MaxUnavailable.IntValue() != 0 || s.MaxUnavailable.Type != intstr.Int {
			t.Errorf("%s: a rolling update must not take a pod (and its state) away "+
				"before its replacement is ready: want maxUnavailable 0", where)
		}
		checkEnvAndArgs(t, where, fn, fb)
		checkEnvAndArgs(t, where, pc, pb)

		// The proxy reaches the function inside the pod.
		fnPort := portNumber(t, where, "function PORT", effective(fn, fb, "PORT"))
		ufPort := portNumber(t, where, "USER_FUNCTION_PORT",
			effective(pc, pb, "USER_FUNCTION_PORT"))
		if fnPort != ufPort {
			t.Errorf("%s: the function listens on %d, the proxy dials %d", where, fnPort,
				ufPort)
		}
		if h := effective(pc, pb, "USER_FUNCTION_HOST"); !isLoopback(h) {
			t.Errorf("%s: USER_FUNCTION_HOST %q is not this pod's loopback", where, h)
		}
		if h := effective(fn, fb, "HOST"); !isLoopback(h) && h != "0.0.0.0" {
			t.Errorf("%s: the function's HOST %q is out of the proxy's reach", where, h)
		}
		if len(fn.Ports) > 0 {
			t.Errorf("%s: the function declares ports, but only the proxy beside it "+
				"may call it", where)
		}

		// The proxy's ports are the ones it listens on.
		for env, names := range map[string][]string{
			"HTTP_PORT": {"http"}, "METRICS_PORT": {"metrics"},
			"CLUSTER_PORT": {"gossip", "gossip-udp"},
		} {
			want := portNumber(t, where, env, effective(pc, pb, env))
			for _, name := range names {
				proto := corev1.ProtocolTCP
				if strings.HasSuffix(name, "-udp") {
					proto = corev1.ProtocolUDP
				}
				cp, ok := containerPort(pc, intstr.FromString(name), proto)
				if !ok || cp.ContainerPort != want {
					t.Errorf("%s: proxy port %s/%s is %d, want %s %d", where, name, proto,
						cp.ContainerPort, env, want)
				}
			}
		}
		checkProbe(t, where, "readiness", pc, pc.ReadinessProbe, proxyReadyPath, pb,
			"METRICS_PORT")
		checkProbe(t, where, "liveness", pc, pc.LivenessProbe, proxyLivePath, pb,
			"METRICS_PORT")
		metrics := effective(pc, pb, "METRICS_PORT")
		if a := d.Spec.Template.Annotations["prometheus.io/port"]; a != "" && a != metrics {
			t.Errorf("%s: prometheus.io/port %s, but metrics are on %s", where, a, metrics)
		}

		// Each pod is a distinct member of the cluster.
		if e, ok := envValue(pc, "NODE_NAME"); !ok || e.ValueFrom == nil ||
			e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
			t.Errorf("%s: NODE_NAME must be the pod's name", where)
		}
		checkClusterJoin(t, where, d, pc, pb, r)
		gossip := effective(pc, pb, "CLUSTER_PORT")
		for _, a := range []string{"traffic.sidecar.istio.io/excludeInboundPorts",
			"traffic.sidecar.istio.io/excludeOutboundPorts"} {
			if v, ok := d.Spec.Template.Annotations[a]; ok && v != gossip {
				t.Errorf("%s: %s is %q, but the proxies gossip on %s", where, a, v, gossip)
			}
		}
		if e, ok := envValue(pc, "CLUSTER_KEY"); !ok || e.ValueFrom == nil ||
			e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("%s: CLUSTER_KEY must come from a Secret", where)
		}
	}
	for fn := range functionServices {
		if !seen[fn] {
			t.Errorf("no deployment runs the %s function", fn)
		}
	}
}

func isLoopback(host string) bool {
	return host == "127.0.0.1" || host == "localhost" || host == "::1"
}

// checkClusterJoin checks that CLUSTER_JOIN names the headless Service of
// this Deployment's own pods, on the gossip port.
func checkClusterJoin(t *testing.T, where string, d *appsv1.Deployment,
	pc corev1.Container, pb binary, r rendered) {
	t.Helper()
	join, ok := envValue(pc, "CLUSTER_JOIN")
	if !ok || join.Value == "" {
		t.Errorf("%s: CLUSTER_JOIN is not set; the proxies would not form a cluster", where)
		return
	}
	gossip := portNumber(t, where, "CLUSTER_PORT", effective(pc, pb, "CLUSTER_PORT"))
	for _, seed := range strings.Split(join.Value, ",") {
		host, port := splitHostPort(t, where, strings.TrimSpace(seed))
		name, err := serviceHost(host, d.Namespace)
		if err != nil {
			t.Errorf("%s: CLUSTER_JOIN: %v", where, err)
			continue
		}
		s := findService(r.svcs, name)
		if s == nil {
			t.Errorf("%s: CLUSTER_JOIN names %s, which is no Service here", where, name)
			continue
		}
		if s.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("%s: CLUSTER_JOIN names %s, which is not headless: its name would "+
				"resolve to one virtual IP, not to the pods", where, name)
		}
		if !s.Spec.PublishNotReadyAddresses {
			t.Errorf("service %s: without publishNotReadyAddresses a starting proxy "+
				"finds no peer until it is ready", name)
		}
		got := selectedDeployments(labels.SelectorFromSet(s.Spec.Selector), r.deps)
		if len(got) != 1 || got[0] != d {
			t.Errorf("service %s: selects %d deployments; want only %s", name, len(got),
				d.Name)
		}
		if port != gossip {
			t.Errorf("%s: CLUSTER_JOIN dials port %d, the proxies gossip on %d", where, port,
				gossip)
		}
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
			sp, ok := findServicePort(s, port, proto)
			if !ok {
				t.Errorf("service %s: no %s port %d for gossip", name, proto, port)
				continue
			}
			if cp, ok := containerPort(pc, sp.TargetPort, proto); !ok ||
				cp.ContainerPort != gossip {
				t.Errorf("service %s: %s port %d targets %s, not the gossip port", name,
					proto, port, sp.TargetPort.String())
			}
		}
	}
}

// checkGateway checks the gateway's pod, and that PRESENCE and FRIENDS reach
// the proxies of those functions.
func checkGateway(t *testing.T, r rendered) {
	var gw *appsv1.Deployment
	for _, d := range r.deps {
		if p := classify(t, d); p.gateway != nil {
			if gw != nil {
				t.Fatalf("two gateway deployments: %s and %s", gw.Name, d.Name)
			}
			gw = d
		}
	}
	if gw == nil {
		t.Fatal("no gateway deployment")
	}
	where := "deployment " + gw.Name
	if len(gw.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%s: want only the gateway container", where)
	}
	c := gw.Spec.Template.Spec.Containers[0]
	b := loadBinary(t, "gateway")
	checkEnvAndArgs(t, where, c, b)
	checkGatewayContainer(t, where, c, b)

	for fn, env := range functionServices {
		host, port := splitHostPort(t, where, effective(c, b, env))
		name, err := serviceHost(host, gw.Namespace)
		if err != nil {
			t.Errorf("%s: %s: %v", where, env, err)
			continue
		}
		s := findService(r.svcs, name)
		if s == nil {
			t.Errorf("%s: %s names Service %s, which is not here", where, env, name)
			continue
		}
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			t.Errorf("%s: %s names the headless Service %s", where, env, name)
		}
		sp, ok := findServicePort(s, port, corev1.ProtocolTCP)
		if !ok {
			t.Errorf("%s: %s dials %s:%d, which has no such port", where, env, name, port)
			continue
		}
		deps := selectedDeployments(labels.SelectorFromSet(s.Spec.Selector), r.deps)
		if len(deps) != 1 {
			t.Errorf("service %s selects %d deployments, want 1", name, len(deps))
			continue
		}
		p := classify(t, deps[0])
		if p.function == nil || p.fnBinary.name != fn || p.proxy == nil {
			t.Errorf("%s: %s reaches deployment %s, not the %s function's proxies",
				where, env, deps[0].Name, fn)
			continue
		}
		httpPort := portNumber(t, where, "HTTP_PORT",
			effective(*p.proxy, loadBinary(t, "proxy"), "HTTP_PORT"))
		cp, ok := containerPort(*p.proxy, sp.TargetPort, corev1.ProtocolTCP)
		if !ok || cp.ContainerPort != httpPort {
			t.Errorf("service %s: port %d targets %s, not the proxy's HTTP port %d", name,
				port, sp.TargetPort.String(), httpPort)
		}
		if sp.AppProtocol == nil || *sp.AppProtocol == "" {
			t.Errorf("service %s: port %d has no appProtocol; meshes and load balancers "+
				"would not know it carries HTTP/2", name, port)
		}
	}
}

// checkServices checks that every Service reaches declared ports of exactly
// one Deployment.
func checkServices(t *testing.T, r rendered) {
	for _, s := range r.svcs {
		checkServiceTargets(t, s, r.deps)
		for _, p := range s.Spec.Ports {
			if p.Name == "" && len(s.Spec.Ports) > 1 {
				t.Errorf("service %s: port %d has no name", s.Name, p.Port)
			}
		}
	}
}

// checkBudgets checks that each Deployment has one PodDisruptionBudget and
// that it lets at least one pod go.
func checkBudgets(t *testing.T, r rendered) {
	covered := map[*appsv1.Deployment]int{}
	for _, b := range r.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
		if err != nil || b.Spec.Selector == nil || sel.Empty() {
			t.Errorf("pdb %s: missing or bad selector: %v", b.Name, err)
			continue
		}
		got := selectedDeployments(sel, r.deps)
		if len(got) != 1 {
			t.Errorf("pdb %s: selects %d deployments, want 1", b.Name, len(got))
		}
		for _, d := range got {
			covered[d]++
		}
		if b.Spec.MaxUnavailable == nil && b.Spec.MinAvailable == nil {
			t.Errorf("pdb %s: neither maxUnavailable nor minAvailable", b.Name)
		}
		if m := b.Spec.MaxUnavailable; m != nil && m.Type == intstr.Int && m.IntVal < 1 {
			t.Errorf("pdb %s: maxUnavailable %d blocks every node drain", b.Name, m.IntVal)
		}
	}
	for _, d := range r.deps {
		if covered[d] != 1 {
			t.Errorf("deployment %s: covered by %d disruption budgets, want 1", d.Name,
				covered[d])
		}
	}
}

// checkSecrets checks every Secret reference: against the generated Secret
// when the overlay owns it, else against the name and keys that the README
// tells the operator to create.
func checkSecrets(t *testing.T, k kustomization, r rendered) {
	refs := map[string][]string{} // secret name → keys
	for _, d := range r.deps {
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.SecretKeyRef
				refs[ref.Name] = append(refs[ref.Name], ref.Key)
				if ref.Optional != nil && *ref.Optional {
					t.Errorf("deployment %s: %s is optional", d.Name, e.Name)
				}
			}
		}
	}
	if len(refs) == 0 {
		t.Fatal("no Secret is referenced")
	}
	if !k.ownsSecret {
		if len(r.secrets) > 0 {
			t.Errorf("%s holds a Secret; its values must not live in the repository", k.dir)
		}
		readme, err := os.ReadFile("README.md")
		if err != nil {
			t.Fatalf("read README.md: %v", err)
		}
		for name, keys := range refs {
			if name != secretName {
				t.Errorf("Secret %s is referenced; the README documents %s", name, secretName)
			}
			for _, key := range keys {
				if !strings.Contains(string(readme), key+"=") {
					t.Errorf("README.md does not show how to create key %s of Secret %s",
						key, name)
				}
			}
		}
		return
	}
	clusterKeys := map[string]string{}
	for name, keys := range refs {
		var s *corev1.Secret
		for _, sec := range r.secrets {
			if sec.Name == name {
				s = sec
			}
		}
		if s == nil {
			t.Errorf("Secret %s is referenced but not generated", name)
			continue
		}
		for _, key := range keys {
			v, ok := secretValue(s, key)
			if !ok {
				t.Errorf("Secret %s has no key %s", name, key)
				continue
			}
			if err := checkSecretValue(key, v); err != nil {
				t.Errorf("Secret %s: %v", name, err)
			}
			if strings.HasSuffix(key, "cluster-key") {
				if other, dup := clusterKeys[v]; dup {
					t.Errorf("Secret %s: %s and %s are equal; each service needs its own "+
						"key so that one's proxies cannot join the other's cluster", name,
						other, key)
				}
				clusterKeys[v] = key
			}
		}
	}
}

func secretValue(s *corev1.Secret, key string) (string, bool) {
	if v, ok := s.StringData[key]; ok {
		return v, true
	}
	v, ok := s.Data[key]
	return string(v), ok
}

// checkSecretValue checks a value against what its binary accepts.
func checkSecretValue(key, v string) error {
	switch {
	case strings.HasSuffix(key, "cluster-key"):
		raw, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return fmt.Errorf("%s is not base64: %w", key, err)
		}
		if n := len(raw); n != 16 && n != 24 && n != 32 {
			return fmt.Errorf("%s holds %d bytes; gossip encryption takes 16, 24 or 32",
				key, n)
		}
	case key == "token-secret":
		if len(v) < 32 {
			return fmt.Errorf("%s holds %d bytes; the gateway wants at least 32", key, len(v))
		}
	default:
		return fmt.Errorf("key %s is not one the chat knows", key)
	}
	return nil
}
