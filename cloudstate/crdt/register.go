package crdt

import (
	"fmt"
	"math"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"google.golang.org/protobuf/types/known/anypb"
)

// write is one write of a register.
type write struct {
	value *anypb.Any
	ts    int64
}

// registerStore is the store of an LWWRegister: the writes that no later
// write has replaced, each under its dot. Writes made concurrently on
// different nodes all stay; the register's value is the write with the
// highest timestamp, on a tie the one from the lowest node ID, then the
// newest of that node. A local write that would not win is dropped, so the
// value only ever moves to a winning write, as with a state-based
// last-write-wins register.
type registerStore struct {
	writes map[dot]write
}

func (s *registerStore) kind() Kind { return KindLWWRegister }

func (s *registerStore) set(d dot, w write) {
	if s.writes == nil {
		s.writes = make(map[dot]write)
	}
	s.writes[d] = w
}

// beats reports whether write w under dot d wins over write x under dot e.
func beats(d dot, w write, e dot, x write) bool {
	if w.ts != x.ts {
		return w.ts > x.ts
	}
	if d.node != e.node {
		return d.node < e.node
	}
	if d.seq != e.seq {
		return d.seq > e.seq
	}
	// The same dot with two writes only comes from corrupt input; any fixed
	// choice keeps replicas equal.
	return anyKey(w.value) > anyKey(x.value)
}

func (s *registerStore) join(j *joining, o store) {
	var ow map[dot]write
	if t, ok := o.(*registerStore); ok && t != nil {
		ow = t.writes
	}
	for d, w := range s.writes {
		if x, ok := ow[d]; ok {
			if beats(d, x, d, w) {
				s.writes[d] = x
			}
		} else if j.oc.contains(d) {
			delete(s.writes, d)
		}
	}
	for d, x := range ow {
		if _, ok := s.writes[d]; !ok && !j.sc.contains(d) {
			s.set(d, x)
		}
	}
}

func (s *registerStore) appendDots(ds []dot) []dot {
	for d := range s.writes {
		ds = append(ds, d)
	}
	return ds
}

func (s *registerStore) empty() bool { return len(s.writes) == 0 }

func (s *registerStore) clone() store {
	out := &registerStore{}
	for d, w := range s.writes {
		out.set(d, w)
	}
	return out
}

// current returns the winning write and its dot; ok is false when the
// register was never written.
func (s *registerStore) current() (d dot, w write, ok bool) {
	for e, x := range s.writes {
		if !ok || beats(e, x, d, w) {
			d, w, ok = e, x, true
		}
	}
	return d, w, ok
}

// timestamp returns the timestamp of a write with clock on top of a current
// timestamp cur, at time now.
func timestamp(clock protocol.CrdtClock, custom, cur, now int64) (int64, error) {
	switch clock {
	case protocol.CrdtClock_DEFAULT:
		return max(now, addSat(cur, 1)), nil
	case protocol.CrdtClock_REVERSE:
		return min(negSat(now), addSat(cur, -1)), nil
	case protocol.CrdtClock_CUSTOM:
		return custom, nil
	case protocol.CrdtClock_CUSTOM_AUTO_INCREMENT:
		if custom > cur {
			return custom, nil
		}
		return addSat(cur, 1), nil
	}
	return 0, fmt.Errorf("unknown clock %d", clock)
}

// addSat returns a+b, saturated to the range of int64.
func addSat(a, b int64) int64 {
	s := a + b
	switch {
	case b > 0 && s < a:
		return math.MaxInt64
	case b < 0 && s > a:
		return math.MinInt64
	}
	return s
}

// negSat returns -a, saturated to the range of int64.
func negSat(a int64) int64 {
	if a == math.MinInt64 {
		return math.MaxInt64
	}
	return -a
}

// write sets the register to v when the write wins over the current value;
// a missing v is the empty Any.
func (s *registerStore) write(
	m *mutation, delta *registerStore, v *anypb.Any, clock protocol.CrdtClock, custom int64,
) (bool, error) {
	cd, cw, ok := s.current()
	ts, err := timestamp(clock, custom, cw.ts, m.now)
	if err != nil {
		return false, err
	}
	w := write{value: cloneAny(v), ts: ts}
	if ok && !beats(m.cc.next(m.node), w, cd, cw) {
		return false, nil
	}
	old := s.appendDots(nil)
	m.cover(old)
	for _, d := range old {
		delete(s.writes, d)
		delete(delta.writes, d)
	}
	d := m.mint()
	s.set(d, w)
	delta.set(d, w)
	return true, nil
}

func (s *registerStore) view(Membership) *protocol.CrdtState {
	_, w, _ := s.current()
	return &protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{
		Lwwregister: &protocol.LWWRegisterState{Value: cloneAny(w.value)},
	}}
}

func (s *registerStore) applyState(
	m *mutation, delta store, st *protocol.CrdtState, _ int,
) (bool, error) {
	dr, ok := delta.(*registerStore)
	x := st.GetLwwregister()
	if !ok || StateKind(st) != KindLWWRegister {
		return false, errKindMismatch
	}
	return s.write(m, dr, x.GetValue(), x.GetClock(), x.GetCustomClockValue())
}

func (s *registerStore) applyDelta(
	m *mutation, delta store, d *protocol.CrdtDelta, _ int,
) (bool, error) {
	dr, ok := delta.(*registerStore)
	x := d.GetLwwregister()
	if !ok || DeltaKind(d) != KindLWWRegister {
		return false, errKindMismatch
	}
	return s.write(m, dr, x.GetValue(), x.GetClock(), x.GetCustomClockValue())
}
