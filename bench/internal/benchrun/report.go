package benchrun

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cloudchat/cloudchat/internal/loadgen"
)

// Report is everything one run measured.
type Report struct {
	Started time.Time
	Elapsed time.Duration
	Args    []string
	Quick   bool
	// LogDir holds every child's output.
	LogDir string
	// Phases are the phases run, with their times.
	Phases   []PhaseTime
	Machine  Machine
	Micro    MicroResult
	Baseline BaselineResult
	Presence PresenceResult
	Friends  FriendsResult
	Sessions SessionsResult
}

// PhaseTime is how long a phase took, its processes' start and stop
// included.
type PhaseTime struct {
	Name string
	Took time.Duration
}

// Throughput is one closed-loop measurement.
type Throughput struct {
	Name        string
	Concurrency int
	Result      loadgen.Result
	// CPU is the CPU time of each process during the measurement.
	CPU []ProcCPU
}

// perCall returns the CPU time of process name per successful call, or -1
// when unknown.
func (t Throughput) perCall(name string) time.Duration {
	for _, c := range t.CPU {
		if c.Name == name && t.Result.Calls > 0 {
			return c.CPU / time.Duration(t.Result.Calls)
		}
	}
	return -1
}

// totalCPU returns the CPU time of every process together.
func (t Throughput) totalCPU() time.Duration {
	var sum time.Duration
	for _, c := range t.CPU {
		sum += c.CPU
	}
	return sum
}

// ProcCPU is the CPU time a process spent.
type ProcCPU struct {
	Name string
	CPU  time.Duration
}

// FlipResult summarizes presence flips.
type FlipResult struct {
	All, Online, Offline loadgen.Summary
}

// BaselineResult is the bare server measured with the same clients.
type BaselineResult struct {
	Err             string
	Add, GetFriends Throughput
	// Hop is a Connect relayed to a Monitor within one process.
	Hop FlipResult
	// Streams idle Monitor streams cost the server StreamBytes each.
	Streams     int
	StreamBytes float64
}

// PresenceResult is the propagation of flips across presence replicas.
type PresenceResult struct {
	Err      string
	Replicas int
	Flips    FlipResult
}

// FriendsResult is the throughput of friends calls through the gateway.
type FriendsResult struct {
	Err             string
	Replicas        int
	Add, GetFriends Throughput
}

// SessionsResult is the online-sessions phase.
type SessionsResult struct {
	Err                           string
	Replicas, Watches, Transports int
	// Dials is the connections the load generator opened.
	Dials int64
	// GatewayArgs are the flags the gateway was started with.
	GatewayArgs []string
	// ChildFiles is the gateway's open-file limit.
	ChildFiles fileLimits
	// Idle is each process's memory before any session.
	Idle  []ProcMem
	Steps []Step
	// Stopped says why stepping ended before the last step, if it did.
	Stopped string
}

// ProcMem is a process's resident memory.
type ProcMem struct {
	Name string
	RSS  int64
}

// Step is one step of online sessions.
type Step struct {
	Target, Ready, Failed, Lost int
	// Ramp is the time to open the step's new sessions.
	Ramp time.Duration
	Err  string
	// Procs are each process's figures at the end of the step.
	Procs []StepProc
}

// StepProc is one process at the end of a step.
type StepProc struct {
	Name string
	// RSS is the resident memory and Delta its growth over idle.
	RSS, Delta int64
	Threads    int
	// PerSession is Delta per open session, in bytes.
	PerSession float64
	// RampCPU is the CPU time spent opening the step's sessions.
	RampCPU time.Duration
	// Steady is the CPU used while the sessions sit idle, in cores.
	Steady float64
	// HasGo is set when the process reported Go runtime figures: its
	// goroutines and heap in use, and their growth per session.
	HasGo                bool
	Goroutines           int64
	HeapInuse            int64
	GoroutinesPerSession float64
	HeapPerSession       float64
}

// proc returns the figures of process name, or nil.
func (s Step) proc(name string) *StepProc {
	for i := range s.Procs {
		if s.Procs[i].Name == name {
			return &s.Procs[i]
		}
	}
	return nil
}

// Targets the report compares against; none is asserted.
const (
	targetFlipP99          = 5 * time.Millisecond
	targetSessions         = 19000
	targetBytesPerSession  = 20 * 1024
	targetGetFriendsShare  = 0.40
	centrifugoBytesPerConn = 48 * 1024
)

// Render writes the report as markdown.
func (rep *Report) Render(w io.Writer) {
	p := &printer{w: w}
	kind := ""
	if rep.Quick {
		kind = " (quick smoke run: small sizes, not for comparison)"
	}
	p.f("# Benchmark report %s%s\n\n", rep.Started.Format(time.DateOnly), kind)
	p.f("Written by `bench/cmd/benchrun` (`task bench`) on %s, in %s. ",
		rep.Started.UTC().Format("2006-01-02 15:04 MST"), rep.Elapsed.Round(time.Second))
	p.f("Command line: `%s`.\n\n", strings.Join(rep.Args, " "))
	p.f("Every process ran on this one machine on loopback, the load generator " +
		"included, so they share its cores. Times are milliseconds, memory KiB " +
		"(1024 bytes) unless marked, and every ratio compares with the bare " +
		"connect-go server measured in the same run with the same clients.\n\n")
	rep.renderMachine(p)
	rep.renderTargets(p)
	rep.renderAnalysis(p)
	rep.renderBaseline(p)
	rep.renderPresence(p)
	rep.renderFriends(p)
	rep.renderSessions(p)
	rep.renderMicro(p)
}

// printer writes formatted text; it keeps the first write error's place
// by ignoring later writes, as the report is written to a buffer or file.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) f(format string, args ...any) {
	if p.err != nil {
		return
	}
	_, p.err = fmt.Fprintf(p.w, format, args...)
}

func (rep *Report) renderMachine(p *printer) {
	m := rep.Machine
	p.f("## Machine\n\n| | |\n|---|---|\n")
	p.f("| cores | %d (%s) |\n", m.Cores, m.CPUModel)
	p.f("| memory | %.1f GiB |\n", float64(m.MemTotal)/(1<<30))
	p.f("| kernel | %s |\n", m.Kernel)
	p.f("| Go | %s |\n", m.GoVersion)
	dirty := ""
	if m.Dirty {
		dirty = " (with uncommitted changes)"
	}
	p.f("| git commit | `%s`%s |\n", m.Commit, dirty)
	p.f("| load average (1, 5, 15 min) | start %s, end %s |\n", m.LoadStart, m.LoadEnd)
	p.f("| open-file limit of the driver | soft %s, hard %s; raised to soft %s |\n",
		limit(m.FilesBefore.Soft), limit(m.FilesBefore.Hard), limit(m.FilesAfter.Soft))
	if rep.Sessions.ChildFiles.Hard != 0 {
		p.f("| open-file limit of the gateway | soft %s, hard %s |\n",
			limit(rep.Sessions.ChildFiles.Soft), limit(rep.Sessions.ChildFiles.Hard))
	}
	if m.FilesErr != "" {
		p.f("| open-file limit error | %s |\n", m.FilesErr)
	}
	if len(rep.Phases) > 0 {
		var parts []string
		for _, ph := range rep.Phases {
			parts = append(parts, fmt.Sprintf("%s %s", ph.Name, ph.Took.Round(time.Second)))
		}
		p.f("| phase times | %s |\n", strings.Join(parts, ", "))
	}
	p.f("\n")
}

func limit(n uint64) string {
	if n == ^uint64(0) {
		return "unlimited"
	}
	return fmt.Sprint(n)
}

// verdict says whether ok held, or n/a when not measured.
func verdict(measured, ok bool) string {
	switch {
	case !measured:
		return "not measured"
	case ok:
		return "met"
	}
	return "missed"
}

func (rep *Report) renderTargets(p *printer) {
	p.f("## Against the targets\n\nNone of these is asserted; they are what the design aims at.\n\n")
	p.f("| measure | target | measured | bare baseline | ratio | |\n|---|---|---|---|---|---|\n")

	fl, hop := rep.Presence.Flips.All, rep.Baseline.Hop.All
	p.f("| cross-node presence flip p99 (%d replicas) | ≤ %s | %s | %s (one hop) | %s | %s |\n",
		rep.Presence.Replicas, ms(targetFlipP99), ms(fl.P99), ms(hop.P99),
		times(fl.P99, hop.P99), verdict(fl.N > 0, fl.P99 <= targetFlipP99))

	held, gw := rep.Sessions.maxHeld()
	p.f("| sessions held by one gateway process | ≥ %d | %d | | | %s |\n",
		targetSessions, held, verdict(len(rep.Sessions.Steps) > 0, held >= targetSessions))
	if gw != nil {
		p.f("| gateway memory per session (at %d) | ≤ %s | %s | %s per idle stream | %s | %s |\n",
			held, kib(targetBytesPerSession), kib(gw.PerSession),
			kib(rep.Baseline.StreamBytes), ratio(gw.PerSession, rep.Baseline.StreamBytes),
			verdict(true, gw.PerSession <= targetBytesPerSession))
	} else {
		p.f("| gateway memory per session | ≤ %s | not measured | | | |\n",
			kib(targetBytesPerSession))
	}

	gf, bare := rep.Friends.GetFriends.Result, rep.Baseline.GetFriends.Result
	share := 0.0
	if bare.Rate() > 0 {
		share = gf.Rate() / bare.Rate()
	}
	p.f("| GetFriends through gateway, proxy and function | ≥ %.0f%% of bare echo | %.0f/s "+
		"| %.0f/s | %.0f%% | %s |\n", targetGetFriendsShare*100, gf.Rate(), bare.Rate(),
		share*100, verdict(gf.Calls > 0 && bare.Calls > 0, share >= targetGetFriendsShare))
	p.f("\nFor comparison: the original Cloudstate took 100–900 ms for a cross-node flip; " +
		"Centrifugo on this kind of machine shows p50 ≈ 0.7 ms, p99 ≈ 2–4 ms and " +
		"≈ 48 KiB per connection with 6 subscriptions")
	if gw != nil {
		var stackBytes float64
		if s := rep.Sessions.lastGood(); s != nil {
			stackBytes = s.stackPerSession()
		}
		p.f(" (here: %s in the gateway, %s across every process of the stack, "+
			"per session with %d watches)", kib(gw.PerSession), kib(stackBytes),
			rep.Sessions.Watches)
	}
	p.f(".\n\n")
}

// maxHeld returns the most sessions a step held with every session ready,
// and the gateway's figures at that step.
func (s SessionsResult) maxHeld() (int, *StepProc) {
	st := s.lastGood()
	if st == nil {
		return 0, nil
	}
	return st.Ready, st.proc("gateway")
}

// lastGood returns the last step that held sessions, or nil.
func (s SessionsResult) lastGood() *Step {
	var best *Step
	for i := range s.Steps {
		if s.Steps[i].Ready > 0 && len(s.Steps[i].Procs) > 0 {
			best = &s.Steps[i]
		}
	}
	return best
}

// stackPerSession returns the memory growth of every chat process together,
// per session, leaving out the load generator.
func (s Step) stackPerSession() float64 {
	var sum float64
	for _, p := range s.Procs {
		if p.Name != selfName {
			sum += p.PerSession
		}
	}
	return sum
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func kib(b float64) string {
	return fmt.Sprintf("%.1f KiB", b/1024)
}

func mib(b int64) string {
	return fmt.Sprintf("%.1f", float64(b)/(1<<20))
}

// times returns how many times b a is, as "×3.2".
func times(a, b time.Duration) string {
	if a <= 0 || b <= 0 {
		return "–"
	}
	return fmt.Sprintf("×%.1f", float64(a)/float64(b))
}

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "–"
	}
	return fmt.Sprintf("×%.1f", a/b)
}

func us(d time.Duration) string {
	if d < 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func errLine(p *printer, err string) {
	if err != "" {
		p.f("**Failed:** %s\n\n", strings.ReplaceAll(strings.TrimSpace(err), "\n", " / "))
	}
}

func (rep *Report) renderBaseline(p *printer) {
	b := rep.Baseline
	p.f("## Baseline: a bare connect-go server\n\n")
	p.f("One process serving the same Friends and Presence contracts from memory: " +
		"GetFriends echoes a list from a map, Add stores into it, and a Connect " +
		"is relayed to the user's Monitor streams in one hop. The clients are " +
		"those of the other phases: Connect with JSON for friends calls and idle " +
		"streams, as the browser app sends, and gRPC for presence flips, as the " +
		"gateway sends its upstreams, all over cleartext HTTP/2.\n\n")
	errLine(p, b.Err)
	p.f("| measure | value |\n|---|---|\n")
	for _, t := range []Throughput{b.GetFriends, b.Add} {
		p.f("| %s at concurrency %d | %.0f/s, p50 %s, p99 %s |\n", t.Name, t.Concurrency,
			t.Result.Rate(), ms(t.Result.Latency.P50), ms(t.Result.Latency.P99))
	}
	p.f("| one-hop flip, %d flips | p50 %s, p99 %s, max %s |\n", b.Hop.All.N,
		ms(b.Hop.All.P50), ms(b.Hop.All.P99), ms(b.Hop.All.Max))
	p.f("| server memory per idle stream, %d streams | %s |\n\n", b.Streams, kib(b.StreamBytes))
}

func flipRow(p *printer, name string, s, base loadgen.Summary) {
	p.f("| %s | %d | %s | %s | %s | %s | %s | %s / %s |\n", name, s.N, ms(s.P50), ms(s.P90),
		ms(s.P99), ms(s.Max), ms(s.Mean), times(s.P50, base.P50), times(s.P99, base.P99))
}

func (rep *Report) renderPresence(p *printer) {
	pr, hop := rep.Presence, rep.Baseline.Hop
	p.f("## Presence propagation\n\n")
	p.f("%d presence replicas (a function and a proxy each), their proxies clustered. "+
		"For each flip a gRPC client opens (or cancels) a user's Presence.Connect on "+
		"replica A, straight at its proxy, and the time runs until a Monitor of that "+
		"user held open on replica B hears the new status. Ten users take turns, each "+
		"with its own A and B, so that every pair of replicas is crossed; flips run one "+
		"at a time, after one untimed flip per user.\n\n", pr.Replicas)
	errLine(p, pr.Err)
	p.f("| flips | n | p50 | p90 | p99 | max | mean | ratio to one bare hop (p50 / p99) |\n")
	p.f("|---|---|---|---|---|---|---|---|\n")
	flipRow(p, "online", pr.Flips.Online, hop.Online)
	flipRow(p, "offline", pr.Flips.Offline, hop.Offline)
	flipRow(p, "all", pr.Flips.All, hop.All)
	flipRow(p, "bare one hop, all", hop.All, hop.All)
	p.f("\n")
}

func (rep *Report) renderFriends(p *printer) {
	f, b := rep.Friends, rep.Baseline
	p.f("## Friends throughput\n\n")
	p.f("Calls to the original Friends service at the gateway (Connect with JSON), "+
		"relayed to the friends proxy (gRPC) and from it to the function (one "+
		"Crdt.handle stream per list), %d replica(s) per service. %d callers, each "+
		"on its own list, call back to back; Add cycles through 8 friends so that "+
		"lists stay small, and GetFriends runs after it.\n\n", f.Replicas, f.Add.Concurrency)
	errLine(p, f.Err)
	p.f("| call | calls/s | p50 | p99 | max | errors | bare calls/s | bare p50 | bare p99 " +
		"| share of bare rate | latency ratio (p50 / p99) |\n")
	p.f("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, pair := range [][2]Throughput{{f.GetFriends, b.GetFriends}, {f.Add, b.Add}} {
		t, base := pair[0].Result, pair[1].Result
		share := "–"
		if base.Rate() > 0 {
			share = fmt.Sprintf("%.0f%%", 100*t.Rate()/base.Rate())
		}
		p.f("| %s | %.0f | %s | %s | %s | %d | %.0f | %s | %s | %s | %s / %s |\n",
			pair[0].Name, t.Rate(), ms(t.Latency.P50), ms(t.Latency.P99), ms(t.Latency.Max),
			t.Errors, base.Rate(), ms(base.Latency.P50), ms(base.Latency.P99), share,
			times(t.Latency.P50, base.Latency.P50), times(t.Latency.P99, base.Latency.P99))
	}
	if fe := f.GetFriends.Result.FirstErr; fe != nil {
		p.f("\nFirst GetFriends error: %v\n", fe)
	}
	if fe := f.Add.Result.FirstErr; fe != nil {
		p.f("\nFirst Add error: %v\n", fe)
	}

	p.f("\nCPU time per successful call, by process (from /proc/<pid>/stat):\n\n")
	p.f("| process | GetFriends | Add |\n|---|---|---|\n")
	for _, c := range f.GetFriends.CPU {
		p.f("| %s | %s | %s |\n", c.Name, us(f.GetFriends.perCall(c.Name)),
			us(f.Add.perCall(c.Name)))
	}
	for _, t := range []Throughput{b.GetFriends, b.Add} {
		for _, c := range t.CPU {
			p.f("| %s (baseline %s) | %s | |\n", c.Name, t.Name, us(t.perCall(c.Name)))
		}
	}
	p.f("\n")
}

func (rep *Report) renderSessions(p *printer) {
	s := rep.Sessions
	p.f("## Online sessions\n\n")
	p.f("Each session signs in, opens its OpenSession stream, watches %d other users "+
		"(each Watch saves a friend through the friends proxy) and counts as ready once "+
		"its stream has told the status of every watched user. Sessions are opened %s "+
		"at a time over %d HTTP/2 transports (the load generator dialed %d connections "+
		"in all), %d replica(s) per service. Steps add sessions to those already open. "+
		"Memory is VmRSS from /proc/<pid>/status, measured %v after the step and "+
		"compared with the same process before any session; idle CPU is over the %v "+
		"after that. RSS includes the garbage a Go heap carries between collections "+
		"(up to as much again as the live heap, with GOGC=100); heap in use and "+
		"goroutines come from the Go collector on the proxies' metrics port and "+
		"from the driver's own runtime, as the gateway and the functions expose "+
		"neither.\n\n", s.Watches, "up to 64", s.Transports, s.Dials, s.Replicas,
		settleTime, steadyWindow)
	if len(s.GatewayArgs) > 0 {
		p.f("The gateway ran with `%s`.\n\n", strings.Join(s.GatewayArgs, " "))
	} else {
		p.f("The gateway has no setting for its session limit, so it ran with its " +
			"built-in bound (gateway.Config.MaxSessions, 10,000 by default).\n\n")
	}
	errLine(p, s.Err)
	if len(s.Idle) > 0 {
		p.f("Idle memory before any session (MiB): ")
		for i, m := range s.Idle {
			if i > 0 {
				p.f(", ")
			}
			p.f("%s %s", m.Name, mib(m.RSS))
		}
		p.f(".\n\n")
	}
	p.f("| step | ready | failed | lost | time to open | sessions/s | stack memory per session " +
		"| gateway per session | outcome |\n|---|---|---|---|---|---|---|---|---|\n")
	prev := 0
	for _, st := range s.Steps {
		rate := 0.0
		if st.Ramp > 0 {
			rate = float64(st.Ready-prev) / st.Ramp.Seconds()
		}
		gw := "–"
		if g := st.proc("gateway"); g != nil {
			gw = kib(g.PerSession)
		}
		outcome := "held"
		if st.Err != "" {
			outcome = "failed: " + strings.ReplaceAll(st.Err, "|", "/")
		}
		p.f("| %d | %d | %d | %d | %s | %.0f | %s | %s | %s |\n", st.Target, st.Ready,
			st.Failed, st.Lost, st.Ramp.Round(100*time.Millisecond), rate,
			kib(st.stackPerSession()), gw, outcome)
		prev = st.Ready
	}
	if s.Stopped != "" {
		p.f("\nStepping stopped: %s\n", s.Stopped)
	} else if len(s.Steps) > 0 {
		p.f("\nEvery step held.\n")
	}
	for _, st := range s.Steps {
		newSessions := st.Ready - prevReady(s.Steps, st)
		if len(st.Procs) == 0 || newSessions <= 0 {
			continue
		}
		p.f("\nAt %d ready sessions:\n\n", st.Ready)
		p.f("| process | RSS MiB | RSS growth MiB | RSS per session | heap in use per session " +
			"| goroutines per session | threads | CPU to open the step | CPU per new session " +
			"| idle CPU |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, pr := range st.Procs {
			perNew := "–"
			if newSessions > 0 {
				perNew = us(pr.RampCPU / time.Duration(newSessions))
			}
			heap, gor := "–", "–"
			if pr.HasGo {
				heap, gor = kib(pr.HeapPerSession), fmt.Sprintf("%.1f", pr.GoroutinesPerSession)
			}
			p.f("| %s | %s | %s | %s | %s | %s | %d | %.1f s | %s | %.0f%% of a core |\n",
				pr.Name, mib(pr.RSS), mib(pr.Delta), kib(pr.PerSession), heap, gor, pr.Threads,
				pr.RampCPU.Seconds(), perNew, pr.Steady*100)
		}
	}
	p.f("\n")
}

// prevReady returns the sessions ready before step st.
func prevReady(steps []Step, st Step) int {
	prev := 0
	for _, s := range steps {
		if s.Target == st.Target {
			return prev
		}
		prev = s.Ready
	}
	return prev
}

func (rep *Report) renderMicro(p *printer) {
	m := rep.Micro
	p.f("## Micro-benchmarks\n\n")
	if !m.Ran {
		p.f("Not run (quick mode or -micro=false).\n\n")
		return
	}
	p.f("`go test -run '^$' -bench . -benchmem -benchtime %s %s`. They cover CRDT "+
		"merge (Merge), delta generation (Delta), replica encoding (Marshal, "+
		"Unmarshal), entity key extraction (EntityID) and dynamic message decode and "+
		"encode (DynamicBinaryDecodeEncode, DynamicJSONDecodeEncode).\n\n",
		m.BenchTime, strings.Join(microPackages, " "))
	errLine(p, m.Err)
	p.f("| package | benchmark | ns/op | B/op | allocs/op | other |\n|---|---|---|---|---|---|\n")
	for _, r := range m.Rows {
		p.f("| %s | %s | %.0f | %s | %s | %s |\n", shortPkg(r.Pkg), r.Name, r.NsPerOp,
			optInt(r.BytesPerOp), optInt(r.AllocsPerOp), strings.Join(r.Extra, ", "))
	}
	p.f("\n## CPU profiles of the hot paths\n\n")
	p.f("Neither the proxy nor the gateway serves pprof, so the hot paths are profiled " +
		"as benchmarks: `go test -bench <name> -cpuprofile`, read with " +
		"`go tool pprof -top`. The hotpath benchmarks run a client, the gateway, the " +
		"proxies and the functions in one process over loopback, so one profile shows " +
		"every layer of a call. Layers sum the flat time of the functions in them.\n\n")
	for _, pr := range m.Profiles {
		p.f("### %s (%s, -benchtime %s)\n\n", pr.Bench, shortPkg(pr.Pkg), pr.BenchTime)
		errLine(p, pr.Err)
		if pr.Row != nil {
			p.f("%.0f ns/op, %s B/op, %s allocs/op. ", pr.Row.NsPerOp,
				optInt(pr.Row.BytesPerOp), optInt(pr.Row.AllocsPerOp))
		}
		if pr.Total != "" {
			p.f("%s.", pr.Total)
		}
		p.f("\n\n| layer | flat %% |\n|---|---|\n")
		for _, l := range pr.Layers[:min(len(pr.Layers), 10)] {
			p.f("| %s | %.1f |\n", l.Name, l.Pct)
		}
		p.f("\n| function | flat %% | cum %% |\n|---|---|---|\n")
		for _, f := range pr.Top {
			p.f("| `%s` | %.1f | %.1f |\n", shortPkg(f.Name), f.FlatPct, f.CumPct)
		}
		p.f("\n")
	}
	rep.renderHeap(p)
}

func (rep *Report) renderHeap(p *printer) {
	h := rep.Micro.Heap
	p.f("### Heap of %d held sessions (BenchmarkHoldSessions, bench/internal/hotpath)\n\n",
		h.Sessions)
	p.f("The whole chat in one process, client included, holding %d sessions that each "+
		"watch 5 users; heap in use at the end by allocation site (`go test -memprofile "+
		"-memprofilerate 4096`, `go tool pprof -sample_index=inuse_space -top`). Unlike "+
		"RSS, this counts memory allocated but never touched.\n\n", h.Sessions)
	errLine(p, h.Err)
	if h.Total != "" {
		p.f("%s.\n\n", h.Total)
	}
	if len(h.Top) == 0 {
		return
	}
	p.f("| allocation site | in use | %% of heap | per session |\n|---|---|---|---|\n")
	for _, f := range h.Top {
		per := "–"
		if b, ok := parseBytes(f.Flat); ok && h.Sessions > 0 {
			per = kib(b / float64(h.Sessions))
		}
		p.f("| `%s` | %s | %.1f | %s |\n", shortPkg(f.Name), f.Flat, f.FlatPct, per)
	}
	p.f("\n")
}

func shortPkg(s string) string {
	return strings.ReplaceAll(s, "github.com/cloudchat/cloudchat/", "")
}

func optInt(n int64) string {
	if n < 0 {
		return "–"
	}
	return fmt.Sprint(n)
}
