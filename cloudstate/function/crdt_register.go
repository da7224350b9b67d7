package function

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// Clock chooses how the proxy orders concurrent writes to an LWWRegister.
type Clock int32

// The clocks of an LWWRegister, as in the protocol.
const (
	// ClockDefault orders writes by the proxy's wall clock.
	ClockDefault Clock = Clock(protocol.CrdtClock_DEFAULT)
	// ClockReverse makes the first write win.
	ClockReverse Clock = Clock(protocol.CrdtClock_REVERSE)
	// ClockCustom orders writes by a value the function gives.
	ClockCustom Clock = Clock(protocol.CrdtClock_CUSTOM)
	// ClockCustomAutoIncrement is ClockCustom, except that a value not
	// greater than the register's current one becomes current + 1.
	ClockCustomAutoIncrement Clock = Clock(protocol.CrdtClock_CUSTOM_AUTO_INCREMENT)
)

// LWWRegister is a last-write-wins register holding one value.
type LWWRegister struct {
	crdtBase
	value *anypb.Any
	// The write not yet sent to the proxy, if pending.
	pending     bool
	clock       Clock
	customClock int64
}

// NewLWWRegister returns a register holding v, a nil v meaning an empty
// Any. The value counts as written: when the register becomes an entity's
// value in a command, v is sent to the proxy.
func NewLWWRegister(v *anypb.Any) *LWWRegister {
	r := &LWWRegister{value: &anypb.Any{}}
	r.SetWithClock(v, ClockDefault, 0)
	return r
}

// Value returns a copy of the value.
func (r *LWWRegister) Value() *anypb.Any { return proto.Clone(r.value).(*anypb.Any) }

// Set writes v, a nil v meaning an empty Any, with the default clock. The
// register does not keep v.
func (r *LWWRegister) Set(v *anypb.Any) { r.SetWithClock(v, ClockDefault, 0) }

// SetWithClock writes v with the given clock; customClock is used by the
// custom clocks only.
func (r *LWWRegister) SetWithClock(v *anypb.Any, clock Clock, customClock int64) {
	r.willWrite()
	r.value = keyOf(v).toAny()
	r.pending = true
	r.clock = clock
	r.customClock = customClock
}

func (r *LWWRegister) state() *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{
		Lwwregister: &protocol.LWWRegisterState{
			Value:            r.Value(),
			Clock:            protocol.CrdtClock(r.clock),
			CustomClockValue: r.customClock,
		},
	}}
}

func (r *LWWRegister) delta() *protocol.CrdtDelta {
	if !r.pending {
		return nil
	}
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{
		Lwwregister: &protocol.LWWRegisterDelta{
			Value:            r.Value(),
			Clock:            protocol.CrdtClock(r.clock),
			CustomClockValue: r.customClock,
		},
	}}
}

func (r *LWWRegister) resetDelta() {
	r.pending = false
	r.clock = ClockDefault
	r.customClock = 0
}

func (r *LWWRegister) applyState(s *protocol.CrdtState) error {
	st, ok := s.GetState().(*protocol.CrdtState_Lwwregister)
	if !ok {
		return mismatch("state", stateKind(s), r)
	}
	r.value = keyOf(st.Lwwregister.GetValue()).toAny()
	return nil
}

func (r *LWWRegister) applyDelta(d *protocol.CrdtDelta) error {
	dt, ok := d.GetDelta().(*protocol.CrdtDelta_Lwwregister)
	if !ok {
		return mismatch("delta", deltaKind(d), r)
	}
	r.value = keyOf(dt.Lwwregister.GetValue()).toAny()
	return nil
}

func (r *LWWRegister) clone() CRDT {
	return &LWWRegister{
		value:       r.Value(),
		pending:     r.pending,
		clock:       r.clock,
		customClock: r.customClock,
	}
}

func (r *LWWRegister) restore(from CRDT) {
	f := from.(*LWWRegister)
	r.value, r.pending, r.clock, r.customClock = f.Value(), f.pending, f.clock, f.customClock
}

// Flag is a boolean that starts disabled and, once enabled, stays enabled.
type Flag struct {
	crdtBase
	enabled bool
	// pending reports an Enable not yet sent to the proxy.
	pending bool
}

// NewFlag returns a disabled flag.
func NewFlag() *Flag { return &Flag{} }

// Enabled reports whether the flag is enabled.
func (f *Flag) Enabled() bool { return f.enabled }

// Enable enables the flag.
func (f *Flag) Enable() {
	if f.enabled {
		return
	}
	f.willWrite()
	f.enabled = true
	f.pending = true
}

func (f *Flag) state() *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Flag{
		Flag: &protocol.FlagState{Value: f.enabled},
	}}
}

func (f *Flag) delta() *protocol.CrdtDelta {
	if !f.pending {
		return nil
	}
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{
		Flag: &protocol.FlagDelta{Value: true},
	}}
}

func (f *Flag) resetDelta() { f.pending = false }

func (f *Flag) applyState(s *protocol.CrdtState) error {
	st, ok := s.GetState().(*protocol.CrdtState_Flag)
	if !ok {
		return mismatch("state", stateKind(s), f)
	}
	f.enabled = st.Flag.GetValue()
	return nil
}

func (f *Flag) applyDelta(d *protocol.CrdtDelta) error {
	dt, ok := d.GetDelta().(*protocol.CrdtDelta_Flag)
	if !ok {
		return mismatch("delta", deltaKind(d), f)
	}
	// A flag never goes back to disabled; a false delta changes nothing.
	f.enabled = f.enabled || dt.Flag.GetValue()
	return nil
}

func (f *Flag) clone() CRDT { return &Flag{enabled: f.enabled, pending: f.pending} }

func (f *Flag) restore(from CRDT) {
	g := from.(*Flag)
	f.enabled, f.pending = g.enabled, g.pending
}
