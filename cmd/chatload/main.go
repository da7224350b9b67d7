// Command chatload puts load on a running chat, speaking to the gateway as
// the browser app does (Connect with JSON over cleartext HTTP/2); see
// package loadgen. It prints a progress line to stderr once a second and a
// summary to stdout at the end.
//
// Modes:
//
//	sessions  sign users in, open their sessions, watch -watches users each,
//	          and hold them open for -hold
//	friends   call Friends.Add and then Friends.GetFriends at the gateway
//	          from -concurrency callers for -duration each
//	flips     flip users online and offline straight at presence proxies
//	          (-presence, two or more) and time each flip from one replica
//	          to the next
//
// For example, against `task up`:
//
//	chatload -mode sessions -url http://127.0.0.1:3000 -sessions 2000 -hold 1m
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
	"github.com/cloudchat/cloudchat/internal/loadgen"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chatload:", err)
		os.Exit(1)
	}
}

type options struct {
	mode        string
	url         string
	codec       string
	transports  int
	sessions    int
	watches     int
	parallel    int
	hold        time.Duration
	concurrency int
	duration    time.Duration
	presence    string
	flips       int
	prefix      string
}

func run() error {
	var o options
	flag.StringVar(&o.mode, "mode", "sessions", "sessions, friends or flips")
	flag.StringVar(&o.url, "url", "http://127.0.0.1:3000", "the gateway's URL")
	flag.StringVar(&o.codec, "codec", "json", "json (as the browser app), proto, or grpc")
	flag.IntVar(&o.transports, "transports", 16, "HTTP/2 transports to spread calls over")
	flag.IntVar(&o.sessions, "sessions", 1000, "sessions to open (sessions mode)")
	flag.IntVar(&o.watches, "watches", 5, "users each session watches (sessions mode)")
	flag.IntVar(&o.parallel, "parallel", 64, "sessions being opened at once (sessions mode)")
	flag.DurationVar(&o.hold, "hold", 30*time.Second,
		"how long to hold the sessions open (sessions mode)")
	flag.IntVar(&o.concurrency, "concurrency", 32, "callers at once (friends mode)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measurement (friends mode)")
	flag.StringVar(&o.presence, "presence", "",
		"comma-separated presence proxy URLs, two or more (flips mode)")
	flag.IntVar(&o.flips, "flips", 1000, "flips to measure (flips mode)")
	flag.StringVar(&o.prefix, "prefix", "", "start of every user name (default: chatload-<time>-)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if o.prefix == "" {
		o.prefix = fmt.Sprintf("chatload-%x-", time.Now().Unix()%0xffffff)
	}
	for name, v := range map[string]int{
		"sessions": o.sessions, "parallel": o.parallel, "concurrency": o.concurrency,
		"flips": o.flips, "transports": o.transports,
	} {
		if v < 1 {
			return fmt.Errorf("%s: %d is not a positive count", name, v)
		}
	}
	if o.hold < 0 || o.duration <= 0 {
		return errors.New("hold must not be negative and duration must be positive")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch o.mode {
	case "sessions":
		return runSessions(ctx, o)
	case "friends":
		return runFriends(ctx, o)
	case "flips":
		return runFlips(ctx, o)
	}
	return fmt.Errorf("mode %q is not sessions, friends or flips", o.mode)
}

func newClient(o options, url string) (*loadgen.Client, error) {
	return loadgen.New(loadgen.Config{
		BaseURL: url, Transports: o.transports, Codec: loadgen.Codec(o.codec),
	})
}

// progress prints line() to stderr once a second until the returned stop.
func progress(ctx context.Context, line func() string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		loadgen.Progress(ctx, os.Stderr, time.Second, line)
	}()
	return func() { cancel(); <-done }
}

func runSessions(ctx context.Context, o options) error {
	client, err := newClient(o, o.url)
	if err != nil {
		return err
	}
	defer client.Close()
	fleet, err := loadgen.NewFleet(loadgen.FleetConfig{
		Client: client, Prefix: o.prefix, Watches: o.watches, Parallel: o.parallel,
	})
	if err != nil {
		return err
	}
	defer fleet.Close()

	start := time.Now()
	stopProgress := progress(ctx, func() string {
		return fmt.Sprintf("sessions %d/%d ready, %d failed, %.0f/s, %s", fleet.Ready(),
			o.sessions, fleet.Failed(), float64(fleet.Ready())/time.Since(start).Seconds(),
			time.Since(start).Round(time.Second))
	})
	err = fleet.Grow(ctx, o.sessions)
	stopProgress()
	took := time.Since(start)
	fmt.Printf("opened %d sessions (%d failed) in %s, %.0f/s, over %d connections\n",
		fleet.Ready(), fleet.Failed(), took.Round(time.Millisecond),
		float64(fleet.Ready())/took.Seconds(), client.Dials())
	if err != nil {
		return err
	}

	holdStart := time.Now()
	stopProgress = progress(ctx, func() string {
		return fmt.Sprintf("holding %d sessions, %d lost, %s of %s", fleet.Ready(), fleet.Lost(),
			time.Since(holdStart).Round(time.Second), o.hold)
	})
	select {
	case <-ctx.Done():
	case <-time.After(o.hold):
	}
	stopProgress()
	lost := fleet.Lost()
	fmt.Printf("held %d sessions for %s, %d lost their stream\n", fleet.Ready(),
		time.Since(holdStart).Round(time.Second), lost)
	if lost > 0 {
		return fmt.Errorf("%d sessions lost their stream", lost)
	}
	return nil
}

func runFriends(ctx context.Context, o options) error {
	client, err := newClient(o, o.url)
	if err != nil {
		return err
	}
	defer client.Close()
	users := make([]string, o.concurrency)
	tokens := make([]string, o.concurrency)
	for i := range users {
		users[i] = o.prefix + strconv.Itoa(i)
		if tokens[i], err = client.SignIn(ctx, users[i]); err != nil {
			return err
		}
	}
	ops := []struct {
		name string
		op   func(context.Context, int, int) error
	}{
		{"Add", func(ctx context.Context, w, call int) error {
			req := connect.NewRequest(&friendspb.Friend{User: users[w],
				Friend: "f" + strconv.Itoa(call%8)})
			loadgen.Authorize(req.Header(), tokens[w])
			_, err := client.Friends().Add(ctx, req)
			return err
		}},
		{"GetFriends", func(ctx context.Context, w, _ int) error {
			_, err := client.Friends().GetFriends(ctx,
				connect.NewRequest(&friendspb.User{User: users[w]}))
			return err
		}},
	}
	for _, op := range ops {
		var done atomic.Int64
		start := time.Now()
		stopProgress := progress(ctx, func() string {
			return fmt.Sprintf("%s: %d calls, %.0f/s", op.name, done.Load(),
				float64(done.Load())/time.Since(start).Seconds())
		})
		res := loadgen.Load(ctx, o.concurrency, o.duration, func(ctx context.Context, w, c int) error {
			err := op.op(ctx, w, c)
			if err == nil {
				done.Add(1)
			}
			return err
		})
		stopProgress()
		l := res.Latency
		fmt.Printf("%s: %d calls in %s, %.0f/s, p50 %s, p99 %s, max %s, %d errors\n",
			op.name, res.Calls, res.Elapsed.Round(time.Millisecond), res.Rate(), l.P50, l.P99,
			l.Max, res.Errors)
		if res.FirstErr != nil {
			fmt.Printf("%s: first error: %v\n", op.name, res.FirstErr)
		}
	}
	return nil
}

func runFlips(ctx context.Context, o options) error {
	var clients []*loadgen.Client
	for u := range strings.SplitSeq(o.presence, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		c, err := loadgen.New(loadgen.Config{BaseURL: u, Transports: 1, Codec: loadgen.CodecGRPC})
		if err != nil {
			return err
		}
		defer c.Close()
		clients = append(clients, c)
	}
	if len(clients) < 2 {
		return errors.New("presence: give two or more presence proxy URLs")
	}
	n := len(clients)
	users := make([]string, 10)
	for i := range users {
		users[i] = o.prefix + strconv.Itoa(i)
	}
	var done atomic.Int64
	stopProgress := progress(ctx, func() string {
		return fmt.Sprintf("flips %d/%d", done.Load(), o.flips)
	})
	f, err := loadgen.MeasureFlips(ctx, loadgen.FlipConfig{
		Users:   users,
		Connect: func(i int) presencepbconnect.PresenceClient { return clients[i%n].Presence() },
		Monitor: func(i int) presencepbconnect.PresenceClient { return clients[(i+1)%n].Presence() },
		Flips:   o.flips,
		Done:    func(k int) { done.Store(int64(k)) },
	})
	stopProgress()
	for _, s := range []struct {
		name string
		ds   []time.Duration
	}{{"online", f.Online}, {"offline", f.Offline}, {"all", slices.Concat(f.Online, f.Offline)}} {
		sum := loadgen.Summarize(s.ds)
		fmt.Printf("%s: %d flips, p50 %s, p99 %s, max %s\n", s.name, sum.N, sum.P50, sum.P99, sum.Max)
	}
	return err
}
