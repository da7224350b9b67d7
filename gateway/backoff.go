package gateway

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff spaces out the attempts to re-open an upstream stream: each delay
// is drawn at random between half and all of an exponentially growing bound,
// from min up to max. It is not safe for concurrent use.
type backoff struct {
	min, max time.Duration
	bound    time.Duration
}

// next returns the delay before the next attempt and doubles the bound.
func (b *backoff) next() time.Duration {
	if b.bound < b.min {
		b.bound = b.min
	}
	d := b.bound/2 + rand.N(b.bound/2+1)
	b.bound = min(2*b.bound, b.max)
	return d
}

// reset starts the delays again from min.
func (b *backoff) reset() {
	b.bound = 0
}

// sleep waits for d or until ctx is done, and reports whether ctx is still
// live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
