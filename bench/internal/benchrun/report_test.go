package benchrun

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudchat/cloudchat/internal/loadgen"
)

func msd(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

// sampleReport is a report with every phase filled in.
func sampleReport() *Report {
	flips := func(p50, p99 float64) loadgen.Summary {
		return loadgen.Summary{N: 500, P50: msd(p50), P90: msd(p50 * 1.5), P99: msd(p99),
			Max: msd(p99 * 2), Mean: msd(p50)}
	}
	load := func(calls int, p50 float64) loadgen.Result {
		return loadgen.Result{Calls: calls, Elapsed: 10 * time.Second,
			Latency: loadgen.Summary{N: calls, P50: msd(p50), P99: msd(p50 * 3), Max: msd(p50 * 5)}}
	}
	return &Report{
		Started: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC),
		Elapsed: 9 * time.Minute,
		Args:    []string{"benchrun"},
		Machine: Machine{Cores: 2, CPUModel: "Test CPU", MemTotal: 8 << 30, GoVersion: "go1.26.8",
			Commit: "abc123", FilesBefore: fileLimits{1024, 20000}, FilesAfter: fileLimits{20000, 20000}},
		Phases: []PhaseTime{{"baseline", 30 * time.Second}},
		Baseline: BaselineResult{
			GetFriends: Throughput{Name: "GetFriends", Concurrency: 32, Result: load(80000, 3),
				CPU: []ProcCPU{{"bare-server", 8 * time.Second}, {selfName, 6 * time.Second}}},
			Add:     Throughput{Name: "Add", Concurrency: 32, Result: load(70000, 3.5)},
			Hop:     FlipResult{All: flips(0.4, 1), Online: flips(0.4, 1), Offline: flips(0.4, 1)},
			Streams: 10000, StreamBytes: 12 * 1024,
		},
		Presence: PresenceResult{Replicas: 3,
			Flips: FlipResult{All: flips(2, 4), Online: flips(2.2, 4.2), Offline: flips(1.8, 3.8)}},
		Friends: FriendsResult{Replicas: 1,
			GetFriends: Throughput{Name: "GetFriends", Concurrency: 32, Result: load(20000, 15),
				CPU: []ProcCPU{{"gateway", 7 * time.Second}, {"friends-proxy", 6 * time.Second},
					{"friends", 3 * time.Second}, {selfName, 4 * time.Second}}},
			Add: Throughput{Name: "Add", Concurrency: 32, Result: load(22000, 13)},
		},
		Sessions: SessionsResult{Replicas: 1, Watches: 5, Transports: 16, Dials: 64,
			Idle: []ProcMem{{"gateway", 12 << 20}},
			Steps: []Step{
				{Target: 1000, Ready: 1000, Ramp: 7 * time.Second, Procs: []StepProc{
					{Name: "gateway", RSS: 100 << 20, Delta: 90 << 20, PerSession: 90 * 1024,
						RampCPU: 3 * time.Second},
					{Name: "presence-proxy", RSS: 50 << 20, Delta: 40 << 20, PerSession: 40 * 1024,
						HasGo: true, GoroutinesPerSession: 4.5, HeapPerSession: 30 * 1024},
					{Name: selfName, PerSession: 30 * 1024},
				}},
				{Target: 25000, Ready: 10000, Failed: 1, Ramp: 70 * time.Second,
					Err: "open session: resource_exhausted: too many sessions open on this gateway",
					Procs: []StepProc{{Name: "gateway", RSS: 900 << 20, Delta: 888 << 20,
						PerSession: 18 * 1024, RampCPU: 54 * time.Second}}},
			},
			Stopped: "the 25000 step failed: open session: resource_exhausted: " +
				"too many sessions open on this gateway",
		},
		Micro: MicroResult{Ran: true, BenchTime: "100ms",
			Rows: []BenchRow{{Pkg: "github.com/cloudchat/cloudchat/cloudstate/crdt",
				Name: "BenchmarkMerge/vote", NsPerOp: 105, BytesPerOp: 16, AllocsPerOp: 1}},
			Profiles: []Profile{{Pkg: "./bench/internal/hotpath",
				Bench: "BenchmarkGetFriendsThroughGateway",
				Layers: []Share{{"system calls and sockets", 35},
					{"Go runtime (scheduler, GC, allocation)", 25}, {"compression (gzip)", 12},
					{"HTTP/2 and HTTP", 10}, {"chat: gateway", 3}},
				Top: []ProfileFunc{{Name: "internal/runtime/syscall.Syscall6", FlatPct: 30}}},
				{Pkg: "./bench/internal/hotpath", Bench: "BenchmarkHoldSessions", BenchTime: "3000x",
					Top: []ProfileFunc{{Name: "net/http.(*http2writeQueue).empty", FlatPct: 18.4,
						CumPct: 19.2}}}},
			Heap: HeapProfile{Sessions: 500, Total: "Showing nodes accounting for 600MB",
				Top: []ProfileFunc{{Name: "net/http.(*http2clientStream).writeRequestBody",
					Flat: "500MB", FlatPct: 83.3}}},
		},
	}
}

func render(rep *Report) string {
	var b strings.Builder
	rep.Render(&b)
	return b.String()
}

func TestRenderFullReport(t *testing.T) {
	t.Parallel()
	out := render(sampleReport())
	for _, want := range []string{
		"# Benchmark report 2026-03-04\n",
		"| cores | 2 (Test CPU) |",
		"| open-file limit of the driver | soft 1024, hard 20000; raised to soft 20000 |",
		"| cross-node presence flip p99 (3 replicas) | ≤ 5.00 ms | 4.00 ms | 1.00 ms (one hop) " +
			"| ×4.0 | met |",
		"| sessions held by one gateway process | ≥ 19000 | 10000 | | | missed |",
		"| gateway memory per session (at 10000) | ≤ 20.0 KiB | 18.0 KiB | 12.0 KiB per idle " +
			"stream | ×1.5 | met |",
		"| GetFriends through gateway, proxy and function | ≥ 40% of bare echo | 2000/s " +
			"| 8000/s | 25% | missed |",
		"| GetFriends | 2000 | 15.00 ms | 45.00 ms | 75.00 ms | 0 | 8000 | 3.00 ms | 9.00 ms " +
			"| 25% | ×5.0 / ×5.0 |",
		"| gateway | 350 µs | – |",
		"| all | 500 | 2.00 ms | 3.00 ms | 4.00 ms | 8.00 ms | 2.00 ms | ×5.0 / ×4.0 |",
		"| 25000 | 10000 | 1 | 0 | 1m10s | 129 |",
		"failed: open session: resource_exhausted: too many sessions open on this gateway",
		"| presence-proxy | 50.0 | 40.0 | 40.0 KiB | 30.0 KiB | 4.5 |",
		"That is the gateway's configured session bound, not the machine",
		"The CPU to open one more session grew between 1000 and 10000 sessions " +
			"(gateway from 3000 µs to 6000 µs)",
		"every GetFriends crosses two HTTP/2 hops",
		"In a CPU profile of opening and holding 3000 sessions in one process, " +
			"`net/http.(*http2writeQueue).empty` takes the most time itself (18% flat, 19%",
		"### BenchmarkHoldSessions (./bench/internal/hotpath, -benchtime 3000x)",
		"Each call costs 1000 µs of CPU in all (gateway 350 µs, friends-proxy 300 µs, " +
			"loadgen 200 µs, friends 150 µs)",
		"The gateway spends the most",
		"the chat's own packages take 3%, the runtime, system calls and HTTP/2 together 70%",
		"Compression alone takes 12% although every message",
		"| `net/http.(*http2clientStream).writeRequestBody` | 500MB | 83.3 | 1024.0 KiB |",
		"`net/http.(*http2clientStream).writeRequestBody` holds 83% of the heap in use, " +
			"1024.0 KiB per session.",
		"| cloudstate/crdt | BenchmarkMerge/vote | 105 | 16 | 1 |  |",
		"| `internal/runtime/syscall.Syscall6` | 30.0 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(out, "%!") {
		t.Errorf("report has a formatting error:\n%s", out)
	}
}

func TestRenderEmptyReport(t *testing.T) {
	t.Parallel()
	rep := &Report{Quick: true, Started: time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)}
	rep.Presence.Err = "wait for presence-proxy-1: exited"
	out := render(rep)
	for _, want := range []string{
		"(quick smoke run",
		"| cross-node presence flip p99 (0 replicas) | ≤ 5.00 ms | 0.00 ms | 0.00 ms (one hop) " +
			"| – | not measured |",
		"| gateway memory per session | ≤ 20.0 KiB | not measured |",
		"Presence propagation was not measured: wait for presence-proxy-1: exited",
		"**Failed:** wait for presence-proxy-1: exited",
		"Online sessions were not measured",
		"Not run (quick mode",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(out, "%!") {
		t.Errorf("report has a formatting error:\n%s", out)
	}
}

func TestWriteReport(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "reports")
	rep := sampleReport()
	path, err := WriteReport(dir, rep)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "2026-03-04.md"); path != want {
		t.Errorf("path %q, want %q", path, want)
	}
	dated, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	latest, err := os.ReadFile(filepath.Join(dir, "latest.md"))
	if err != nil {
		t.Fatal(err)
	}
	if string(dated) != string(latest) || string(dated) != render(rep) {
		t.Error("dated report, latest.md and the rendering differ")
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	valid := func() Config {
		c := Config{Self: "/bin/true"}
		c.setDefaults()
		return c
	}
	if c := valid(); c.validate() != nil {
		t.Fatalf("defaults invalid: %v", c.validate())
	}
	quick := Config{Quick: true, Self: "x"}
	quick.setDefaults()
	if !quick.SkipMicro || quick.Steps[len(quick.Steps)-1] != 1000 || quick.Deadline != 2*time.Minute {
		t.Errorf("quick defaults %+v", quick)
	}
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"steps out of order", func(c *Config) { c.Steps = []int{5, 1} }},
		{"zero step", func(c *Config) { c.Steps = []int{0, 1} }},
		{"one presence replica", func(c *Config) { c.PresenceReplicas = 1 }},
		{"too many watches", func(c *Config) { c.Watches = 101 }},
		{"one flip", func(c *Config) { c.Flips = 1 }},
		{"bad log level", func(c *Config) { c.LogLevel = "loud" }},
		{"no executable", func(c *Config) { c.Self = "" }},
		{"negative deadline", func(c *Config) { c.Deadline = -time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.mod(&c)
			if err := c.validate(); err == nil {
				t.Error("validate succeeded, want an error")
			}
		})
	}
}

func TestFreePortsAreDistinct(t *testing.T) {
	t.Parallel()
	ports, err := freePorts(8)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Errorf("ports %v: want distinct positive ports", ports)
		}
		seen[p] = true
	}
}

func TestJoinErrAndFirstLine(t *testing.T) {
	t.Parallel()
	if got := joinErr("", "b"); got != "b" {
		t.Errorf("joinErr = %q", got)
	}
	if got := joinErr("a", "b"); got != "a; b" {
		t.Errorf("joinErr = %q", got)
	}
	if got := firstLine(errors.New("one\ntwo").Error()); got != "one" {
		t.Errorf("firstLine = %q", got)
	}
}
