package e2e

import (
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cloudchat/cloudchat/internal/probe"
)

// Ports are the loopback ports of one replica of a service.
type Ports struct {
	// Function is the user function's port.
	Function int
	// HTTP is the proxy's port for clients.
	HTTP int
	// Metrics is the proxy's port for /metrics, /healthz and /readyz.
	Metrics int
	// Cluster is the proxy's memberlist port, TCP and UDP.
	Cluster int
}

// handedOut remembers the ports picked by this test binary, so that two
// replicas never get the same one even after the first has let it go.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: make(map[int]bool)}

// PickPorts returns the ports of n replicas: free a moment ago, distinct,
// and never handed out before by this test binary. They lie below the
// kernel's ephemeral range when there is room, so that no outgoing
// connection, of which the cluster opens many, takes one while its replica
// is down; another program may still bind one first.
func PickPorts(n int) ([]Ports, error) {
	out := make([]Ports, n)
	for i := range out {
		for _, dst := range []*int{&out[i].Function, &out[i].HTTP, &out[i].Metrics} {
			p, err := freePort(false)
			if err != nil {
				return nil, err
			}
			*dst = p
		}
		p, err := freePort(true)
		if err != nil {
			return nil, err
		}
		out[i].Cluster = p
	}
	return out, nil
}

// lowestPort is the bottom of the range ports are picked from, above the
// ports of a local stack and of most servers.
const lowestPort = 20000

// freePort returns a loopback port free for TCP and, when udp is set, for
// UDP too.
func freePort(udp bool) (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	top := ephemeralStart()
	for range 100 {
		port := 0
		if top > lowestPort+1000 {
			port = lowestPort + rand.IntN(top-lowestPort)
		}
		port, err := tryPort(port, udp)
		if err != nil {
			return 0, err
		}
		if port != 0 && !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port, nil
		}
	}
	return 0, errors.New("find free port: none found in 100 attempts")
}

// tryPort listens on port, 0 for any, and returns it when it was free on
// TCP and, when udp is set, on UDP; 0 when it was taken.
func tryPort(port int, udp bool) (int, error) {
	l, err := net.Listen("tcp", hostPort(port))
	if err != nil {
		if port == 0 {
			return 0, fmt.Errorf("find free port: %w", err)
		}
		return 0, nil
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("find free port: listener has no TCP address")
	}
	if udp {
		pc, err := net.ListenPacket("udp", hostPort(addr.Port))
		if err != nil {
			return 0, nil
		}
		pc.Close()
	}
	return addr.Port, nil
}

// ephemeralStart returns the first port of the kernel's range for outgoing
// connections, or 0 when it is unknown.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 0
	}
	n, err := strconv.Atoi(fields[0])
	if err != nil {
		return 0
	}
	return n
}

// hostPort returns "127.0.0.1:port".
func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// Replica is one replica of a service: a user function and the proxy in
// front of it.
type Replica struct {
	// Name is the replica's name, such as "friends-2".
	Name string
	// Ports are the replica's ports.
	Ports Ports
	// Function is the Go user function; nil when the test runs its own.
	Function *Process
	// Proxy is the clustered proxy.
	Proxy *Process
}

// URL returns the base URL of the proxy's public endpoint.
func (r *Replica) URL() string { return "http://" + hostPort(r.Ports.HTTP) }

// FunctionSpec returns the spec of a Go user function binary, "friends" or
// "presence", listening on 127.0.0.1:port.
func FunctionSpec(bins Binaries, service, name string, port int) Spec {
	return Spec{
		Name:  name,
		Path:  bins.Path(service),
		Env:   []string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port)},
		Ready: probe.TCP(hostPort(port)),
	}
}

// ProxySpec returns the spec of the proxy of replica i of a service whose
// replicas have the ports all, clustered with every replica as a seed (this
// one included, as a Kubernetes headless service would list it) and gossip
// encrypted with key, base64 as CLUSTER_KEY takes it. It is ready once
// /readyz answers 200: it has discovered its function.
func ProxySpec(bins Binaries, service string, i int, all []Ports, key string) Spec {
	seeds := make([]string, len(all))
	for j, p := range all {
		seeds[j] = hostPort(p.Cluster)
	}
	p := all[i]
	name := fmt.Sprintf("%s-%d", service, i+1)
	return Spec{
		Name: name + "-proxy",
		Path: bins.Path("proxy"),
		Env: []string{
			"HTTP_HOST=127.0.0.1",
			"HTTP_PORT=" + strconv.Itoa(p.HTTP),
			"METRICS_PORT=" + strconv.Itoa(p.Metrics),
			"USER_FUNCTION_HOST=127.0.0.1",
			"USER_FUNCTION_PORT=" + strconv.Itoa(p.Function),
			"NODE_NAME=" + name,
			"CLUSTER_HOST=127.0.0.1",
			"CLUSTER_PORT=" + strconv.Itoa(p.Cluster),
			"CLUSTER_JOIN=" + strings.Join(seeds, ","),
			"CLUSTER_KEY=" + key,
			"LOG_LEVEL=" + logLevel(),
		},
		Ready: probe.HTTP(fmt.Sprintf("http://%s/readyz", hostPort(p.Metrics))),
	}
}

// logLevel is the proxies' log level: info, or E2E_LOG_LEVEL when set, such
// as debug to trace every cluster connection of a failing run.
func logLevel() string {
	if l := os.Getenv("E2E_LOG_LEVEL"); l != "" {
		return l
	}
	return "info"
}

// StartProxies starts a clustered proxy for each of ports, all at once, in
// front of functions already listening on their function ports, and waits
// until every one is ready. Their gossip is encrypted with a new key, as in
// production. They are killed when the test ends.
func StartProxies(t testing.TB, bins Binaries, service string, ports []Ports) []*Replica {
	t.Helper()
	key := make([]byte, 32)
	_, _ = crand.Read(key) // documented never to return an error
	specs := make([]Spec, len(ports))
	for i := range ports {
		specs[i] = ProxySpec(bins, service, i, ports, base64.StdEncoding.EncodeToString(key))
	}
	procs := Start(t, specs...)
	rs := make([]*Replica, len(ports))
	for i, p := range procs {
		rs[i] = &Replica{
			Name:  fmt.Sprintf("%s-%d", service, i+1),
			Ports: ports[i],
			Proxy: p,
		}
	}
	return rs
}

// StartService starts n replicas of a service, "friends" or "presence":
// the Go user function and a clustered proxy each. Everything is killed
// when the test ends.
func StartService(t testing.TB, bins Binaries, service string, n int) []*Replica {
	t.Helper()
	ports, err := PickPorts(n)
	if err != nil {
		t.Fatal(err)
	}
	specs := make([]Spec, n)
	for i, p := range ports {
		name := fmt.Sprintf("%s-%d-function", service, i+1)
		specs[i] = FunctionSpec(bins, service, name, p.Function)
	}
	fns := Start(t, specs...)
	rs := StartProxies(t, bins, service, ports)
	for i, r := range rs {
		r.Function = fns[i]
	}
	return rs
}
