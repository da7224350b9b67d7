package crdt

import (
	"slices"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// Observed returns action with every clear of an ORSet or ORMap, at any
// depth, replaced by the removal of the elements or keys that model holds.
// model is the value the user function held when it made the change.
//
// A user function clears what it has seen; the node's replica may already
// hold elements merged from other nodes that the function has not been told
// of yet, and those must survive the clear, as observed-remove semantics
// demand. Apply the returned action to the replica. Observed does not change
// action or model; it returns action itself when it holds no clear.
func Observed(model *protocol.CrdtState, action *protocol.CrdtStateAction) *protocol.CrdtStateAction {
	upd := action.GetUpdate()
	if upd == nil {
		return action
	}
	d := observedDelta(model, upd, 0)
	if d == upd {
		return action
	}
	return &protocol.CrdtStateAction{
		Action:           &protocol.CrdtStateAction_Update{Update: d},
		WriteConsistency: action.GetWriteConsistency(),
	}
}

// observedDelta returns d with its clears made explicit against model, or d
// itself when it holds none.
func observedDelta(model *protocol.CrdtState, d *protocol.CrdtDelta, depth int) *protocol.CrdtDelta {
	if depth > MaxDepth {
		return d
	}
	switch x := d.GetDelta().(type) {
	case *protocol.CrdtDelta_Orset:
		if !x.Orset.GetCleared() {
			return d
		}
		removed := append(slices.Clone(model.GetOrset().GetItems()), x.Orset.GetRemoved()...)
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: &protocol.ORSetDelta{
			Removed: removed,
			Added:   x.Orset.GetAdded(),
		}}}
	case *protocol.CrdtDelta_Ormap:
		m := x.Ormap
		entries := model.GetOrmap().GetEntries()
		changed := m.GetCleared()
		updated := make([]*protocol.ORMapEntryDelta, 0, len(m.GetUpdated()))
		for _, u := range m.GetUpdated() {
			var value *protocol.CrdtState
			if i := slices.IndexFunc(entries, func(e *protocol.ORMapEntry) bool {
				return equalAny(e.GetKey(), u.GetKey())
			}); i >= 0 {
				value = entries[i].GetValue()
			}
			if nd := observedDelta(value, u.GetDelta(), depth+1); nd != u.GetDelta() {
				u = &protocol.ORMapEntryDelta{Key: u.GetKey(), Delta: nd}
				changed = true
			}
			updated = append(updated, u)
		}
		if !changed {
			return d
		}
		removed := m.GetRemoved()
		if m.GetCleared() {
			keys := make([]*anypb.Any, 0, len(entries)+len(removed))
			for _, e := range entries {
				keys = append(keys, e.GetKey())
			}
			removed = append(keys, removed...)
		}
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: &protocol.ORMapDelta{
			Removed: removed,
			Updated: updated,
			Added:   m.GetAdded(),
		}}}
	}
	return d
}
