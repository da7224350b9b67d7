// Package benchrun measures the chat on one machine and writes the result
// as a markdown report. It starts the real binaries on free loopback ports,
// drives them with the load generator the way the browser app does, reads
// each process's memory and CPU time from /proc, and runs a bare connect-go
// server beside them as a baseline measured with the same clients.
//
// A run has five phases, each on processes of its own: Go micro-benchmarks
// with CPU profiles of the hot paths, the bare baseline, presence
// propagation across a cluster of presence replicas, friends throughput
// through the gateway, and online sessions stepped up until a step fails or
// the time runs out.
package benchrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cloudchat/cloudchat/internal/loadgen"
)

// Config configures a run. Zero values take the defaults of a full run;
// Quick defaults suit a one-minute smoke run.
type Config struct {
	// BinDir holds the presence, friends, proxy and gateway binaries (bin).
	BinDir string
	// RepoDir is the module's root, where go test and git run (".").
	RepoDir string
	// Self is the benchmark's own executable, run again to serve the bare
	// baseline (os.Executable).
	Self string
	// Quick picks small defaults for a smoke run.
	Quick bool
	// Deadline bounds the whole run (13m, quick 2m). Session steps that
	// would not finish in the time left are not run.
	Deadline time.Duration
	// Steps are the session counts to step through (1000, 5000, 10000,
	// 25000; quick 200, 1000).
	Steps []int
	// StepBudget bounds the time to open one step's new sessions (180s,
	// quick 20s).
	StepBudget time.Duration
	// Watches is the users each session watches (5).
	Watches int
	// Parallel is the sessions being opened at once (64).
	Parallel int
	// Transports is the HTTP/2 transports of the load generator (16).
	Transports int
	// Flips is the presence flips to measure (1000, quick 200).
	Flips int
	// PresenceReplicas is the size of the presence cluster for the
	// propagation phase (3).
	PresenceReplicas int
	// StackReplicas is the replicas per service behind the gateway in the
	// friends and sessions phases (1).
	StackReplicas int
	// Concurrency is the callers at once in the throughput phases (32).
	Concurrency int
	// LoadDuration is the length of each throughput measurement (10s,
	// quick 3s).
	LoadDuration time.Duration
	// BaselineStreams is the idle streams held on the bare server to
	// weigh one stream (10000, quick 1000).
	BaselineStreams int
	// Micro runs the Go micro-benchmarks and profiles (true unless Quick;
	// set SkipMicro to turn off).
	SkipMicro bool
	// BenchTime is go test's -benchtime for micro-benchmarks (100ms).
	BenchTime string
	// ProfileTime is the -benchtime of each profiled benchmark (3s).
	ProfileTime string
	// LogLevel is given to every child process (warn).
	LogLevel string
	// Progress receives a progress line once a second (os.Stderr).
	Progress io.Writer
	// Logger receives the run's own events; nil discards them.
	Logger *slog.Logger
	// Args is the command line, for the report.
	Args []string
}

func (c *Config) setDefaults() {
	pick := func(full, quick int) int {
		if c.Quick {
			return quick
		}
		return full
	}
	pickDur := func(full, quick time.Duration) time.Duration {
		if c.Quick {
			return quick
		}
		return full
	}
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	setStr := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	setStr(&c.BinDir, "bin")
	setStr(&c.RepoDir, ".")
	setDur(&c.Deadline, pickDur(13*time.Minute, 2*time.Minute))
	if len(c.Steps) == 0 {
		c.Steps = []int{1000, 5000, 10000, 25000}
		if c.Quick {
			c.Steps = []int{200, 1000}
		}
	}
	setDur(&c.StepBudget, pickDur(180*time.Second, 20*time.Second))
	setInt(&c.Watches, 5)
	setInt(&c.Parallel, 64)
	setInt(&c.Transports, 16)
	setInt(&c.Flips, pick(1000, 200))
	setInt(&c.PresenceReplicas, 3)
	setInt(&c.StackReplicas, 1)
	setInt(&c.Concurrency, 32)
	setDur(&c.LoadDuration, pickDur(10*time.Second, 3*time.Second))
	setInt(&c.BaselineStreams, pick(10000, 1000))
	setStr(&c.BenchTime, "100ms")
	setStr(&c.ProfileTime, "3s")
	setStr(&c.LogLevel, "warn")
	if c.Quick {
		c.SkipMicro = true
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	switch {
	case c.Deadline <= 0 || c.StepBudget <= 0 || c.LoadDuration <= 0:
		return errors.New("deadline, step budget and load duration must be positive")
	case c.Watches < 0 || c.Watches > 100:
		return fmt.Errorf("watches %d is not in 0..100", c.Watches)
	case c.Parallel < 1 || c.Transports < 1 || c.Concurrency < 1:
		return errors.New("parallel, transports and concurrency must be at least 1")
	case c.Flips < 2:
		return fmt.Errorf("flips %d: at least 2", c.Flips)
	case c.PresenceReplicas < 2 || c.PresenceReplicas > 9:
		return fmt.Errorf("presence replicas %d is not in 2..9", c.PresenceReplicas)
	case c.StackReplicas < 1 || c.StackReplicas > 9:
		return fmt.Errorf("stack replicas %d is not in 1..9", c.StackReplicas)
	case c.BaselineStreams < 1:
		return fmt.Errorf("baseline streams %d: at least 1", c.BaselineStreams)
	case c.Self == "":
		return errors.New("no executable to serve the baseline")
	}
	if !slices.IsSorted(c.Steps) || c.Steps[0] < 1 {
		return fmt.Errorf("steps %v: want positive counts in increasing order", c.Steps)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("log level %q: %w", c.LogLevel, err)
	}
	return nil
}

// runner holds the state of one run.
type runner struct {
	cfg    Config
	log    *slog.Logger
	start  time.Time
	logDir string
	// runID makes user names unique to this run.
	runID string
}

// Run measures the chat as cfg says and returns the report. Failures of
// one phase are recorded in the report and do not stop the others; Run
// fails only when it cannot start at all or ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logDir, err := os.MkdirTemp("", "benchrun-logs-")
	if err != nil {
		return nil, fmt.Errorf("make log dir: %w", err)
	}
	r := &runner{
		cfg:    cfg,
		log:    cfg.Logger,
		start:  time.Now(),
		logDir: logDir,
		runID:  fmt.Sprintf("%x", time.Now().UnixNano()%0xffffff),
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()

	rep := &Report{Started: r.start, Args: cfg.Args, Quick: cfg.Quick, LogDir: logDir}
	rep.Machine = r.machine(ctx)
	phases := []struct {
		name string
		run  func(context.Context)
	}{
		{"micro-benchmarks", func(ctx context.Context) { rep.Micro = r.micro(ctx) }},
		{"baseline", func(ctx context.Context) { rep.Baseline = r.baseline(ctx) }},
		{"presence propagation", func(ctx context.Context) { rep.Presence = r.presence(ctx) }},
		{"friends throughput", func(ctx context.Context) { rep.Friends = r.friends(ctx) }},
		{"online sessions", func(ctx context.Context) { rep.Sessions = r.sessions(ctx) }},
	}
	if cfg.SkipMicro {
		phases = phases[1:]
	}
	for _, p := range phases {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(cfg.Progress, "== %s (%s elapsed)\n", p.name, r.elapsed())
		t0 := time.Now()
		p.run(ctx)
		rep.Phases = append(rep.Phases, PhaseTime{Name: p.name, Took: time.Since(t0)})
	}
	rep.Machine.LoadEnd = loadAverage()
	rep.Elapsed = time.Since(r.start)
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return rep, err
	}
	return rep, nil
}

func (r *runner) elapsed() time.Duration {
	return time.Since(r.start).Round(time.Second)
}

// remaining returns the time left before the run's deadline.
func (r *runner) remaining() time.Duration {
	return r.cfg.Deadline - time.Since(r.start)
}

// newStack returns an empty stack whose logs go to the run's log folder.
func (r *runner) newStack(phase string) (*stack, error) {
	dir := filepath.Join(r.logDir, strings.ReplaceAll(phase, " ", "-"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make log dir: %w", err)
	}
	return &stack{binDir: r.cfg.BinDir, logDir: dir, logLevel: r.cfg.LogLevel}, nil
}

// progress writes line() to the progress writer once a second until the
// returned stop is called.
func (r *runner) progress(ctx context.Context, line func() string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		loadgen.Progress(ctx, r.cfg.Progress, time.Second, line)
	}()
	return func() { cancel(); <-done }
}

// WriteReport writes rep as dir/YYYY-MM-DD.md, from the day the run
// started, and copies it to dir/latest.md. It returns the dated path.
func WriteReport(dir string, rep *Report) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("make report dir: %w", err)
	}
	var b strings.Builder
	rep.Render(&b)
	path := filepath.Join(dir, rep.Started.Format(time.DateOnly)+".md")
	for _, p := range []string{path, filepath.Join(dir, "latest.md")} {
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			return "", fmt.Errorf("write report: %w", err)
		}
	}
	return path, nil
}
