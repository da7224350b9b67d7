package function

import (
	"maps"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// GSet is a grow-only set of values. Elements are compared as the proxy
// compares them, by type URL and exact bytes; encode them with package value
// so that equal values have equal bytes.
type GSet struct {
	crdtBase
	items map[anyKey]struct{}
	// added holds the elements not yet sent to the proxy.
	added map[anyKey]struct{}
}

// NewGSet returns an empty set.
func NewGSet() *GSet {
	return &GSet{items: map[anyKey]struct{}{}, added: map[anyKey]struct{}{}}
}

// Add adds e and reports whether it was new. The set does not keep e.
func (s *GSet) Add(e *anypb.Any) bool {
	k := keyOf(e)
	if _, ok := s.items[k]; ok {
		return false
	}
	s.willWrite()
	s.items[k] = struct{}{}
	s.added[k] = struct{}{}
	return true
}

// Has reports whether e is in the set.
func (s *GSet) Has(e *anypb.Any) bool {
	_, ok := s.items[keyOf(e)]
	return ok
}

// Size returns the number of elements.
func (s *GSet) Size() int { return len(s.items) }

// Elements returns new copies of the elements, ordered by type URL and then
// bytes.
func (s *GSet) Elements() []*anypb.Any { return sortedAnys(s.items) }

func (s *GSet) state() *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Gset{
		Gset: &protocol.GSetState{Items: sortedAnys(s.items)},
	}}
}

func (s *GSet) delta() *protocol.CrdtDelta {
	if len(s.added) == 0 {
		return nil
	}
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{
		Gset: &protocol.GSetDelta{Added: sortedAnys(s.added)},
	}}
}

func (s *GSet) resetDelta() { clear(s.added) }

func (s *GSet) applyState(st *protocol.CrdtState) error {
	gs, ok := st.GetState().(*protocol.CrdtState_Gset)
	if !ok {
		return mismatch("state", stateKind(st), s)
	}
	clear(s.items)
	for _, e := range gs.Gset.GetItems() {
		s.items[keyOf(e)] = struct{}{}
	}
	return nil
}

func (s *GSet) applyDelta(d *protocol.CrdtDelta) error {
	gd, ok := d.GetDelta().(*protocol.CrdtDelta_Gset)
	if !ok {
		return mismatch("delta", deltaKind(d), s)
	}
	for _, e := range gd.Gset.GetAdded() {
		s.items[keyOf(e)] = struct{}{}
	}
	return nil
}

func (s *GSet) clone() CRDT {
	return &GSet{items: maps.Clone(s.items), added: maps.Clone(s.added)}
}

func (s *GSet) restore(from CRDT) {
	f := from.(*GSet)
	s.items, s.added = maps.Clone(f.items), maps.Clone(f.added)
}

// ORSet is an observed-remove set of values: elements can be added and
// removed, and an element added on one node while it is removed on another
// stays in the set. Elements are compared by type URL and exact bytes.
type ORSet struct {
	crdtBase
	items map[anyKey]struct{}
	// The changes not yet sent to the proxy, applied by the proxy in this
	// order: clear everything, remove removed, add added.
	cleared bool
	removed map[anyKey]struct{}
	added   map[anyKey]struct{}
}

// NewORSet returns an empty set.
func NewORSet() *ORSet {
	return &ORSet{
		items:   map[anyKey]struct{}{},
		removed: map[anyKey]struct{}{},
		added:   map[anyKey]struct{}{},
	}
}

// Add adds e and reports whether it was new. The set does not keep e.
func (s *ORSet) Add(e *anypb.Any) bool {
	k := keyOf(e)
	if _, ok := s.items[k]; ok {
		return false
	}
	s.willWrite()
	s.items[k] = struct{}{}
	if _, ok := s.removed[k]; ok {
		// Removed and added back since the last report: the proxy still
		// has it, so neither change needs to be sent.
		delete(s.removed, k)
	} else {
		s.added[k] = struct{}{}
	}
	return true
}

// Remove removes e and reports whether it was there. Removing the last
// element clears the set.
func (s *ORSet) Remove(e *anypb.Any) bool {
	k := keyOf(e)
	if _, ok := s.items[k]; !ok {
		return false
	}
	if len(s.items) == 1 {
		s.Clear()
		return true
	}
	s.willWrite()
	delete(s.items, k)
	if _, ok := s.added[k]; ok {
		delete(s.added, k)
	} else {
		s.removed[k] = struct{}{}
	}
	return true
}

// Clear removes every element.
func (s *ORSet) Clear() {
	if len(s.items) == 0 {
		return
	}
	s.willWrite()
	clear(s.items)
	clear(s.added)
	clear(s.removed)
	s.cleared = true
}

// Has reports whether e is in the set.
func (s *ORSet) Has(e *anypb.Any) bool {
	_, ok := s.items[keyOf(e)]
	return ok
}

// Size returns the number of elements.
func (s *ORSet) Size() int { return len(s.items) }

// Elements returns new copies of the elements, ordered by type URL and then
// bytes.
func (s *ORSet) Elements() []*anypb.Any { return sortedAnys(s.items) }

func (s *ORSet) state() *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Orset{
		Orset: &protocol.ORSetState{Items: sortedAnys(s.items)},
	}}
}

func (s *ORSet) delta() *protocol.CrdtDelta {
	if !s.cleared && len(s.removed) == 0 && len(s.added) == 0 {
		return nil
	}
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: &protocol.ORSetDelta{
		Cleared: s.cleared,
		Removed: sortedAnys(s.removed),
		Added:   sortedAnys(s.added),
	}}}
}

func (s *ORSet) resetDelta() {
	s.cleared = false
	clear(s.removed)
	clear(s.added)
}

func (s *ORSet) applyState(st *protocol.CrdtState) error {
	os, ok := st.GetState().(*protocol.CrdtState_Orset)
	if !ok {
		return mismatch("state", stateKind(st), s)
	}
	clear(s.items)
	for _, e := range os.Orset.GetItems() {
		s.items[keyOf(e)] = struct{}{}
	}
	return nil
}

func (s *ORSet) applyDelta(d *protocol.CrdtDelta) error {
	od, ok := d.GetDelta().(*protocol.CrdtDelta_Orset)
	if !ok {
		return mismatch("delta", deltaKind(d), s)
	}
	if od.Orset.GetCleared() {
		clear(s.items)
	}
	for _, e := range od.Orset.GetRemoved() {
		delete(s.items, keyOf(e))
	}
	for _, e := range od.Orset.GetAdded() {
		s.items[keyOf(e)] = struct{}{}
	}
	return nil
}

func (s *ORSet) clone() CRDT {
	return &ORSet{
		items:   maps.Clone(s.items),
		cleared: s.cleared,
		removed: maps.Clone(s.removed),
		added:   maps.Clone(s.added),
	}
}

func (s *ORSet) restore(from CRDT) {
	f := from.clone().(*ORSet)
	s.items, s.cleared, s.removed, s.added = f.items, f.cleared, f.removed, f.added
}
