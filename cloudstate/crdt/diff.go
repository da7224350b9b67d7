package crdt

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"google.golang.org/protobuf/types/known/anypb"
)

// Diff returns the delta that takes a user function holding old to new, or
// nil when they are equal. old may be nil. It returns ErrIncompatible when no
// delta can express the change.
//
// Sets compare as sets and registers by their value only. The delta is what
// the proxy of the protocol sends: counters by their difference; a GSet its
// added elements; an ORSet cleared alone when new is empty, otherwise its
// removed and added elements, or cleared with all of new's elements when
// that is shorter; a register its new value; a flag true when switched on;
// an ORMap cleared alone when new is empty, otherwise its removed keys, the
// nested deltas of changed values under updated, and under added the full
// state of new keys and of keys whose value changed in a way no delta can
// express (those are also removed first); a Vote all three fields whenever
// any differs. ErrIncompatible, wrapped with detail, is returned when old or
// new is nil but not both, the kind changed, a counter went down, a GSet lost
// elements or a flag was switched off. Elements and keys are sorted.
func Diff(old, new *protocol.CrdtState) (*protocol.CrdtDelta, error) {
	return diff(old, new, 0)
}

func diff(old, new *protocol.CrdtState, depth int) (*protocol.CrdtDelta, error) {
	switch {
	case depth > MaxDepth:
		return nil, fmt.Errorf("diff: %w", errDepth)
	case old == nil && new == nil:
		return nil, nil
	case old == nil:
		return nil, fmt.Errorf("diff: value created: %w", ErrIncompatible)
	case new == nil:
		return nil, fmt.Errorf("diff: value deleted: %w", ErrIncompatible)
	}
	ok, nk := StateKind(old), StateKind(new)
	if ok == 0 || nk == 0 {
		return nil, fmt.Errorf("diff: %w", errNoState)
	}
	if ok != nk {
		return nil, fmt.Errorf("diff: %v became %v: %w", ok, nk, ErrIncompatible)
	}
	switch o := old.State.(type) {
	case *protocol.CrdtState_Gcounter:
		ov, nv := o.Gcounter.GetValue(), new.GetGcounter().GetValue()
		if nv < ov {
			return nil, fmt.Errorf("diff gcounter: went down from %d to %d: %w",
				ov, nv, ErrIncompatible)
		}
		if nv == ov {
			return nil, nil
		}
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{
			Gcounter: &protocol.GCounterDelta{Increment: nv - ov},
		}}, nil
	case *protocol.CrdtState_Pncounter:
		ov, nv := o.Pncounter.GetValue(), new.GetPncounter().GetValue()
		if nv == ov {
			return nil, nil
		}
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{
			Pncounter: &protocol.PNCounterDelta{Change: nv - ov},
		}}, nil
	case *protocol.CrdtState_Gset:
		removed, added, err := diffSets(o.Gset.GetItems(), new.GetGset().GetItems())
		if err != nil {
			return nil, fmt.Errorf("diff gset: %w", err)
		}
		if len(removed) > 0 {
			return nil, fmt.Errorf("diff gset: lost %d elements: %w", len(removed), ErrIncompatible)
		}
		if len(added) == 0 {
			return nil, nil
		}
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{
			Gset: &protocol.GSetDelta{Added: added},
		}}, nil
	case *protocol.CrdtState_Orset:
		return diffORSet(o.Orset.GetItems(), new.GetOrset().GetItems())
	case *protocol.CrdtState_Lwwregister:
		nv := new.GetLwwregister().GetValue()
		if equalAny(o.Lwwregister.GetValue(), nv) {
			return nil, nil
		}
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{
			Lwwregister: &protocol.LWWRegisterDelta{Value: cloneAny(nv)},
		}}, nil
	case *protocol.CrdtState_Flag:
		ov, nv := o.Flag.GetValue(), new.GetFlag().GetValue()
		switch {
		case ov && !nv:
			return nil, fmt.Errorf("diff flag: switched off: %w", ErrIncompatible)
		case ov == nv:
			return nil, nil
		}
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{
			Flag: &protocol.FlagDelta{Value: true},
		}}, nil
	case *protocol.CrdtState_Ormap:
		return diffORMap(o.Ormap.GetEntries(), new.GetOrmap().GetEntries(), depth)
	case *protocol.CrdtState_Vote:
		return diffVote(o.Vote, new.GetVote())
	}
	return nil, fmt.Errorf("diff: %w", errNoState)
}

// diffSets returns the elements of old missing from new and those of new
// missing from old, each sorted and distinct.
func diffSets(old, new []*anypb.Any) (removed, added []*anypb.Any, err error) {
	if err := checkAnys(old); err != nil {
		return nil, nil, err
	}
	if err := checkAnys(new); err != nil {
		return nil, nil, err
	}
	inOld := make(map[string]bool, len(old))
	for _, v := range old {
		inOld[anyKey(v)] = true
	}
	inNew := make(map[string]bool, len(new))
	for _, v := range new {
		inNew[anyKey(v)] = true
	}
	for _, v := range old {
		if !inNew[anyKey(v)] {
			removed = append(removed, v)
		}
	}
	for _, v := range new {
		if !inOld[anyKey(v)] {
			added = append(added, v)
		}
	}
	return sortedSet(removed), sortedSet(added), nil
}

// diffORSet returns the ORSetDelta from old to new.
func diffORSet(old, new []*anypb.Any) (*protocol.CrdtDelta, error) {
	removed, added, err := diffSets(old, new)
	if err != nil {
		return nil, fmt.Errorf("diff orset: %w", err)
	}
	if len(removed) == 0 && len(added) == 0 {
		return nil, nil
	}
	d := &protocol.ORSetDelta{Removed: removed, Added: added}
	all := sortedSet(new)
	switch {
	case len(all) == 0:
		d = &protocol.ORSetDelta{Cleared: true}
	case len(removed)+len(added) > len(all):
		d = &protocol.ORSetDelta{Cleared: true, Added: all}
	}
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: d}}, nil
}

// diffORMap returns the ORMapDelta from old to new entries at depth.
func diffORMap(old, new []*protocol.ORMapEntry, depth int) (*protocol.CrdtDelta, error) {
	om, err := entriesByKey(old)
	if err != nil {
		return nil, err
	}
	nm, err := entriesByKey(new)
	if err != nil {
		return nil, err
	}
	d := &protocol.ORMapDelta{}
	if len(nm) == 0 {
		if len(om) == 0 {
			return nil, nil
		}
		d.Cleared = true
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: d}}, nil
	}
	added := make(map[string]*protocol.ORMapEntry)
	for k, oe := range om {
		ne, ok := nm[k]
		if !ok {
			d.Removed = append(d.Removed, cloneAny(oe.Key))
			continue
		}
		nd, err := diff(oe.Value, ne.Value, depth+1)
		switch {
		case isIncompatible(err):
			d.Removed = append(d.Removed, cloneAny(oe.Key))
			added[k] = ne
		case err != nil:
			return nil, err
		case nd != nil:
			d.Updated = append(d.Updated,
				&protocol.ORMapEntryDelta{Key: cloneAny(oe.Key), Delta: nd})
		}
	}
	for k, ne := range nm {
		if _, ok := om[k]; !ok {
			added[k] = ne
		}
	}
	for _, ne := range added {
		v, err := canonical(ne.Value, depth+1)
		if err != nil {
			return nil, fmt.Errorf("diff ormap: %w", err)
		}
		d.Added = append(d.Added, &protocol.ORMapEntry{Key: cloneAny(ne.Key), Value: v})
	}
	if len(d.Removed) == 0 && len(d.Updated) == 0 && len(d.Added) == 0 {
		return nil, nil
	}
	slices.SortFunc(d.Removed, compareKeys)
	slices.SortFunc(d.Updated, func(a, b *protocol.ORMapEntryDelta) int {
		return compareKeys(a.Key, b.Key)
	})
	slices.SortFunc(d.Added, func(a, b *protocol.ORMapEntry) int {
		return compareKeys(a.Key, b.Key)
	})
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: d}}, nil
}

// entriesByKey indexes map entries by key; a later duplicate wins.
func entriesByKey(entries []*protocol.ORMapEntry) (map[string]*protocol.ORMapEntry, error) {
	out := make(map[string]*protocol.ORMapEntry, len(entries))
	for _, e := range entries {
		if e.GetKey() == nil {
			return nil, fmt.Errorf("diff ormap: %w", errNilAny)
		}
		out[anyKey(e.Key)] = e
	}
	return out, nil
}

// diffVote returns a VoteDelta with all three fields when they changed.
func diffVote(old, new *protocol.VoteState) (*protocol.CrdtDelta, error) {
	if old.GetVotesFor() == new.GetVotesFor() && old.GetTotalVoters() == new.GetTotalVoters() &&
		old.GetSelfVote() == new.GetSelfVote() {
		return nil, nil
	}
	if new.GetVotesFor() > math.MaxInt32 || new.GetTotalVoters() > math.MaxInt32 {
		return nil, fmt.Errorf("diff vote: %d of %d voters beyond int32",
			new.GetVotesFor(), new.GetTotalVoters())
	}
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{
		SelfVote:    new.GetSelfVote(),
		VotesFor:    int32(new.GetVotesFor()),
		TotalVoters: int32(new.GetTotalVoters()),
	}}}, nil
}

// isIncompatible reports whether err is, or wraps, ErrIncompatible.
func isIncompatible(err error) bool { return errors.Is(err, ErrIncompatible) }
