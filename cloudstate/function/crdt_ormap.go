package function

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// ORMap is an observed-remove map from values to CRDTs. Keys are compared
// by type URL and exact bytes. The values are CRDTs themselves and are
// changed in place: a change to a value held by the map is a change to the
// map.
//
// A key should keep one CRDT type: setting an existing key to a new value
// may merge the old and new values on other nodes.
type ORMap struct {
	crdtBase
	entries map[anyKey]CRDT
	// The changes not yet sent to the proxy. Keys in added are sent with
	// the full state of their value; changes to the values of other keys
	// are sent as nested deltas.
	cleared bool
	removed map[anyKey]struct{}
	added   map[anyKey]struct{}
}

// NewORMap returns an empty map.
func NewORMap() *ORMap {
	return &ORMap{
		entries: map[anyKey]CRDT{},
		removed: map[anyKey]struct{}{},
		added:   map[anyKey]struct{}{},
	}
}

// Get returns the value of key.
func (m *ORMap) Get(key *anypb.Any) (CRDT, bool) {
	v, ok := m.entries[keyOf(key)]
	return v, ok
}

// Has reports whether key is in the map.
func (m *ORMap) Has(key *anypb.Any) bool {
	_, ok := m.entries[keyOf(key)]
	return ok
}

// Size returns the number of entries.
func (m *ORMap) Size() int { return len(m.entries) }

// Keys returns new copies of the keys, ordered by type URL and then bytes.
func (m *ORMap) Keys() []*anypb.Any { return sortedAnys(m.entries) }

// Set puts v at key. The map keeps v, which must not be held by another map
// or be the map itself; its pending changes are sent as part of its state.
func (m *ORMap) Set(key *anypb.Any, v CRDT) error {
	if v == nil {
		return errors.New("set map entry: nil value")
	}
	if v.base().onWrite != nil || v == CRDT(m) {
		return errors.New("set map entry: the value is already held elsewhere")
	}
	k := keyOf(key)
	m.willWrite()
	if old, ok := m.entries[k]; ok {
		old.base().onWrite = nil
		if _, isNew := m.added[k]; !isNew {
			m.removed[k] = struct{}{}
		}
	}
	m.entries[k] = v
	m.added[k] = struct{}{}
	v.base().onWrite = m.willWrite
	return nil
}

// Delete removes key and reports whether it was there. Deleting the last
// key clears the map.
func (m *ORMap) Delete(key *anypb.Any) bool {
	k := keyOf(key)
	v, ok := m.entries[k]
	if !ok {
		return false
	}
	if len(m.entries) == 1 {
		m.Clear()
		return true
	}
	m.willWrite()
	v.base().onWrite = nil
	delete(m.entries, k)
	if _, isNew := m.added[k]; isNew {
		delete(m.added, k)
	} else {
		m.removed[k] = struct{}{}
	}
	return true
}

// Clear removes every entry.
func (m *ORMap) Clear() {
	if len(m.entries) == 0 {
		return
	}
	m.willWrite()
	for _, v := range m.entries {
		v.base().onWrite = nil
	}
	clear(m.entries)
	clear(m.removed)
	clear(m.added)
	m.cleared = true
}

func (m *ORMap) sortedKeys() []anyKey {
	keys := slices.Collect(maps.Keys(m.entries))
	slices.SortFunc(keys, compareKeys)
	return keys
}

func (m *ORMap) state() *protocol.CrdtState {
	var entries []*protocol.ORMapEntry
	for _, k := range m.sortedKeys() {
		entries = append(entries, &protocol.ORMapEntry{Key: k.toAny(), Value: m.entries[k].state()})
	}
	return &protocol.CrdtState{State: &protocol.CrdtState_Ormap{
		Ormap: &protocol.ORMapState{Entries: entries},
	}}
}

func (m *ORMap) delta() *protocol.CrdtDelta {
	d := &protocol.ORMapDelta{Cleared: m.cleared, Removed: sortedAnys(m.removed)}
	for _, k := range m.sortedKeys() {
		v := m.entries[k]
		if _, isNew := m.added[k]; isNew {
			d.Added = append(d.Added, &protocol.ORMapEntry{Key: k.toAny(), Value: v.state()})
		} else if vd := v.delta(); vd != nil {
			d.Updated = append(d.Updated, &protocol.ORMapEntryDelta{Key: k.toAny(), Delta: vd})
		}
	}
	if !d.Cleared && len(d.Removed) == 0 && len(d.Added) == 0 && len(d.Updated) == 0 {
		return nil
	}
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: d}}
}

func (m *ORMap) resetDelta() {
	m.cleared = false
	clear(m.removed)
	clear(m.added)
	for _, v := range m.entries {
		v.resetDelta()
	}
}

func (m *ORMap) applyState(s *protocol.CrdtState) error {
	st, ok := s.GetState().(*protocol.CrdtState_Ormap)
	if !ok {
		return mismatch("state", stateKind(s), m)
	}
	entries := make(map[anyKey]CRDT, len(st.Ormap.GetEntries()))
	for _, e := range st.Ormap.GetEntries() {
		v, err := newFromState(e.GetValue())
		if err != nil {
			return fmt.Errorf("map entry: %w", err)
		}
		entries[keyOf(e.GetKey())] = v
	}
	m.replaceEntries(entries)
	return nil
}

// applyDelta applies the proxy's changes: cleared, then removed, then the
// nested deltas of kept keys, then the added keys with their full state.
// The delta is checked whole before anything changes.
func (m *ORMap) applyDelta(d *protocol.CrdtDelta) error {
	dt, ok := d.GetDelta().(*protocol.CrdtDelta_Ormap)
	if !ok {
		return mismatch("delta", deltaKind(d), m)
	}
	md := dt.Ormap
	next := m.cloneEntries()
	if md.GetCleared() {
		clear(next)
	}
	for _, k := range md.GetRemoved() {
		delete(next, keyOf(k))
	}
	for _, u := range md.GetUpdated() {
		v, ok := next[keyOf(u.GetKey())]
		if !ok {
			// Updated after a removal the proxy already told of.
			continue
		}
		if err := v.applyDelta(u.GetDelta()); err != nil {
			return fmt.Errorf("map entry: %w", err)
		}
	}
	for _, e := range md.GetAdded() {
		v, err := newFromState(e.GetValue())
		if err != nil {
			return fmt.Errorf("map entry: %w", err)
		}
		next[keyOf(e.GetKey())] = v
	}
	m.replaceEntries(next)
	return nil
}

// replaceEntries makes entries the map's entries, hooked to the map.
func (m *ORMap) replaceEntries(entries map[anyKey]CRDT) {
	for _, v := range m.entries {
		v.base().onWrite = nil
	}
	m.entries = entries
	for _, v := range m.entries {
		v.base().onWrite = m.willWrite
	}
}

// cloneEntries returns deep copies of the entries, not hooked to anything.
func (m *ORMap) cloneEntries() map[anyKey]CRDT {
	out := make(map[anyKey]CRDT, len(m.entries))
	for k, v := range m.entries {
		out[k] = v.clone()
	}
	return out
}

func (m *ORMap) clone() CRDT {
	c := &ORMap{
		cleared: m.cleared,
		removed: maps.Clone(m.removed),
		added:   maps.Clone(m.added),
	}
	c.replaceEntries(m.cloneEntries())
	return c
}

func (m *ORMap) restore(from CRDT) {
	f := from.(*ORMap)
	m.cleared, m.removed, m.added = f.cleared, maps.Clone(f.removed), maps.Clone(f.added)
	m.replaceEntries(f.cloneEntries())
}
