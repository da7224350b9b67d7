package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// FleetConfig configures a Fleet.
type FleetConfig struct {
	// Client calls the gateway.
	Client *Client
	// Prefix starts every user name; user i is Prefix followed by i.
	Prefix string
	// Watches is how many users each session watches: user i watches users
	// i+1 to i+Watches.
	Watches int
	// Parallel is how many sessions are being opened at once (default 64).
	Parallel int
	// ReadyTimeout bounds the time one session may take from sign-in to
	// knowing every watched user's status (default 60s).
	ReadyTimeout time.Duration
}

// Fleet holds many sessions open, each watching a few users. Grow adds
// sessions; Close ends them all. Its counters may be read concurrently with
// Grow, for progress lines.
type Fleet struct {
	cfg    FleetConfig
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// sessions is guarded by mu.
	sessions []*Session

	ready  atomic.Int64
	failed atomic.Int64
}

// NewFleet checks cfg and returns an empty Fleet.
func NewFleet(cfg FleetConfig) (*Fleet, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("fleet: no client")
	case cfg.Watches < 0 || cfg.Watches > 100:
		return nil, fmt.Errorf("fleet: watches %d is not in 0..100", cfg.Watches)
	case cfg.Parallel < 0 || cfg.Parallel > 10000:
		return nil, fmt.Errorf("fleet: parallel %d is not in 1..10000", cfg.Parallel)
	case cfg.ReadyTimeout < 0:
		return nil, fmt.Errorf("fleet: ready timeout %v is negative", cfg.ReadyTimeout)
	case len(cfg.Prefix)+10 > 64:
		return nil, fmt.Errorf("fleet: prefix %q leaves no room in a 64-byte name", cfg.Prefix)
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = 64
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Fleet{cfg: cfg, ctx: ctx, cancel: cancel}, nil
}

// UserName returns the name of user i.
func (f *Fleet) UserName(i int) string {
	return fmt.Sprintf("%s%d", f.cfg.Prefix, i)
}

// Ready returns the number of sessions that are open and know the status
// of every user they watch.
func (f *Fleet) Ready() int {
	return int(f.ready.Load())
}

// Failed returns the number of sessions that failed to become ready.
func (f *Fleet) Failed() int {
	return int(f.failed.Load())
}

// Lost returns the number of ready sessions whose stream has ended since.
func (f *Fleet) Lost() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.sessions {
		if s.Err() != nil {
			n++
		}
	}
	return n
}

// Grow opens sessions until n are ready. It stops at the first session
// that fails, and returns that failure, or when ctx is done.
func (f *Fleet) Grow(ctx context.Context, n int) error {
	f.mu.Lock()
	start := len(f.sessions)
	f.mu.Unlock()
	if n <= start {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	next.Store(int64(start))
	for range min(f.cfg.Parallel, n-start) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				s, err := f.open(ctx, i)
				if err != nil {
					if ctx.Err() == nil {
						f.failed.Add(1)
					}
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				f.mu.Lock()
				f.sessions = append(f.sessions, s)
				f.mu.Unlock()
				f.ready.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// open signs user i in, opens the session, watches its users and waits
// until their statuses are known.
func (f *Fleet) open(ctx context.Context, i int) (*Session, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.ReadyTimeout)
	defer cancel()
	name := f.UserName(i)
	token, err := f.cfg.Client.SignIn(ctx, name)
	if err != nil {
		return nil, err
	}
	s, err := f.cfg.Client.OpenSession(f.ctx, token)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", name, err)
	}
	watched := make([]string, f.cfg.Watches)
	for k := range watched {
		watched[k] = f.UserName(i + 1 + k)
		if err := s.Watch(ctx, watched[k]); err != nil {
			s.Close()
			return nil, fmt.Errorf("user %s: %w", name, err)
		}
	}
	if err := s.WaitKnown(ctx, watched); err != nil {
		s.Close()
		return nil, fmt.Errorf("user %s: %w", name, err)
	}
	return s, nil
}

// Close ends every session.
func (f *Fleet) Close() {
	f.cancel()
	f.mu.Lock()
	sessions := f.sessions
	f.sessions = nil
	f.mu.Unlock()
	for _, s := range sessions {
		<-s.done
	}
	f.ready.Store(0)
}
