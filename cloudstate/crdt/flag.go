package crdt

import (
	"errors"
	"slices"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// errFlagOff reports a user function that switched an enabled flag off.
var errFlagOff = errors.New("flag switched off")

// flagStore is the store of a Flag: the dots of the enables that keep it on.
// A flag only ever switches on; only the removal of an ORMap key that holds
// it takes the enables it has seen away.
type flagStore struct {
	dots []dot
}

func (s *flagStore) kind() Kind { return KindFlag }

func (s *flagStore) join(j *joining, o store) {
	var od []dot
	if t, ok := o.(*flagStore); ok && t != nil {
		od = t.dots
	}
	s.dots = j.dots(s.dots, od)
}

func (s *flagStore) appendDots(ds []dot) []dot { return append(ds, s.dots...) }

func (s *flagStore) empty() bool { return len(s.dots) == 0 }

func (s *flagStore) clone() store { return &flagStore{dots: slices.Clone(s.dots)} }

// enable switches the flag on.
func (s *flagStore) enable(m *mutation, delta *flagStore) bool {
	if len(s.dots) > 0 {
		return false
	}
	d := m.mint()
	s.dots = []dot{d}
	delta.dots = []dot{d}
	return true
}

func (s *flagStore) view(Membership) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Flag{
		Flag: &protocol.FlagState{Value: len(s.dots) > 0},
	}}
}

func (s *flagStore) applyState(
	m *mutation, delta store, st *protocol.CrdtState, _ int,
) (bool, error) {
	df, ok := delta.(*flagStore)
	x := st.GetFlag()
	if !ok || StateKind(st) != KindFlag {
		return false, errKindMismatch
	}
	if !x.GetValue() {
		return false, nil
	}
	return s.enable(m, df), nil
}

func (s *flagStore) applyDelta(
	m *mutation, delta store, d *protocol.CrdtDelta, _ int,
) (bool, error) {
	df, ok := delta.(*flagStore)
	x := d.GetFlag()
	if !ok || DeltaKind(d) != KindFlag {
		return false, errKindMismatch
	}
	if x.GetValue() {
		return s.enable(m, df), nil
	}
	if len(s.dots) > 0 {
		return false, errFlagOff
	}
	return false, nil
}
