package benchrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudchat/cloudchat/internal/probe"
)

// child is one process the benchmark started.
type child struct {
	// Name is unique in its stack, such as "presence-proxy-2"; Role groups
	// processes of one kind, such as "presence-proxy".
	Name, Role string
	// Addr is the host:port the process serves on.
	Addr string
	// MetricsURL serves Prometheus metrics with the Go collector; empty
	// when the process has none.
	MetricsURL string
	cmd        *exec.Cmd
	logPath    string
	done       chan struct{}
	// waitErr is set before done is closed.
	waitErr error
}

// Pid returns the child's process ID.
func (c *child) Pid() int {
	return c.cmd.Process.Pid
}

// exited reports whether the child has ended, and how.
func (c *child) exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.waitErr
	default:
		return false, nil
	}
}

// logTail returns the last lines of the child's output.
func (c *child) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-8):], "\n")
}

// stack is a set of processes started together and stopped together.
type stack struct {
	binDir   string
	logDir   string
	logLevel string
	children []*child
}

// spec describes a child to start.
type spec struct {
	name, role, binary string
	// args are passed after the binary; env is added to this process's.
	args []string
	env  []string
	// addr is where the process serves; ready answers once it does.
	addr  string
	ready func(ctx context.Context) error
	// metricsURL serves Prometheus metrics, when not empty.
	metricsURL string
}

// start starts the process of sp and waits until it is ready.
func (s *stack) start(ctx context.Context, sp spec) (*child, error) {
	path := sp.binary
	if !filepath.IsAbs(path) {
		path = filepath.Join(s.binDir, sp.binary)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("find %s: %w (build the binaries first: go build -o bin/ ./cmd/...)",
			sp.name, err)
	}
	logPath := filepath.Join(s.logDir, sp.name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	cmd := exec.Command(path, sp.args...)
	cmd.Env = append(os.Environ(), sp.env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The children end with the benchmark even when it is killed, and sit
	// in their own process group so that a Ctrl-C reaches only the driver,
	// which stops them in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", sp.name, err)
	}
	c := &child{Name: sp.name, Role: sp.role, Addr: sp.addr, MetricsURL: sp.metricsURL,
		cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	s.children = append(s.children, c)

	readyCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := s.waitReady(readyCtx, c, sp.ready); err != nil {
		return nil, fmt.Errorf("wait for %s: %w\n%s", sp.name, err, c.logTail())
	}
	return c, nil
}

// waitReady polls ready until it succeeds, the child exits or ctx is done.
func (s *stack) waitReady(ctx context.Context, c *child, ready func(context.Context) error) error {
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("exited: %v", c.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dead returns an error naming the first child that has exited, or nil.
func (s *stack) dead() error {
	for _, c := range s.children {
		if ok, err := c.exited(); ok {
			return fmt.Errorf("%s exited (%v): %s", c.Name, err, lastLine(c.logTail()))
		}
	}
	return nil
}

// stop ends every child, newest first, with SIGTERM and, after a grace
// period, SIGKILL.
func (s *stack) stop() {
	for i := len(s.children) - 1; i >= 0; i-- {
		_ = s.children[i].cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(15 * time.Second)
	for _, c := range s.children {
		select {
		case <-c.done:
		case <-deadline:
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	s.children = nil
}

// sample reads every running child.
func (s *stack) sample() map[string]procSample {
	out := make(map[string]procSample, len(s.children)+1)
	for _, c := range s.children {
		if ok, _ := c.exited(); ok {
			continue
		}
		if ps, err := readProc(c.Pid()); err == nil {
			out[c.Name] = ps
		}
	}
	if ps, err := readProc(os.Getpid()); err == nil {
		out[selfName] = ps
	}
	return out
}

// goStats reads the Go runtime figures of every running child that serves
// metrics, and of the driver itself.
func (s *stack) goStats(ctx context.Context) map[string]goStats {
	out := make(map[string]goStats)
	for _, c := range s.children {
		if c.MetricsURL == "" {
			continue
		}
		if g, err := fetchGoStats(ctx, c.MetricsURL); err == nil {
			out[c.Name] = g
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out[selfName] = goStats{Goroutines: int64(runtime.NumGoroutine()), HeapInuse: int64(ms.HeapInuse)}
	return out
}

// selfName names the benchmark driver, which runs the load generator, in
// samples.
const selfName = "loadgen"

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// freePorts returns n distinct loopback ports that were free for both TCP
// and UDP a moment ago.
func freePorts(n int) ([]int, error) {
	var (
		ports []int
		held  []interface{ Close() error }
	)
	defer func() {
		for _, h := range held {
			_ = h.Close()
		}
	}()
	for tries := 0; len(ports) < n && tries < 100*n; tries++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		held = append(held, ln)
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		held = append(held, pc)
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, errors.New("find a free port: none free for both TCP and UDP")
	}
	return ports, nil
}

// hasFlag reports whether the program at path lists flag name in its
// usage.
func hasFlag(path, name string) bool {
	out, _ := exec.Command(path, "-h").CombinedOutput()
	return bytes.Contains(out, []byte("\n  -"+name+" ")) ||
		bytes.Contains(out, []byte("\n  -"+name+"\n"))
}

// chatStack describes the processes of a chat stack.
type chatStack struct {
	// presence and friends replicas; more than one forms a cluster.
	presence, friends int
	// gateway starts a gateway in front of them.
	gateway bool
	// maxSessions is passed to the gateway when it has such a setting.
	maxSessions int
}

// chat is a running chat stack.
type chat struct {
	*stack
	presenceProxies []string
	friendsProxies  []string
	gatewayURL      string
}

// startChat starts the functions and proxies of each service, then the
// gateway, each on free loopback ports.
func (s *stack) startChat(ctx context.Context, cs chatStack) (*chat, error) {
	c := &chat{stack: s}
	var err error
	if c.presenceProxies, err = s.startService(ctx, "presence", cs.presence); err != nil {
		return nil, err
	}
	if c.friendsProxies, err = s.startService(ctx, "friends", cs.friends); err != nil {
		return nil, err
	}
	if !cs.gateway {
		return c, nil
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	var args []string
	if cs.maxSessions > 0 && hasFlag(filepath.Join(s.binDir, "gateway"), "max-sessions") {
		args = append(args, "-max-sessions="+strconv.Itoa(cs.maxSessions))
	}
	_, err = s.start(ctx, spec{
		name: "gateway", role: "gateway", binary: "gateway", args: args, addr: addr,
		env: []string{
			"HOST=127.0.0.1",
			"PORT=" + strconv.Itoa(ports[0]),
			"PRESENCE=" + strings.Join(c.presenceProxies, ","),
			"FRIENDS=" + strings.Join(c.friendsProxies, ","),
			"LOG_LEVEL=" + s.logLevel,
			"LOG_FORMAT=json",
		},
		ready: probe.HTTP("http://" + addr + "/healthz"),
	})
	if err != nil {
		return nil, err
	}
	c.gatewayURL = "http://" + addr
	return c, nil
}

// proxyLimit is the bound on streams and entities given to each proxy,
// far above what one machine holds, so that the benchmark finds the
// machine's limits rather than configured ones.
const proxyLimit = 1_000_000

// startService starts replicas function and proxy pairs of svc and returns
// the proxies' addresses. More than one replica forms a cluster in which
// every proxy lists every other as a seed.
func (s *stack) startService(ctx context.Context, svc string, replicas int) ([]string, error) {
	if replicas == 0 {
		return nil, nil
	}
	ports, err := freePorts(4 * replicas)
	if err != nil {
		return nil, err
	}
	var seeds []string
	for i := range replicas {
		seeds = append(seeds, "127.0.0.1:"+strconv.Itoa(ports[4*i+3]))
	}
	var addrs []string
	for i := range replicas {
		fn, px, metrics, gossip := ports[4*i], ports[4*i+1], ports[4*i+2], ports[4*i+3]
		suffix := ""
		if replicas > 1 {
			suffix = "-" + strconv.Itoa(i+1)
		}
		fnAddr := "127.0.0.1:" + strconv.Itoa(fn)
		_, err := s.start(ctx, spec{
			name: svc + suffix, role: svc, binary: svc, addr: fnAddr,
			env:   []string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(fn), "LOG_LEVEL=" + s.logLevel},
			ready: probe.TCP(fnAddr),
		})
		if err != nil {
			return nil, err
		}
		env := []string{
			"HTTP_HOST=127.0.0.1",
			"HTTP_PORT=" + strconv.Itoa(px),
			"METRICS_PORT=" + strconv.Itoa(metrics),
			"USER_FUNCTION_HOST=127.0.0.1",
			"USER_FUNCTION_PORT=" + strconv.Itoa(fn),
			"NODE_NAME=" + svc + "-" + strconv.Itoa(i+1),
			"MAX_STREAMS=" + strconv.Itoa(proxyLimit),
			"MAX_ENTITIES=" + strconv.Itoa(proxyLimit),
			"LOG_LEVEL=" + s.logLevel,
		}
		if replicas > 1 {
			env = append(env,
				"CLUSTER_HOST=127.0.0.1",
				"CLUSTER_PORT="+strconv.Itoa(gossip),
				"CLUSTER_JOIN="+strings.Join(seeds, ","))
		}
		pxAddr := "127.0.0.1:" + strconv.Itoa(px)
		_, err = s.start(ctx, spec{
			name: svc + "-proxy" + suffix, role: svc + "-proxy", binary: "proxy", addr: pxAddr,
			env:        env,
			ready:      probe.HTTP(fmt.Sprintf("http://127.0.0.1:%d/readyz", metrics)),
			metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics),
		})
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, pxAddr)
	}
	return addrs, nil
}
