// Command benchrun measures the chat on this machine and writes a markdown
// report to bench/reports/YYYY-MM-DD.md and bench/reports/latest.md; see
// package benchrun. It starts the binaries found in -bin (build them first
// with go build -o bin/ ./cmd/...) and must run from the module's root.
//
// With -quick it makes a one-minute smoke run with small sizes and writes
// its report to a temporary folder instead, unless -out is given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudchat/cloudchat/bench/internal/benchrun"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cfg   benchrun.Config
		steps string
		out   string
		micro bool
		serve string
	)
	flag.StringVar(&cfg.BinDir, "bin", "bin",
		"folder of the presence, friends, proxy and gateway binaries")
	flag.StringVar(&cfg.RepoDir, "repo", ".", "the module's root, where go test and git run")
	flag.StringVar(&out, "out", "",
		"folder to write the report to (bench/reports; quick: a temporary folder)")
	flag.BoolVar(&cfg.Quick, "quick", false, "a one-minute smoke run with small sizes")
	flag.DurationVar(&cfg.Deadline, "deadline", 0, "bound on the whole run (13m; quick 2m)")
	flag.StringVar(&steps, "steps", "", "comma-separated session counts to step through "+
		"(1000,5000,10000,25000; quick 200,1000)")
	flag.DurationVar(&cfg.StepBudget, "step-budget", 0,
		"time allowed to open one step's sessions (180s; quick 20s)")
	flag.IntVar(&cfg.Watches, "watches", 0, "users each session watches (5)")
	flag.IntVar(&cfg.Parallel, "parallel", 0, "sessions opened at once (64)")
	flag.IntVar(&cfg.Transports, "transports", 0, "HTTP/2 transports of the load generator (16)")
	flag.IntVar(&cfg.Flips, "flips", 0, "presence flips to measure (1000; quick 200)")
	flag.IntVar(&cfg.PresenceReplicas, "presence-replicas", 0,
		"presence replicas in the propagation phase (3)")
	flag.IntVar(&cfg.StackReplicas, "replicas", 0,
		"replicas per service behind the gateway in the friends and sessions phases (1)")
	flag.IntVar(&cfg.Concurrency, "concurrency", 0, "callers at once in throughput phases (32)")
	flag.DurationVar(&cfg.LoadDuration, "duration", 0,
		"length of each throughput measurement (10s; quick 3s)")
	flag.IntVar(&cfg.BaselineStreams, "baseline-streams", 0,
		"idle streams held on the bare server (10000; quick 1000)")
	flag.BoolVar(&micro, "micro", true,
		"run the Go micro-benchmarks and CPU profiles (never in quick)")
	flag.StringVar(&cfg.BenchTime, "benchtime", "", "go test -benchtime of micro-benchmarks (100ms)")
	flag.StringVar(&cfg.ProfileTime, "profiletime", "",
		"go test -benchtime of each profiled benchmark (3s)")
	flag.StringVar(&cfg.LogLevel, "log-level", "", "log level of every child process (warn)")
	flag.StringVar(&serve, "serve-baseline", "", "serve the bare baseline server on this address "+
		"and nothing else (used by the run itself)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if serve != "" {
		return benchrun.ServeBaseline(ctx, serve)
	}

	if steps != "" {
		for s := range strings.SplitSeq(steps, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				return fmt.Errorf("steps: %q is not a positive count", s)
			}
			cfg.Steps = append(cfg.Steps, n)
		}
	}
	cfg.SkipMicro = !micro
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	cfg.Self = self
	cfg.Args = append([]string{"benchrun"}, os.Args[1:]...)
	cfg.Progress = os.Stderr
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	if out == "" {
		out = filepath.Join("bench", "reports")
		if cfg.Quick {
			out = filepath.Join(os.TempDir(), "benchrun-quick")
		}
	}

	rep, err := benchrun.Run(ctx, cfg)
	if rep == nil {
		return err
	}
	path, werr := benchrun.WriteReport(out, rep)
	if werr != nil {
		return errors.Join(err, werr)
	}
	fmt.Fprintf(os.Stderr, "report written to %s in %s (child logs in %s)\n",
		path, rep.Elapsed.Round(time.Second), rep.LogDir)
	return err
}
