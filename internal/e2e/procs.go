// Package e2e tests the chat as it runs in production: every proxy and user
// function is its own process, built from cmd/, serving on loopback ports,
// and the proxies of a service replicate over real memberlist.
//
// Its non-test files hold what the tests share: building the binaries,
// running processes (start, graceful stop, kill, restart on the same
// ports) and wiring the replicas of a service.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudchat/cloudchat/internal/probe"
)

// DefaultReadyTimeout bounds how long a process may take to serve.
const DefaultReadyTimeout = 20 * time.Second

// DefaultStopTimeout bounds how long a graceful stop may take before the
// process is killed.
const DefaultStopTimeout = 20 * time.Second

// outputLimit is how much of a process's output is kept for the test log.
const outputLimit = 512 << 10

// errorTail is how much of a process's output an error quotes.
const errorTail = 4 << 10

// Binaries is the directory the programs under test were built into.
type Binaries string

// Path returns the path of the program name, such as "proxy".
func (b Binaries) Path(name string) string { return filepath.Join(string(b), name) }

// Build compiles cmd/proxy, cmd/presence and cmd/friends of the module that
// holds the working directory into dir. They are built without the race
// detector: the processes under test stay fast, the tests' own code is
// checked.
func Build(dir string) (Binaries, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", dir, "./cmd/proxy", "./cmd/presence", "./cmd/friends")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build binaries: %w\n%s", err, out)
	}
	return Binaries(dir), nil
}

// moduleRoot returns the directory of the main module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("find module root: not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// Spec describes a program to run.
type Spec struct {
	// Name names the process in errors and in the test log.
	Name string
	// Path is the program's file.
	Path string
	// Env is added to the test's environment; it wins over it.
	Env []string
	// Ready tells when the process serves; nil counts it ready once started.
	Ready Probe
	// ReadyTimeout bounds the wait for Ready; default DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

// Probe reports nil once a process serves.
type Probe = probe.Func

// Process is a program under test that can be stopped, killed and started
// again with the same spec, so on the same ports. Its methods may be called
// from any goroutine, but Start, Stop and Kill not concurrently with each
// other.
type Process struct {
	spec Spec
	out  *tailBuffer

	// mu guards cur, the current run; nil while not running.
	mu  sync.Mutex
	cur *run
}

// run is one run of the program.
type run struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // how it exited; read after done is closed
}

// NewProcess returns a process for spec that has not started.
func NewProcess(spec Spec) *Process {
	if spec.ReadyTimeout <= 0 {
		spec.ReadyTimeout = DefaultReadyTimeout
	}
	return &Process{spec: spec, out: &tailBuffer{max: outputLimit}}
}

// Name returns the name of the process.
func (p *Process) Name() string { return p.spec.Name }

// Output returns what the process wrote to stdout and stderr across all its
// runs, trimmed to the most recent part, with a line marking each start and
// exit.
func (p *Process) Output() string { return p.out.String() }

// Running reports whether the process has been started and not exited.
func (p *Process) Running() bool {
	p.mu.Lock()
	r := p.cur
	p.mu.Unlock()
	if r == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// Start starts the program in its own process group and waits until its
// probe answers. A process that exits or does not become ready in time is
// killed and Start returns an error quoting its last output.
func (p *Process) Start() error {
	p.mu.Lock()
	if p.cur != nil {
		p.mu.Unlock()
		return fmt.Errorf("start %s: already started", p.spec.Name)
	}
	fmt.Fprintf(p.out, "--- start %s ---\n", p.spec.Name)
	from := p.out.Written()
	cmd := exec.Command(p.spec.Path)
	cmd.Env = append(os.Environ(), p.spec.Env...)
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("start %s: %w", p.spec.Name, err)
	}
	r := &run{cmd: cmd, done: make(chan struct{})}
	p.cur = r
	p.mu.Unlock()
	go func() {
		r.err = cmd.Wait()
		fmt.Fprintf(p.out, "--- %s exited: %v ---\n", p.spec.Name, exitText(r.err))
		close(r.done)
	}()

	if err := p.waitReady(r); err != nil {
		p.Kill()
		return fmt.Errorf("start %s: %w; output:\n%s", p.spec.Name, err, tail(p.out.Since(from)))
	}
	return nil
}

// waitReady polls the probe until it answers, the process exits or the
// ready timeout passes.
func (p *Process) waitReady(r *run) error {
	if p.spec.Ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.spec.ReadyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		probeCtx, stop := context.WithTimeout(ctx, time.Second)
		last = p.spec.Ready(probeCtx)
		stop()
		if last == nil {
			return nil
		}
		select {
		case <-r.done:
			return fmt.Errorf("exited before it was ready: %v", exitText(r.err))
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v: %w", p.spec.ReadyTimeout, last)
		case <-tick.C:
		}
	}
}

// Stop sends SIGTERM to the process group and waits for the process to
// exit; after timeout it kills the group and returns an error. It returns
// an error too when the process exits with a failure status. Stopping a
// process that is not running does nothing.
func (p *Process) Stop(timeout time.Duration) error {
	r := p.take()
	if r == nil {
		return nil
	}
	signalGroup(r, syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
		signalGroup(r, syscall.SIGKILL)
		<-r.done
		return fmt.Errorf("stop %s: still running %v after SIGTERM, killed", p.spec.Name, timeout)
	}
	if r.err != nil {
		return fmt.Errorf("stop %s: %w", p.spec.Name, r.err)
	}
	return nil
}

// Kill sends SIGKILL to the process group, as a crash would, and waits for
// the process to exit. Killing a process that is not running does nothing.
func (p *Process) Kill() {
	r := p.take()
	if r == nil {
		return
	}
	signalGroup(r, syscall.SIGKILL)
	<-r.done
}

// take detaches the current run.
func (p *Process) take() *run {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.cur
	p.cur = nil
	return r
}

// signalGroup signals the process group of r unless its leader has exited.
func signalGroup(r *run, sig syscall.Signal) {
	select {
	case <-r.done:
		return
	default:
	}
	// The group's ID is the leader's process ID (Setpgid).
	_ = syscall.Kill(-r.cmd.Process.Pid, sig)
}

// exitText describes how a process exited.
func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// tail returns the end of s, at most errorTail bytes.
func tail(s string) string {
	if len(s) > errorTail {
		return "…" + s[len(s)-errorTail:]
	}
	return s
}

// Start starts the processes of specs at once, so that clustered peers find
// each other while they start, and waits until every one is ready. Each is
// killed when the test ends, and its output goes to the test log if the
// test failed. Start fails the test when any process does not start.
func Start(t testing.TB, specs ...Spec) []*Process {
	t.Helper()
	procs := make([]*Process, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		p := NewProcess(s)
		procs[i] = p
		t.Cleanup(func() {
			p.Kill()
			if t.Failed() {
				t.Logf("output of %s:\n%s", p.Name(), p.Output())
			}
		})
		wg.Go(func() {
			began := time.Now()
			if errs[i] = p.Start(); errs[i] == nil {
				t.Logf("%s ready in %v", p.Name(), time.Since(began).Round(time.Millisecond))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return procs
}

// tailBuffer keeps the last max bytes written to it. It is safe for
// concurrent use.
type tailBuffer struct {
	max int

	// mu guards buf and written.
	mu      sync.Mutex
	buf     []byte
	written int64 // bytes ever written
}

// Write appends b, dropping the oldest bytes beyond the limit.
func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.written += int64(len(b))
	return len(b), nil
}

// Written returns how many bytes were ever written.
func (t *tailBuffer) Written() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.written
}

// Since returns what is still kept of the bytes written after the first n.
func (t *tailBuffer) Since(n int64) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	start := max(int64(len(t.buf))-(t.written-n), 0)
	return string(t.buf[start:])
}

// String returns everything kept.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
