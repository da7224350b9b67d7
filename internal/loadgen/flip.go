package loadgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// FlipConfig configures MeasureFlips.
type FlipConfig struct {
	// Users are flipped in turn; each must be offline at the start.
	Users []string
	// Connect returns the client that holds user i online, and Monitor the
	// client that watches user i: two replicas, to measure propagation
	// between them, or one server for a single hop.
	Connect func(i int) presencepbconnect.PresenceClient
	Monitor func(i int) presencepbconnect.PresenceClient
	// Flips is the number of flips to measure; they alternate between
	// online and offline.
	Flips int
	// Timeout bounds each flip (default 10s).
	Timeout time.Duration
	// Done, when not nil, is called after each flip with the flips done.
	Done func(n int)
}

// Flips are the measured times from opening or cancelling a user's Connect
// call to its monitor hearing the new status.
type Flips struct {
	Online, Offline []time.Duration
}

// monitorEvent is one status heard on a Monitor stream, or its end.
type monitorEvent struct {
	online bool
	err    error
}

// MeasureFlips opens a Monitor stream per user, then flips users online
// and offline one at a time and measures each flip.
func MeasureFlips(ctx context.Context, cfg FlipConfig) (Flips, error) {
	switch {
	case len(cfg.Users) == 0:
		return Flips{}, errors.New("flips: no users")
	case cfg.Connect == nil || cfg.Monitor == nil:
		return Flips{}, errors.New("flips: no connect or monitor client")
	case cfg.Flips < 0:
		return Flips{}, fmt.Errorf("flips: %d flips", cfg.Flips)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	monitors := make([]chan monitorEvent, len(cfg.Users))
	for i, user := range cfg.Users {
		stream, err := cfg.Monitor(i).Monitor(ctx,
			connect.NewRequest(&presencepb.User{Name: user}))
		if err != nil {
			return Flips{}, fmt.Errorf("monitor %s: %w", user, err)
		}
		events := make(chan monitorEvent, 16)
		monitors[i] = events
		go func() {
			defer stream.Close()
			send := func(ev monitorEvent) bool {
				select {
				case events <- ev:
					return true
				case <-ctx.Done():
					return false
				}
			}
			for stream.Receive() {
				if !send(monitorEvent{online: stream.Msg().GetOnline()}) {
					return
				}
			}
			err := stream.Err()
			if err == nil {
				err = errors.New("monitor stream ended")
			}
			send(monitorEvent{err: err})
		}()
	}
	for i, user := range cfg.Users {
		if err := awaitStatus(ctx, monitors[i], false, cfg.Timeout); err != nil {
			return Flips{}, fmt.Errorf("initial status of %s: %w", user, err)
		}
	}

	var out Flips
	for n := 0; n < cfg.Flips; n += 2 {
		i := (n / 2) % len(cfg.Users)
		on, off, err := flip(ctx, cfg, i, monitors[i], n+1 < cfg.Flips)
		if err != nil {
			return out, err
		}
		out.Online = append(out.Online, on)
		if n+1 < cfg.Flips {
			out.Offline = append(out.Offline, off)
		}
		if cfg.Done != nil {
			cfg.Done(len(out.Online) + len(out.Offline))
		}
	}
	return out, nil
}

// flip holds user i online until its monitor hears it, then lets go and
// waits until the monitor hears it offline. It returns both times; the
// offline one only when measureOff is set, though the user is always let
// go.
func flip(
	ctx context.Context, cfg FlipConfig, i int, monitor <-chan monitorEvent, measureOff bool,
) (on, off time.Duration, err error) {
	user := cfg.Users[i]
	connCtx, release := context.WithCancel(ctx)
	defer release()

	start := time.Now()
	stream, err := cfg.Connect(i).Connect(connCtx, connect.NewRequest(&presencepb.User{Name: user}))
	if err != nil {
		return 0, 0, fmt.Errorf("connect %s: %w", user, err)
	}
	drained := make(chan error, 1)
	go func() {
		for stream.Receive() {
		}
		drained <- stream.Err()
		_ = stream.Close()
	}()
	if err := awaitStatus(ctx, monitor, true, cfg.Timeout); err != nil {
		return 0, 0, fmt.Errorf("flip %s online: %w", user, err)
	}
	on = time.Since(start)

	start = time.Now()
	release()
	if err := awaitStatus(ctx, monitor, false, cfg.Timeout); err != nil {
		return 0, 0, fmt.Errorf("flip %s offline: %w", user, err)
	}
	if measureOff {
		off = time.Since(start)
	}
	select {
	case <-drained:
	case <-time.After(cfg.Timeout):
		return 0, 0, fmt.Errorf("connect %s: stream did not end after cancel", user)
	}
	return on, off, nil
}

// awaitStatus waits until events reports want.
func awaitStatus(ctx context.Context, events <-chan monitorEvent, want bool, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev := <-events:
			if ev.err != nil {
				return ev.err
			}
			if ev.online == want {
				return nil
			}
		case <-timer.C:
			return fmt.Errorf("no status online=%v within %v", want, d)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
