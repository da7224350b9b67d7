package function

import (
	"errors"
	"fmt"
	"math"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// ErrOverflow reports a counter change that would leave the range the proxy
// can hold: counters are signed 64-bit integers there.
var ErrOverflow = errors.New("counter overflow")

// GCounter is a grow-only counter.
type GCounter struct {
	crdtBase
	value uint64
	// added is the increment not yet sent to the proxy.
	added uint64
}

// NewGCounter returns a counter at zero.
func NewGCounter() *GCounter { return &GCounter{} }

// Value returns the count.
func (c *GCounter) Value() uint64 { return c.value }

// Increment adds n to the count. It returns ErrOverflow, and changes
// nothing, if the count would exceed math.MaxInt64.
func (c *GCounter) Increment(n uint64) error {
	if n > math.MaxInt64 || c.value > math.MaxInt64-n {
		return fmt.Errorf("increment %d by %d: %w", c.value, n, ErrOverflow)
	}
	if n == 0 {
		return nil
	}
	c.willWrite()
	c.value += n
	c.added += n
	return nil
}

func (c *GCounter) state() *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Gcounter{
		Gcounter: &protocol.GCounterState{Value: c.value},
	}}
}

func (c *GCounter) delta() *protocol.CrdtDelta {
	if c.added == 0 {
		return nil
	}
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{
		Gcounter: &protocol.GCounterDelta{Increment: c.added},
	}}
}

func (c *GCounter) resetDelta() { c.added = 0 }

func (c *GCounter) applyState(s *protocol.CrdtState) error {
	st, ok := s.GetState().(*protocol.CrdtState_Gcounter)
	if !ok {
		return mismatch("state", stateKind(s), c)
	}
	c.value = st.Gcounter.GetValue()
	return nil
}

func (c *GCounter) applyDelta(d *protocol.CrdtDelta) error {
	dt, ok := d.GetDelta().(*protocol.CrdtDelta_Gcounter)
	if !ok {
		return mismatch("delta", deltaKind(d), c)
	}
	n := dt.Gcounter.GetIncrement()
	if c.value > math.MaxUint64-n {
		return fmt.Errorf("apply delta: increment %d by %d: %w", c.value, n, ErrOverflow)
	}
	c.value += n
	return nil
}

func (c *GCounter) clone() CRDT { return &GCounter{value: c.value, added: c.added} }

func (c *GCounter) restore(from CRDT) {
	f := from.(*GCounter)
	c.value, c.added = f.value, f.added
}

// PNCounter is a counter that can go up and down.
type PNCounter struct {
	crdtBase
	value int64
	// change is the change not yet sent to the proxy.
	change int64
}

// NewPNCounter returns a counter at zero.
func NewPNCounter() *PNCounter { return &PNCounter{} }

// Value returns the count.
func (c *PNCounter) Value() int64 { return c.value }

// Increment adds n, which may be negative, to the count. It returns
// ErrOverflow, and changes nothing, if the count or the change to send would
// leave the range of int64.
func (c *PNCounter) Increment(n int64) error {
	v, ok1 := addInt64(c.value, n)
	ch, ok2 := addInt64(c.change, n)
	if !ok1 || !ok2 {
		return fmt.Errorf("increment %d by %d: %w", c.value, n, ErrOverflow)
	}
	if n == 0 {
		return nil
	}
	c.willWrite()
	c.value, c.change = v, ch
	return nil
}

// Decrement subtracts n from the count, like Increment(-n).
func (c *PNCounter) Decrement(n int64) error {
	if n == math.MinInt64 {
		return fmt.Errorf("decrement %d by %d: %w", c.value, n, ErrOverflow)
	}
	return c.Increment(-n)
}

// addInt64 adds and reports whether the sum fits.
func addInt64(a, b int64) (int64, bool) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, false
	}
	return s, true
}

func (c *PNCounter) state() *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Pncounter{
		Pncounter: &protocol.PNCounterState{Value: c.value},
	}}
}

func (c *PNCounter) delta() *protocol.CrdtDelta {
	if c.change == 0 {
		return nil
	}
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{
		Pncounter: &protocol.PNCounterDelta{Change: c.change},
	}}
}

func (c *PNCounter) resetDelta() { c.change = 0 }

func (c *PNCounter) applyState(s *protocol.CrdtState) error {
	st, ok := s.GetState().(*protocol.CrdtState_Pncounter)
	if !ok {
		return mismatch("state", stateKind(s), c)
	}
	c.value = st.Pncounter.GetValue()
	return nil
}

func (c *PNCounter) applyDelta(d *protocol.CrdtDelta) error {
	dt, ok := d.GetDelta().(*protocol.CrdtDelta_Pncounter)
	if !ok {
		return mismatch("delta", deltaKind(d), c)
	}
	v, ok := addInt64(c.value, dt.Pncounter.GetChange())
	if !ok {
		return fmt.Errorf("apply delta: increment %d by %d: %w",
			c.value, dt.Pncounter.GetChange(), ErrOverflow)
	}
	c.value = v
	return nil
}

func (c *PNCounter) clone() CRDT { return &PNCounter{value: c.value, change: c.change} }

func (c *PNCounter) restore(from CRDT) {
	f := from.(*PNCounter)
	c.value, c.change = f.value, f.change
}
