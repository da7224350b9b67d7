// Package devstack runs the whole chat on one machine: a user function and a
// proxy per service replica, and the gateway, each a child process whose
// output is prefixed with its name.
package devstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudchat/cloudchat/internal/probe"
)

// Config describes the stack to run.
type Config struct {
	// BinDir holds the presence, friends, proxy and gateway binaries.
	BinDir string
	// Replicas is the number of function and proxy pairs per service.
	Replicas int
	// GatewayPort is the gateway's HTTP port.
	GatewayPort int
	// Output receives every process's prefixed output.
	Output io.Writer
	// Logger reports the stack's own events.
	Logger *slog.Logger
}

// Process is one child process of the stack.
type Process struct {
	// Name prefixes the process's output, such as "presence-proxy-1".
	Name string
	// Binary is the program's file name in Config.BinDir.
	Binary string
	// Env is added to the stack's own environment.
	Env []string
	// ReadyURL answers 200 once the process serves; empty when there is none.
	ReadyURL string
}

// servicePorts are each service's function, proxy, metrics and gossip
// ports. Replica i (from 0) adds 10*i, so nine replicas of both services never
// collide.
var servicePorts = map[string][4]int{
	"friends":  {8081, 9001, 9091, 7941},
	"presence": {8082, 9002, 9092, 7942},
}

// Plan returns the processes of the stack in start order.
func Plan(cfg Config) ([]Process, error) {
	if cfg.Replicas < 1 || cfg.Replicas > 9 {
		return nil, fmt.Errorf("replicas must be between 1 and 9, got %d", cfg.Replicas)
	}
	if cfg.GatewayPort < 1 || cfg.GatewayPort > 65535 {
		return nil, fmt.Errorf("gateway port out of range: %d", cfg.GatewayPort)
	}
	var procs []Process
	upstreams := map[string][]string{}
	for _, svc := range []string{"friends", "presence"} {
		ports := servicePorts[svc]
		// Every proxy lists every replica's gossip address as a seed, as a
		// Kubernetes headless service would.
		var seeds []string
		for i := range cfg.Replicas {
			seeds = append(seeds, "127.0.0.1:"+strconv.Itoa(ports[3]+10*i))
		}
		for i := range cfg.Replicas {
			fn, px, metrics := ports[0]+10*i, ports[1]+10*i, ports[2]+10*i
			suffix := ""
			if cfg.Replicas > 1 {
				suffix = "-" + strconv.Itoa(i+1)
			}
			procs = append(procs, Process{
				Name:   svc + suffix,
				Binary: svc,
				Env:    []string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(fn)},
			}, Process{
				Name:   svc + "-proxy" + suffix,
				Binary: "proxy",
				Env: append([]string{
					"HTTP_HOST=127.0.0.1",
					"HTTP_PORT=" + strconv.Itoa(px),
					"METRICS_PORT=" + strconv.Itoa(metrics),
					"USER_FUNCTION_HOST=127.0.0.1",
					"USER_FUNCTION_PORT=" + strconv.Itoa(fn),
					"NODE_NAME=" + svc + "-" + strconv.Itoa(i+1),
				}, clusterEnv(cfg.Replicas, ports[3]+10*i, seeds)...),
				ReadyURL: fmt.Sprintf("http://127.0.0.1:%d/readyz", metrics),
			})
			upstreams[svc] = append(upstreams[svc], "127.0.0.1:"+strconv.Itoa(px))
		}
	}
	procs = append(procs, Process{
		Name:   "gateway",
		Binary: "gateway",
		Env: []string{
			"PORT=" + strconv.Itoa(cfg.GatewayPort),
			"PRESENCE=" + strings.Join(upstreams["presence"], ","),
			"FRIENDS=" + strings.Join(upstreams["friends"], ","),
		},
		ReadyURL: fmt.Sprintf("http://127.0.0.1:%d/", cfg.GatewayPort),
	})
	return procs, nil
}

// clusterEnv returns the cluster settings of one proxy: none for a single
// replica, otherwise its gossip port and every replica as a seed.
func clusterEnv(replicas, port int, seeds []string) []string {
	if replicas == 1 {
		return nil
	}
	return []string{
		"CLUSTER_HOST=127.0.0.1",
		"CLUSTER_PORT=" + strconv.Itoa(port),
		"CLUSTER_JOIN=" + strings.Join(seeds, ","),
	}
}

// Run starts every process of the plan, waits for each to be ready before
// starting the next, and runs until ctx is done or a process exits. It then
// stops every process, first with SIGTERM and after a grace period with
// SIGKILL.
func Run(ctx context.Context, cfg Config) error {
	procs, err := Plan(cfg)
	if err != nil {
		return err
	}
	for _, p := range procs {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, p.Binary)); err != nil {
			return fmt.Errorf("find binary: %w (build with ./task build)", err)
		}
	}
	var (
		running []*child
		exited  = make(chan string, len(procs))
		out     = &lockedWriter{w: cfg.Output}
	)
	// Stop in reverse start order, each process before the one it depends
	// on: the gateway before the proxies, a proxy before its function.
	defer func() {
		for i := len(running) - 1; i >= 0; i-- {
			running[i].stop(10 * time.Second)
		}
	}()

	width := 0
	for _, p := range procs {
		width = max(width, len(p.Name))
	}
	for _, p := range procs {
		cmd := exec.Command(filepath.Join(cfg.BinDir, p.Binary))
		cmd.Env = append(os.Environ(), p.Env...)
		if os.Getenv("LOG_FORMAT") == "" {
			cmd.Env = append(cmd.Env, "LOG_FORMAT=text")
		}
		prefix := fmt.Sprintf("%-*s | ", width, p.Name)
		stdout, stderr := prefixer(out, prefix), prefixer(out, prefix)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		// Children get their own process group: Ctrl-C in a terminal reaches
		// only the stack, which stops them in order.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", p.Name, err)
		}
		c := &child{cmd: cmd, done: make(chan struct{})}
		running = append(running, c)
		go func() {
			err := cmd.Wait()
			stdout.Close()
			stderr.Close()
			cfg.Logger.Info("process exited", "process", p.Name, "err", err)
			close(c.done)
			exited <- p.Name
		}()
		if p.ReadyURL != "" {
			if err := waitReady(ctx, p.ReadyURL, exited); err != nil {
				return fmt.Errorf("wait for %s: %w", p.Name, err)
			}
		}
	}
	cfg.Logger.Info("stack ready", "url", fmt.Sprintf("http://localhost:%d", cfg.GatewayPort))
	select {
	case <-ctx.Done():
		cfg.Logger.Info("stopping stack")
		return nil
	case name := <-exited:
		return fmt.Errorf("%s exited", name)
	}
}

// child is a running process of the stack.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// stop asks the process to stop and kills it after grace.
func (c *child) stop(grace time.Duration) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// waitReady polls url until it answers 200, ctx is done or a process exits.
func waitReady(ctx context.Context, url string, exited <-chan string) error {
	ready := probe.HTTP(url)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		// Errors are expected while the process starts: keep polling.
		if ready(ctx) == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case name := <-exited:
			return fmt.Errorf("%s exited", name)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("not ready after 60s")
}

// lockedWriter serialises whole lines from several processes.
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) writeLine(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(b)
}

// prefixer returns a writer that copies each line to out behind prefix.
func prefixer(out *lockedWriter, prefix string) io.WriteCloser {
	r, w := io.Pipe()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			out.writeLine([]byte(prefix + sc.Text() + "\n"))
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	return w
}
