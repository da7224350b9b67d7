package benchrun

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
	"github.com/cloudchat/cloudchat/internal/loadgen"
	"github.com/cloudchat/cloudchat/internal/probe"
)

// flipUsers is the number of users flipped in turn by a flip measurement.
const flipUsers = 10

// settleTime is how long a process is left alone before its memory is
// read, so that the allocations of a burst have landed.
const settleTime = 3 * time.Second

// steadyWindow is the window over which the CPU use of idle sessions is
// measured.
const steadyWindow = 5 * time.Second

// client returns a load generator client of url with the run's settings.
func (r *runner) client(url string, codec loadgen.Codec, transports int) (*loadgen.Client, error) {
	return loadgen.New(loadgen.Config{BaseURL: url, Transports: transports, Codec: codec})
}

// baseline measures the bare server with the clients of the other phases.
func (r *runner) baseline(ctx context.Context) (res BaselineResult) {
	st, err := r.newStack("baseline")
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer st.stop()
	ports, err := freePorts(1)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	srv, err := st.start(ctx, spec{
		name: "bare-server", role: "bare-server", binary: r.cfg.Self, addr: addr,
		args:  []string{"-serve-baseline", addr},
		ready: probe.HTTP("http://" + addr + "/healthz"),
	})
	if err != nil {
		res.Err = err.Error()
		return res
	}
	url := "http://" + addr
	client, err := r.client(url, loadgen.CodecJSON, r.cfg.Transports)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer client.Close()

	var errs []error
	res.Add, res.GetFriends, err = r.friendsLoad(ctx, st, client, nil)
	errs = append(errs, err)
	res.Hop, err = r.flips(ctx, []string{url})
	errs = append(errs, err)
	res.Streams, res.StreamBytes, err = r.holdStreams(ctx, srv, client)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		res.Err = err.Error()
	}
	return res
}

// friendsLoad measures Add and then GetFriends from Concurrency callers,
// each the owner of one friends list. tokens, when not nil, authorize
// each caller's Add.
func (r *runner) friendsLoad(
	ctx context.Context, st *stack, client *loadgen.Client, tokens []string,
) (add, get Throughput, err error) {
	users := r.loadUsers()
	addOp := func(ctx context.Context, w, call int) error {
		req := connect.NewRequest(&friendspb.Friend{User: users[w], Friend: "f" + strconv.Itoa(call%8)})
		if tokens != nil {
			loadgen.Authorize(req.Header(), tokens[w])
		}
		_, err := client.Friends().Add(ctx, req)
		return err
	}
	getOp := func(ctx context.Context, w, _ int) error {
		_, err := client.Friends().GetFriends(ctx,
			connect.NewRequest(&friendspb.User{User: users[w]}))
		return err
	}

	// A short warm-up makes every list and its entity exist, and every
	// connection open, before anything is timed.
	warm := loadgen.Load(ctx, r.cfg.Concurrency, time.Second, addOp)
	if warm.Calls == 0 && warm.FirstErr != nil {
		return add, get, fmt.Errorf("warm up: %w", warm.FirstErr)
	}
	add = r.throughput(ctx, st, "Add", addOp)
	get = r.throughput(ctx, st, "GetFriends", getOp)
	for _, t := range []Throughput{add, get} {
		if t.Result.Calls == 0 {
			return add, get, fmt.Errorf("%s: no call succeeded: %v", t.Name, t.Result.FirstErr)
		}
	}
	return add, get, nil
}

// loadUsers returns the name of each throughput caller's user.
func (r *runner) loadUsers() []string {
	users := make([]string, r.cfg.Concurrency)
	for i := range users {
		users[i] = fmt.Sprintf("load-%s-%d", r.runID, i)
	}
	return users
}

// throughput runs op in a closed loop and measures it and the CPU time of
// every process of st meanwhile.
func (r *runner) throughput(
	ctx context.Context, st *stack, name string, op func(context.Context, int, int) error,
) Throughput {
	var done atomic.Int64
	counted := func(ctx context.Context, w, call int) error {
		err := op(ctx, w, call)
		if err == nil {
			done.Add(1)
		}
		return err
	}
	t0 := time.Now()
	stop := r.progress(ctx, func() string {
		n := done.Load()
		return fmt.Sprintf("  %s: %d calls, %.0f/s", name, n, float64(n)/time.Since(t0).Seconds())
	})
	before := st.sample()
	res := loadgen.Load(ctx, r.cfg.Concurrency, r.cfg.LoadDuration, counted)
	after := st.sample()
	stop()
	return Throughput{
		Name:        name,
		Concurrency: r.cfg.Concurrency,
		Result:      res,
		CPU:         cpuUse(st, before, after),
	}
}

// cpuUse returns the CPU time each process of st spent between two
// samples, the driver last.
func cpuUse(st *stack, before, after map[string]procSample) []ProcCPU {
	var out []ProcCPU
	for _, name := range st.names() {
		b, okB := before[name]
		a, okA := after[name]
		if !okA || !okB {
			continue
		}
		out = append(out, ProcCPU{Name: name, CPU: ticks(a.CPUTicks - b.CPUTicks)})
	}
	return out
}

// ticks converts clock ticks to a duration.
func ticks(n int64) time.Duration {
	return time.Duration(n) * time.Second / clockTicks
}

// names returns the names of the stack's children, then the driver's.
func (s *stack) names() []string {
	var names []string
	for _, c := range s.children {
		names = append(names, c.Name)
	}
	return append(names, selfName)
}

// flips measures presence flips: user i is held online through urls[i%n]
// and monitored through urls[(i+1)%n], so that with several replicas every
// flip crosses from one to another.
func (r *runner) flips(ctx context.Context, urls []string) (FlipResult, error) {
	var clients []*loadgen.Client
	for _, u := range urls {
		c, err := r.client(u, loadgen.CodecGRPC, 1)
		if err != nil {
			return FlipResult{}, err
		}
		defer c.Close()
		clients = append(clients, c)
	}
	n := len(clients)
	users := make([]string, flipUsers)
	for i := range users {
		users[i] = fmt.Sprintf("flip-%s-%d", r.runID, i)
	}
	cfg := loadgen.FlipConfig{
		Users:   users,
		Connect: func(i int) presencepbconnect.PresenceClient { return clients[i%n].Presence() },
		Monitor: func(i int) presencepbconnect.PresenceClient { return clients[(i+1)%n].Presence() },
	}

	// Each user flips once untimed, with time for a cluster to form.
	warm := cfg
	warm.Flips, warm.Timeout = 2*len(users), 30*time.Second
	if _, err := loadgen.MeasureFlips(ctx, warm); err != nil {
		return FlipResult{}, fmt.Errorf("warm up flips: %w", err)
	}

	var done atomic.Int64
	cfg.Flips = r.cfg.Flips
	cfg.Done = func(k int) { done.Store(int64(k)) }
	stop := r.progress(ctx, func() string {
		return fmt.Sprintf("  flips: %d/%d", done.Load(), r.cfg.Flips)
	})
	f, err := loadgen.MeasureFlips(ctx, cfg)
	stop()
	all := append(slices.Clone(f.Online), f.Offline...)
	res := FlipResult{
		All:     loadgen.Summarize(all),
		Online:  loadgen.Summarize(f.Online),
		Offline: loadgen.Summarize(f.Offline),
	}
	if err != nil {
		return res, fmt.Errorf("flips: %w", err)
	}
	return res, nil
}

// holdStreams opens BaselineStreams idle Monitor streams on the bare
// server and returns how many it held and the server's memory per stream.
func (r *runner) holdStreams(
	ctx context.Context, srv *child, client *loadgen.Client,
) (int, float64, error) {
	if !sleep(ctx, settleTime) {
		return 0, 0, ctx.Err()
	}
	before, err := readProc(srv.Pid())
	if err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next    atomic.Int64
		held    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	stop := r.progress(ctx, func() string {
		return fmt.Sprintf("  bare streams: %d/%d", held.Load(), r.cfg.BaselineStreams)
	})
	for range r.cfg.Parallel {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= r.cfg.BaselineStreams || ctx.Err() != nil {
					return
				}
				stream, err := client.Presence().Monitor(ctx, connect.NewRequest(
					&presencepb.User{Name: fmt.Sprintf("idle-%d", i)}))
				if err == nil && !stream.Receive() {
					err = fmt.Errorf("monitor: no status: %v", stream.Err())
				}
				if err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
				held.Add(1)
				go func() {
					for stream.Receive() {
					}
					_ = stream.Close()
				}()
			}
		})
	}
	wg.Wait()
	stop()
	n := int(held.Load())
	if first != nil {
		return n, 0, fmt.Errorf("hold bare streams: %w", first)
	}
	if !sleep(ctx, settleTime) {
		return n, 0, ctx.Err()
	}
	after, err := readProc(srv.Pid())
	if err != nil {
		return n, 0, err
	}
	return n, float64(after.RSS-before.RSS) / float64(n), nil
}

// presence measures flips across a cluster of presence replicas.
func (r *runner) presence(ctx context.Context) (res PresenceResult) {
	res.Replicas = r.cfg.PresenceReplicas
	st, err := r.newStack("presence")
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer st.stop()
	c, err := st.startChat(ctx, chatStack{presence: r.cfg.PresenceReplicas})
	if err != nil {
		res.Err = err.Error()
		return res
	}
	var urls []string
	for _, a := range c.presenceProxies {
		urls = append(urls, "http://"+a)
	}
	res.Flips, err = r.flips(ctx, urls)
	if err != nil {
		res.Err = err.Error()
	}
	return res
}

// friends measures Add and GetFriends through the gateway.
func (r *runner) friends(ctx context.Context) (res FriendsResult) {
	res.Replicas = r.cfg.StackReplicas
	st, err := r.newStack("friends")
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer st.stop()
	c, err := st.startChat(ctx, chatStack{
		presence: r.cfg.StackReplicas, friends: r.cfg.StackReplicas, gateway: true,
	})
	if err != nil {
		res.Err = err.Error()
		return res
	}
	client, err := r.client(c.gatewayURL, loadgen.CodecJSON, r.cfg.Transports)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer client.Close()
	var tokens []string
	for _, u := range r.loadUsers() {
		tok, err := client.SignIn(ctx, u)
		if err != nil {
			res.Err = err.Error()
			return res
		}
		tokens = append(tokens, tok)
	}
	res.Add, res.GetFriends, err = r.friendsLoad(ctx, st, client, tokens)
	if err != nil {
		res.Err = err.Error()
	}
	return res
}

// sessions steps up the sessions held open through the gateway.
func (r *runner) sessions(ctx context.Context) (res SessionsResult) {
	res.Replicas = r.cfg.StackReplicas
	res.Watches = r.cfg.Watches
	res.Transports = r.cfg.Transports
	st, err := r.newStack("sessions")
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer st.stop()
	maxSessions := r.cfg.Steps[len(r.cfg.Steps)-1] + 100
	c, err := st.startChat(ctx, chatStack{
		presence: r.cfg.StackReplicas, friends: r.cfg.StackReplicas, gateway: true,
		maxSessions: maxSessions,
	})
	if err != nil {
		res.Err = err.Error()
		return res
	}
	for _, ch := range st.children {
		if ch.Role == "gateway" && len(ch.cmd.Args) > 1 {
			res.GatewayArgs = ch.cmd.Args[1:]
		}
	}
	if l, err := processFileLimit(st.children[len(st.children)-1].Pid()); err == nil {
		res.ChildFiles = l
	}
	client, err := r.client(c.gatewayURL, loadgen.CodecJSON, r.cfg.Transports)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer client.Close()
	fleet, err := loadgen.NewFleet(loadgen.FleetConfig{
		Client:   client,
		Prefix:   "s" + r.runID + "-",
		Watches:  r.cfg.Watches,
		Parallel: r.cfg.Parallel,
	})
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer fleet.Close()

	if !sleep(ctx, settleTime) {
		return res
	}
	idle := st.sample()
	idleGo := st.goStats(ctx)
	for _, name := range st.names() {
		res.Idle = append(res.Idle, ProcMem{Name: name, RSS: idle[name].RSS})
	}
	for _, target := range r.cfg.Steps {
		if left := r.remaining(); left < r.cfg.StepBudget+30*time.Second {
			res.Stopped = fmt.Sprintf("the %d step was not run: %v of the run's time left, "+
				"less than the step budget", target, left.Round(time.Second))
			break
		}
		step := r.step(ctx, st, fleet, target, idle, idleGo)
		res.Steps = append(res.Steps, step)
		if step.Err != "" {
			res.Stopped = fmt.Sprintf("the %d step failed: %s", target, step.Err)
			break
		}
	}
	res.Dials = client.Dials()
	return res
}

// step grows fleet to target sessions and measures every process.
func (r *runner) step(
	ctx context.Context, st *stack, fleet *loadgen.Fleet, target int,
	idle map[string]procSample, idleGo map[string]goStats,
) Step {
	step := Step{Target: target}
	start := fleet.Ready()
	t0 := time.Now()
	stop := r.progress(ctx, func() string {
		ready := fleet.Ready()
		rate := float64(ready-start) / time.Since(t0).Seconds()
		return fmt.Sprintf("  sessions: %d/%d ready, %d failed, %.0f/s, %s",
			ready, target, fleet.Failed(), rate, time.Since(t0).Round(time.Second))
	})
	before := st.sample()
	stepCtx, cancel := context.WithTimeout(ctx, r.cfg.StepBudget)
	err := fleet.Grow(stepCtx, target)
	timedOut := stepCtx.Err() != nil && ctx.Err() == nil
	cancel()
	after := st.sample()
	stop()
	step.Ramp = time.Since(t0)
	step.Ready, step.Failed = fleet.Ready(), fleet.Failed()
	switch {
	case err != nil && timedOut:
		step.Err = fmt.Sprintf("%d of %d sessions ready within the step budget of %v",
			step.Ready, target, r.cfg.StepBudget)
	case err != nil:
		step.Err = err.Error()
	}
	if dead := st.dead(); dead != nil {
		step.Err = joinErr(step.Err, dead.Error())
	}

	if !sleep(ctx, settleTime) {
		return step
	}
	mem := st.sample()
	if !sleep(ctx, steadyWindow) {
		return step
	}
	end := st.sample()
	gs := st.goStats(ctx)
	step.Lost = fleet.Lost()
	if step.Lost > 0 {
		step.Err = joinErr(step.Err, fmt.Sprintf("%d sessions lost their stream", step.Lost))
	}
	for _, name := range st.names() {
		m, ok := end[name]
		if !ok {
			continue
		}
		p := StepProc{
			Name:    name,
			RSS:     m.RSS,
			Delta:   m.RSS - idle[name].RSS,
			Threads: m.Threads,
			RampCPU: ticks(after[name].CPUTicks - before[name].CPUTicks),
			Steady:  float64(end[name].CPUTicks-mem[name].CPUTicks) / clockTicks / steadyWindow.Seconds(),
		}
		g, okG := gs[name]
		g0, okG0 := idleGo[name]
		if okG && okG0 {
			p.HasGo = true
			p.Goroutines, p.HeapInuse = g.Goroutines, g.HeapInuse
		}
		if step.Ready > 0 {
			p.PerSession = float64(p.Delta) / float64(step.Ready)
			if p.HasGo {
				p.GoroutinesPerSession = float64(g.Goroutines-g0.Goroutines) / float64(step.Ready)
				p.HeapPerSession = float64(g.HeapInuse-g0.HeapInuse) / float64(step.Ready)
			}
		}
		step.Procs = append(step.Procs, p)
	}
	return step
}

func joinErr(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// sleep waits for d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
