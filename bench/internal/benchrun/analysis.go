package benchrun

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// renderAnalysis writes "What the numbers say": the run's own figures put
// into sentences, with the bottleneck each phase points at.
func (rep *Report) renderAnalysis(p *printer) {
	p.f("## What the numbers say\n\n")
	p.f("Generated from this run's figures.\n\n")
	for _, s := range []string{
		rep.presenceFinding(), rep.friendsFinding(), rep.sessionsFinding(), rep.profileFinding(),
	} {
		if s != "" {
			p.f("- %s\n", s)
		}
	}
	p.f("\n")
}

func (rep *Report) presenceFinding() string {
	fl, hop := rep.Presence.Flips, rep.Baseline.Hop
	if fl.All.N == 0 {
		return "Presence propagation was not measured: " + firstLine(rep.Presence.Err)
	}
	s := fmt.Sprintf("**Presence.** A flip crosses from one replica to another in p50 %s, "+
		"p99 %s (target p99 ≤ %s: %s), %s / %s the bare one-hop relay. ",
		ms(fl.All.P50), ms(fl.All.P99), ms(targetFlipP99),
		verdict(true, fl.All.P99 <= targetFlipP99), times(fl.All.P50, hop.All.P50),
		times(fl.All.P99, hop.All.P99))
	s += fmt.Sprintf("Going online takes p50 %s, going offline p50 %s. ",
		ms(fl.Online.P50), ms(fl.Offline.P50))
	s += "A flip passes proxy A, function A (which changes its vote), proxy A again " +
		"(which sends the delta to every member), proxy B, function B (which " +
		"answers the Monitor) and proxy B once more: about six process hops where " +
		"the bare relay has two, so a ratio near the hop count means each hop costs " +
		"about what a bare connect-go hop costs, and more than that points at waits " +
		"inside a hop (queues, batching, timers)."
	return s
}

func (rep *Report) friendsFinding() string {
	f, b := rep.Friends.GetFriends, rep.Baseline.GetFriends
	if f.Result.Calls == 0 {
		return "Friends throughput was not measured: " + firstLine(rep.Friends.Err)
	}
	s := fmt.Sprintf("**Friends.** GetFriends through gateway, proxy and function runs "+
		"at %.0f calls/s", f.Result.Rate())
	if b.Result.Rate() > 0 {
		s += fmt.Sprintf(", %.0f%% of the bare echo's %.0f/s (target ≥ %.0f%%)",
			100*f.Result.Rate()/b.Result.Rate(), b.Result.Rate(), 100*targetGetFriendsShare)
	}
	s += ". "
	total := f.totalCPU()
	if total > 0 && f.Result.Calls > 0 {
		cpus := slices.Clone(f.CPU)
		slices.SortFunc(cpus, func(a, b ProcCPU) int { return int(b.CPU - a.CPU) })
		var parts []string
		for _, c := range cpus {
			parts = append(parts, fmt.Sprintf("%s %s", c.Name, us(c.CPU/time.Duration(f.Result.Calls))))
		}
		perCall := total / time.Duration(f.Result.Calls)
		used := total.Seconds() / f.Result.Elapsed.Seconds()
		s += fmt.Sprintf("Each call costs %s of CPU in all (%s); the machine's %d cores "+
			"were %.0f%% busy with it, so they allow at most about %.0f calls/s on this path. ",
			us(perCall), strings.Join(parts, ", "), rep.Machine.Cores,
			100*used/float64(max(rep.Machine.Cores, 1)),
			float64(rep.Machine.Cores)/perCall.Seconds())
		s += fmt.Sprintf("The %s spends the most: it is where a gain counts most.",
			cpus[0].Name)
		if bt := b.totalCPU(); bt > 0 && b.Result.Calls > 0 {
			s += fmt.Sprintf(" The bare echo costs %s per call in all.",
				us(bt/time.Duration(b.Result.Calls)))
		}
	}
	return s
}

func (rep *Report) sessionsFinding() string {
	s := rep.Sessions
	last := s.lastGood()
	if last == nil {
		return "Online sessions were not measured: " + firstLine(joinErr(s.Err, s.Stopped))
	}
	out := fmt.Sprintf("**Sessions.** The stack held %d sessions, each watching %d users",
		last.Ready, s.Watches)
	if g := last.proc("gateway"); g != nil {
		out += fmt.Sprintf("; the gateway grew by %s per session (target ≤ %s: %s; a "+
			"bare connect-go server stream costs %s), the whole stack by %s",
			kib(g.PerSession), kib(targetBytesPerSession),
			verdict(true, g.PerSession <= targetBytesPerSession),
			kib(rep.Baseline.StreamBytes), kib(last.stackPerSession()))
	}
	out += ". "
	var heaviest *StepProc
	for i := range last.Procs {
		pr := &last.Procs[i]
		if pr.Name != selfName && (heaviest == nil || pr.PerSession > heaviest.PerSession) {
			heaviest = pr
		}
	}
	if heaviest != nil {
		out += fmt.Sprintf("The %s holds the most memory per session (%s). ",
			heaviest.Name, kib(heaviest.PerSession))
	}
	for _, pr := range last.Procs {
		if pr.HasGo && pr.Name != selfName {
			out += fmt.Sprintf("The %s runs %.1f goroutines and %s of heap in use per "+
				"session. ", pr.Name, pr.GoroutinesPerSession, kib(pr.HeapPerSession))
		}
	}
	if opened := last.Ready - prevReady(s.Steps, *last); opened > 0 {
		var all, gw time.Duration
		for _, pr := range last.Procs {
			all += pr.RampCPU
			if pr.Name == "gateway" {
				gw = pr.RampCPU
			}
		}
		perSession := all / time.Duration(opened)
		if perSession > 0 {
			out += fmt.Sprintf("Opening a session costs %s of CPU across every process "+
				"(the gateway %s), so %d cores open at most about %.0f sessions/s; the "+
				"run opened %.0f/s. ", us(perSession), us(gw/time.Duration(opened)),
				rep.Machine.Cores, float64(rep.Machine.Cores)/perSession.Seconds(),
				float64(opened)/last.Ramp.Seconds())
		}
	}
	if h := rep.Micro.Heap; len(h.Top) > 0 && h.Sessions > 0 {
		if b, ok := parseBytes(h.Top[0].Flat); ok {
			out += fmt.Sprintf("In a heap profile of %d sessions held in one process, "+
				"`%s` holds %.0f%% of the heap in use, %s per session. ", h.Sessions,
				shortPkg(h.Top[0].Name), h.Top[0].FlatPct, kib(b/float64(h.Sessions)))
		}
	}
	out += growingCosts(s.Steps)
	for _, pr := range rep.Micro.Profiles {
		if pr.Bench == "BenchmarkHoldSessions" && len(pr.Top) > 0 {
			f := pr.Top[0]
			out += fmt.Sprintf("In a CPU profile of opening and holding %s sessions in one "+
				"process, `%s` takes the most time itself (%.0f%% flat, %.0f%% with what it "+
				"calls). ", strings.TrimSuffix(pr.BenchTime, "x"), shortPkg(f.Name),
				f.FlatPct, f.CumPct)
		}
	}
	if s.Stopped != "" {
		out += "Where it stops: " + s.Stopped + "."
	} else {
		out += "Every step held; the machine was not pushed to its limit."
	}
	if strings.Contains(s.Stopped, "too many sessions") {
		out += " That is the gateway's configured session bound, not the machine: " +
			"the gateway binary offers no flag to raise it."
	}
	return out
}

func (rep *Report) profileFinding() string {
	var prof *Profile
	for i := range rep.Micro.Profiles {
		if rep.Micro.Profiles[i].Bench == "BenchmarkGetFriendsThroughGateway" &&
			len(rep.Micro.Profiles[i].Layers) > 0 {
			prof = &rep.Micro.Profiles[i]
		}
	}
	if prof == nil {
		return ""
	}
	var top []string
	var chat, plumbing, gzip float64
	for i, l := range prof.Layers {
		if i < 4 {
			top = append(top, fmt.Sprintf("%s %.0f%%", l.Name, l.Pct))
		}
		switch {
		case strings.HasPrefix(l.Name, "chat: "):
			chat += l.Pct
		case l.Name == "Go runtime (scheduler, GC, allocation)",
			l.Name == "system calls and sockets", l.Name == "HTTP/2 and HTTP":
			plumbing += l.Pct
		case l.Name == "compression (gzip)":
			gzip = l.Pct
		}
	}
	s := fmt.Sprintf("**Where the time goes.** In the CPU profile of one GetFriends "+
		"path in one process, the largest layers are %s; the chat's own packages "+
		"take %.0f%%, the runtime, system calls and HTTP/2 together %.0f%%. ",
		strings.Join(top, ", "), chat, plumbing)
	if gzip >= 3 {
		s += fmt.Sprintf("Compression alone takes %.0f%% although every message is a few "+
			"dozen bytes: connect-go gzips every message whenever the peer accepts gzip "+
			"(its minimum size defaults to 0), on each hop, and mostly pays for resetting "+
			"a compressor. connect.WithCompressMinBytes (say 1 KiB) on the handlers and "+
			"clients of the gateway, the proxy and the function SDK would remove it. ", gzip)
	}
	if chat < 20 {
		s += "The cost is in moving each call between processes, not in the chat's " +
			"logic: every GetFriends crosses two HTTP/2 hops and one Crdt.handle " +
			"stream, each with its own syscalls, frames and goroutine wake-ups. What " +
			"would move it: fewer hops per call (let the gateway answer reads from " +
			"state it already follows, or put the proxy in the gateway's process), " +
			"fewer wake-ups per hop (batch writes on the handle stream), and fewer " +
			"allocations per message; faster chat code would barely show."
	} else {
		s += "A large share sits in the chat's own code, so profiling its top " +
			"functions (below) is where to start."
	}
	return s
}

func firstLine(s string) string {
	if s == "" {
		return "no reason recorded"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// growingCosts names the processes whose CPU per new session grew at least
// twofold from the first step to the last that opened sessions: a cost
// that grows with the sessions already open.
func growingCosts(steps []Step) string {
	perNew := func(st Step, name string) (time.Duration, bool) {
		opened := st.Ready - prevReady(steps, st)
		pr := st.proc(name)
		if opened <= 0 || pr == nil || pr.RampCPU <= 0 {
			return 0, false
		}
		return pr.RampCPU / time.Duration(opened), true
	}
	var first, last *Step
	for i := range steps {
		if steps[i].Ready-prevReady(steps, steps[i]) > 0 {
			if first == nil {
				first = &steps[i]
			}
			last = &steps[i]
		}
	}
	if first == nil || last == first {
		return ""
	}
	var grew []string
	for _, pr := range last.Procs {
		a, okA := perNew(*first, pr.Name)
		b, okB := perNew(*last, pr.Name)
		if okA && okB && b >= 2*a {
			grew = append(grew, fmt.Sprintf("%s from %s to %s", pr.Name, us(a), us(b)))
		}
	}
	if len(grew) == 0 {
		return ""
	}
	return fmt.Sprintf("The CPU to open one more session grew between %d and %d sessions "+
		"(%s): a cost that grows with the sessions already open. ",
		first.Ready, last.Ready, strings.Join(grew, ", "))
}
