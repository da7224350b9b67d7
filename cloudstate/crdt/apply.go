package crdt

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"google.golang.org/protobuf/types/known/anypb"
)

// Apply applies a state action that a user function reported to node's
// replica cur, which is nil when the node holds no value. It may change cur
// in place. now is the wall-clock time in Unix milliseconds, used by
// registers on the default clock.
//
// A create builds the value from the full state, adding to cur when the
// node already holds a value of that kind: counters add the state's value,
// sets add its elements, a register is written, a flag switched on, a map
// puts its entries, and a Vote sets only this node's vote from self_vote. An
// update applies the delta, to an empty value of the delta's kind when cur
// is nil; within an ORMap, an update of a key that is gone or holds another
// kind is ignored, as the function did not know of that change yet. A delete
// returns Applied{Deleted: true}.
//
// Applied.Value is cur itself when cur is not nil. Applied.Delta is nil
// when nothing changed, except that it is never nil when cur is nil, so that
// other nodes learn that the value exists.
//
// It returns an error, and leaves cur unchanged, for a delta or state
// without a value or of another kind than cur, a missing element or key, a
// GCounter increment or value at or above 2^63, a counter overflow, a
// FlagDelta{value: false} for an enabled flag, an unknown clock, nesting
// deeper than MaxDepth, or an empty node.
func Apply(cur CRDT, node NodeID, now int64, action *protocol.CrdtStateAction) (Applied, error) {
	switch a := action.GetAction().(type) {
	case *protocol.CrdtStateAction_Delete:
		return Applied{Deleted: true}, nil
	case *protocol.CrdtStateAction_Create:
		if err := checkState(a.Create, 0); err != nil {
			return Applied{}, fmt.Errorf("apply create: %w", err)
		}
		out, err := apply(cur, node, now, StateKind(a.Create), stateKeys(a.Create),
			func(m *mutation, s, delta store) (bool, error) {
				return s.applyState(m, delta, a.Create, 0)
			})
		if err != nil {
			return Applied{}, fmt.Errorf("apply create: %w", err)
		}
		return out, nil
	case *protocol.CrdtStateAction_Update:
		if err := checkDelta(a.Update, 0); err != nil {
			return Applied{}, fmt.Errorf("apply update: %w", err)
		}
		out, err := apply(cur, node, now, DeltaKind(a.Update), deltaKeys(a.Update),
			func(m *mutation, s, delta store) (bool, error) {
				return s.applyDelta(m, delta, a.Update, 0)
			})
		if err != nil {
			return Applied{}, fmt.Errorf("apply update: %w", err)
		}
		return out, nil
	}
	return Applied{}, errors.New("apply: state action has no action")
}

// apply runs op on node's replica cur of kind, or on a new one when cur is
// nil, and collects the delta. keys are the map keys that op reads when the
// kind is ORMap.
func apply(
	cur CRDT, node NodeID, now int64, kind Kind, keys []*anypb.Any,
	op func(m *mutation, s, delta store) (bool, error),
) (Applied, error) {
	if node == "" {
		return Applied{}, errors.New("empty node ID")
	}
	var r *replica
	if cur == nil {
		r = &replica{st: newStore(kind)}
	} else {
		b, err := baseOf(cur)
		if err != nil {
			return Applied{}, err
		}
		if b.st.kind() != kind {
			return Applied{}, fmt.Errorf("%v for a %v: %w", kind, b.st.kind(), errKindMismatch)
		}
		r = b
		if kind == KindORMap {
			// A nested update may fail half-way. Try the action first on
			// copies of the context and of the entries it reads, so that a
			// failure leaves cur whole.
			trial := &replica{cc: r.cc.clone(), st: r.st.(*mapStore).only(keys)}
			tm := &mutation{node: node, now: now, cc: &trial.cc, dcc: &causalContext{}}
			if _, err := op(tm, trial.st, newStore(kind)); err != nil {
				return Applied{}, err
			}
		}
	}
	delta := &replica{st: newStore(kind)}
	m := &mutation{node: node, now: now, cc: &r.cc, dcc: &delta.cc}
	changed, err := op(m, r.st, delta.st)
	if err != nil {
		return Applied{}, err
	}
	out := Applied{Value: cur}
	if cur == nil {
		out.Value = wrap(r)
	}
	if changed || cur == nil {
		out.Delta = wrap(delta)
	}
	return out, nil
}

// stateKeys returns the keys of a map's full state.
func stateKeys(st *protocol.CrdtState) []*anypb.Any {
	var keys []*anypb.Any
	for _, e := range st.GetOrmap().GetEntries() {
		keys = append(keys, e.GetKey())
	}
	return keys
}

// deltaKeys returns the keys a map's delta names.
func deltaKeys(d *protocol.CrdtDelta) []*anypb.Any {
	m := d.GetOrmap()
	keys := slices.Clone(m.GetRemoved())
	for _, u := range m.GetUpdated() {
		keys = append(keys, u.GetKey())
	}
	for _, e := range m.GetAdded() {
		keys = append(keys, e.GetKey())
	}
	return keys
}
