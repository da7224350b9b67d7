package crdt

import (
	"errors"
	"fmt"
	"math"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// errOverflow reports a counter change beyond the range of its value.
var errOverflow = errors.New("counter overflow")

// counterVal is what a counter dot records: the totals of the increments and
// of the decrements its node had made.
type counterVal struct {
	p, n uint64
}

// counterStore is the store of a GCounter or a PNCounter. Each node's newest
// dot carries the node's totals and replaces its earlier dots; until the
// delta that replaced them arrives, earlier dots may linger, and only a
// node's highest dot counts.
type counterStore struct {
	k    Kind
	dots map[dot]counterVal
}

func (s *counterStore) kind() Kind { return s.k }

func (s *counterStore) set(d dot, v counterVal) {
	if s.dots == nil {
		s.dots = make(map[dot]counterVal)
	}
	s.dots[d] = v
}

func (s *counterStore) join(j *joining, o store) {
	var od map[dot]counterVal
	if t, ok := o.(*counterStore); ok && t != nil {
		od = t.dots
	}
	for d, v := range s.dots {
		if ov, ok := od[d]; ok {
			s.dots[d] = counterVal{p: max(v.p, ov.p), n: max(v.n, ov.n)}
		} else if j.oc.contains(d) {
			delete(s.dots, d)
		}
	}
	for d, ov := range od {
		if _, ok := s.dots[d]; !ok && !j.sc.contains(d) {
			s.set(d, ov)
		}
	}
}

func (s *counterStore) appendDots(ds []dot) []dot {
	for d := range s.dots {
		ds = append(ds, d)
	}
	return ds
}

func (s *counterStore) empty() bool { return len(s.dots) == 0 }

func (s *counterStore) clone() store {
	out := &counterStore{k: s.k}
	for d, v := range s.dots {
		out.set(d, v)
	}
	return out
}

// own returns the totals of node's highest dot and all of node's dots.
func (s *counterStore) own(node NodeID) (counterVal, []dot) {
	var (
		top dot
		val counterVal
		ds  []dot
	)
	for d, v := range s.dots {
		if d.node != node {
			continue
		}
		ds = append(ds, d)
		if d.seq > top.seq {
			top, val = d, v
		}
	}
	return val, ds
}

// totals returns the sums of the increments and of the decrements over the
// highest dot of every node.
func (s *counterStore) totals() (p, n uint64) {
	top := make(map[NodeID]dot, len(s.dots))
	for d := range s.dots {
		if d.seq > top[d.node].seq {
			top[d.node] = d
		}
	}
	for _, d := range top {
		v := s.dots[d]
		p += v.p
		n += v.n
	}
	return p, n
}

// value returns the counter's value: the increments less the decrements.
func (s *counterStore) value() int64 {
	p, n := s.totals()
	return int64(p - n)
}

// add adds p to the increments and n to the decrements of the mutation's
// node. It changes nothing when it returns an error.
func (s *counterStore) add(m *mutation, delta *counterStore, p, n uint64) (bool, error) {
	if p == 0 && n == 0 {
		return false, nil
	}
	cur, ds := s.own(m.node)
	if cur.p > math.MaxUint64-p || cur.n > math.MaxUint64-n {
		return false, errOverflow
	}
	if s.k == KindGCounter {
		tp, _ := s.totals()
		if tp > math.MaxInt64 || p > math.MaxInt64-tp {
			return false, errOverflow
		}
	} else {
		// In uint64 arithmetic, room up is MaxInt64-v and room down is
		// v-MinInt64; both lie in [0, 2^64).
		v := uint64(s.value())
		if p > uint64(math.MaxInt64)-v || n > v+(1<<63) {
			return false, errOverflow
		}
	}
	for _, d := range ds {
		delete(s.dots, d)
		delete(delta.dots, d)
	}
	m.cover(ds)
	d := m.mint()
	v := counterVal{p: cur.p + p, n: cur.n + n}
	s.set(d, v)
	delta.set(d, v)
	return true, nil
}

// change adds a signed change to a PNCounter.
func (s *counterStore) change(m *mutation, delta *counterStore, c int64) (bool, error) {
	if c >= 0 {
		return s.add(m, delta, uint64(c), 0)
	}
	return s.add(m, delta, 0, uint64(-(c+1))+1)
}

func (s *counterStore) view(Membership) *protocol.CrdtState {
	if s.k == KindGCounter {
		p, _ := s.totals()
		return &protocol.CrdtState{State: &protocol.CrdtState_Gcounter{
			Gcounter: &protocol.GCounterState{Value: p},
		}}
	}
	return &protocol.CrdtState{State: &protocol.CrdtState_Pncounter{
		Pncounter: &protocol.PNCounterState{Value: s.value()},
	}}
}

func (s *counterStore) applyState(
	m *mutation, delta store, st *protocol.CrdtState, _ int,
) (bool, error) {
	dc, ok := delta.(*counterStore)
	if !ok {
		return false, errKindMismatch
	}
	switch x := st.GetState().(type) {
	case *protocol.CrdtState_Gcounter:
		if s.k != KindGCounter {
			break
		}
		if x.Gcounter.GetValue() > math.MaxInt64 {
			return false, fmt.Errorf("gcounter value %d is negative as int64",
				x.Gcounter.GetValue())
		}
		return s.add(m, dc, x.Gcounter.GetValue(), 0)
	case *protocol.CrdtState_Pncounter:
		if s.k != KindPNCounter {
			break
		}
		return s.change(m, dc, x.Pncounter.GetValue())
	}
	return false, errKindMismatch
}

func (s *counterStore) applyDelta(
	m *mutation, delta store, d *protocol.CrdtDelta, _ int,
) (bool, error) {
	dc, ok := delta.(*counterStore)
	if !ok {
		return false, errKindMismatch
	}
	switch x := d.GetDelta().(type) {
	case *protocol.CrdtDelta_Gcounter:
		if s.k != KindGCounter {
			break
		}
		if x.Gcounter.GetIncrement() > math.MaxInt64 {
			return false, fmt.Errorf("gcounter increment %d is negative as int64",
				x.Gcounter.GetIncrement())
		}
		return s.add(m, dc, x.Gcounter.GetIncrement(), 0)
	case *protocol.CrdtDelta_Pncounter:
		if s.k != KindPNCounter {
			break
		}
		return s.change(m, dc, x.Pncounter.GetChange())
	}
	return false, errKindMismatch
}
