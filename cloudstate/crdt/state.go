package crdt

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"google.golang.org/protobuf/types/known/anypb"
)

// ApplyToState returns the value a user function holds after it reported
// action on st, which is nil when it held none. It reads the action as a user
// function means it: a VoteDelta changes only this node's vote. It returns
// nil after a delete. It does not change st.
//
// The result has the form View gives, so it compares with proto.Equal:
// elements and entries sorted, duplicates dropped (a later map entry wins),
// a register with only its value. A create replaces st. An update on a nil
// st applies to an empty value of the delta's kind; it follows Apply's order
// (ORSet: cleared, removed, added; ORMap: cleared, removed, updated, added)
// and ignores an ORMap update of a key that is missing or of another kind. A
// VoteDelta keeps total_voters and moves votes_for by one when self_vote
// flips. It returns an error for the actions that Apply rejects.
func ApplyToState(st *protocol.CrdtState, action *protocol.CrdtStateAction) (*protocol.CrdtState, error) {
	switch a := action.GetAction().(type) {
	case *protocol.CrdtStateAction_Delete:
		return nil, nil
	case *protocol.CrdtStateAction_Create:
		if err := checkState(a.Create, 0); err != nil {
			return nil, fmt.Errorf("apply create to state: %w", err)
		}
		out, err := canonical(a.Create, 0)
		if err != nil {
			return nil, fmt.Errorf("apply create to state: %w", err)
		}
		return out, nil
	case *protocol.CrdtStateAction_Update:
		if err := checkDelta(a.Update, 0); err != nil {
			return nil, fmt.Errorf("apply update to state: %w", err)
		}
		if st == nil {
			st = emptyState(DeltaKind(a.Update))
		}
		out, err := applyToState(st, a.Update, 0)
		if err != nil {
			return nil, fmt.Errorf("apply update to state: %w", err)
		}
		return out, nil
	}
	return nil, errors.New("apply to state: state action has no action")
}

// emptyState returns the full state of an empty value of kind.
func emptyState(kind Kind) *protocol.CrdtState {
	st := &protocol.CrdtState{}
	switch kind {
	case KindGCounter:
		st.State = &protocol.CrdtState_Gcounter{Gcounter: &protocol.GCounterState{}}
	case KindPNCounter:
		st.State = &protocol.CrdtState_Pncounter{Pncounter: &protocol.PNCounterState{}}
	case KindGSet:
		st.State = &protocol.CrdtState_Gset{Gset: &protocol.GSetState{}}
	case KindORSet:
		st.State = &protocol.CrdtState_Orset{Orset: &protocol.ORSetState{}}
	case KindLWWRegister:
		st.State = &protocol.CrdtState_Lwwregister{
			Lwwregister: &protocol.LWWRegisterState{Value: &anypb.Any{}},
		}
	case KindFlag:
		st.State = &protocol.CrdtState_Flag{Flag: &protocol.FlagState{}}
	case KindORMap:
		st.State = &protocol.CrdtState_Ormap{Ormap: &protocol.ORMapState{}}
	case KindVote:
		st.State = &protocol.CrdtState_Vote{Vote: &protocol.VoteState{}}
	}
	return st
}

// applyToState applies a checked delta to st as a user function does, with
// a VoteDelta read as the function's own vote.
func applyToState(
	st *protocol.CrdtState, d *protocol.CrdtDelta, depth int,
) (*protocol.CrdtState, error) {
	st, err := canonical(st, depth)
	if err != nil {
		return nil, err
	}
	if sk, dk := StateKind(st), DeltaKind(d); sk != dk {
		return nil, fmt.Errorf("%v for a %v: %w", dk, sk, errKindMismatch)
	}
	switch x := d.GetDelta().(type) {
	case *protocol.CrdtDelta_Gcounter:
		st.GetGcounter().Value += x.Gcounter.GetIncrement()
	case *protocol.CrdtDelta_Pncounter:
		st.GetPncounter().Value += x.Pncounter.GetChange()
	case *protocol.CrdtDelta_Gset:
		s := st.GetGset()
		s.Items = sortedSet(append(s.Items, x.Gset.GetAdded()...))
	case *protocol.CrdtDelta_Orset:
		s := st.GetOrset()
		s.Items = applySetDelta(s.Items, x.Orset)
	case *protocol.CrdtDelta_Lwwregister:
		st.GetLwwregister().Value = cloneAny(x.Lwwregister.GetValue())
	case *protocol.CrdtDelta_Flag:
		s := st.GetFlag()
		if s.Value && !x.Flag.GetValue() {
			return nil, errFlagOff
		}
		s.Value = s.Value || x.Flag.GetValue()
	case *protocol.CrdtDelta_Ormap:
		if err := applyMapDelta(st.GetOrmap(), x.Ormap, depth); err != nil {
			return nil, err
		}
	case *protocol.CrdtDelta_Vote:
		s := st.GetVote()
		switch self := x.Vote.GetSelfVote(); {
		case self && !s.SelfVote:
			s.VotesFor++
		case !self && s.SelfVote && s.VotesFor > 0:
			s.VotesFor--
		}
		s.SelfVote = x.Vote.GetSelfVote()
	}
	return st, nil
}

// applySetDelta returns the elements of an ORSet after a delta: cleared,
// then removed, then added.
func applySetDelta(items []*anypb.Any, d *protocol.ORSetDelta) []*anypb.Any {
	if d.GetCleared() {
		items = nil
	}
	gone := make(map[string]bool, len(d.GetRemoved()))
	for _, v := range d.GetRemoved() {
		gone[anyKey(v)] = true
	}
	items = slices.DeleteFunc(items, func(v *anypb.Any) bool { return gone[anyKey(v)] })
	return sortedSet(append(items, d.GetAdded()...))
}

// applyMapDelta applies an ORMap delta to m, which it owns: cleared, then
// removed, then updated, then added.
func applyMapDelta(m *protocol.ORMapState, d *protocol.ORMapDelta, depth int) error {
	entries := make(map[string]*protocol.ORMapEntry, len(m.Entries))
	if !d.GetCleared() {
		for _, e := range m.Entries {
			entries[anyKey(e.Key)] = e
		}
	}
	for _, k := range d.GetRemoved() {
		delete(entries, anyKey(k))
	}
	for _, u := range d.GetUpdated() {
		e, ok := entries[anyKey(u.GetKey())]
		if !ok || StateKind(e.Value) != DeltaKind(u.GetDelta()) {
			continue
		}
		v, err := applyToState(e.Value, u.GetDelta(), depth+1)
		if err != nil {
			return err
		}
		e.Value = v
	}
	for _, a := range d.GetAdded() {
		v, err := canonical(a.GetValue(), depth+1)
		if err != nil {
			return err
		}
		entries[anyKey(a.GetKey())] = &protocol.ORMapEntry{Key: cloneAny(a.GetKey()), Value: v}
	}
	m.Entries = sortedEntries(entries)
	return nil
}

// canonical returns a copy of st, sharing nothing with it, in the form View
// gives.
func canonical(st *protocol.CrdtState, depth int) (*protocol.CrdtState, error) {
	if depth > MaxDepth {
		return nil, errDepth
	}
	out := emptyState(StateKind(st))
	switch x := st.GetState().(type) {
	case nil:
		return nil, errNoState
	case *protocol.CrdtState_Gcounter:
		out.GetGcounter().Value = x.Gcounter.GetValue()
	case *protocol.CrdtState_Pncounter:
		out.GetPncounter().Value = x.Pncounter.GetValue()
	case *protocol.CrdtState_Gset:
		if err := checkAnys(x.Gset.GetItems()); err != nil {
			return nil, err
		}
		out.GetGset().Items = sortedSet(x.Gset.GetItems())
	case *protocol.CrdtState_Orset:
		if err := checkAnys(x.Orset.GetItems()); err != nil {
			return nil, err
		}
		out.GetOrset().Items = sortedSet(x.Orset.GetItems())
	case *protocol.CrdtState_Lwwregister:
		out.GetLwwregister().Value = cloneAny(x.Lwwregister.GetValue())
	case *protocol.CrdtState_Flag:
		out.GetFlag().Value = x.Flag.GetValue()
	case *protocol.CrdtState_Ormap:
		entries := make(map[string]*protocol.ORMapEntry, len(x.Ormap.GetEntries()))
		for _, e := range x.Ormap.GetEntries() {
			if e.GetKey() == nil {
				return nil, fmt.Errorf("ormap entry: %w", errNilAny)
			}
			v, err := canonical(e.GetValue(), depth+1)
			if err != nil {
				return nil, fmt.Errorf("ormap entry: %w", err)
			}
			entries[anyKey(e.GetKey())] = &protocol.ORMapEntry{Key: cloneAny(e.GetKey()), Value: v}
		}
		out.GetOrmap().Entries = sortedEntries(entries)
	case *protocol.CrdtState_Vote:
		v := out.GetVote()
		v.VotesFor = x.Vote.GetVotesFor()
		v.TotalVoters = x.Vote.GetTotalVoters()
		v.SelfVote = x.Vote.GetSelfVote()
	}
	return out, nil
}

// sortedSet returns copies of the distinct elements of items, sorted by key.
func sortedSet(items []*anypb.Any) []*anypb.Any {
	byKey := make(map[string]*anypb.Any, len(items))
	for _, v := range items {
		byKey[anyKey(v)] = v
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*anypb.Any, len(keys))
	for i, k := range keys {
		out[i] = cloneAny(byKey[k])
	}
	return out
}

// sortedEntries returns the entries of a map sorted by key.
func sortedEntries(entries map[string]*protocol.ORMapEntry) []*protocol.ORMapEntry {
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*protocol.ORMapEntry, len(keys))
	for i, k := range keys {
		out[i] = entries[k]
	}
	return out
}
