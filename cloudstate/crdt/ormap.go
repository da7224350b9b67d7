package crdt

import (
	"slices"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"google.golang.org/protobuf/types/known/anypb"
)

// mapValue is the value of one kind under a map key: the dots of the puts
// and updates that keep the key, with this kind, in the map, and the value's
// store. The value is present while any of those dots or any dot of its
// store remains.
type mapValue struct {
	live []dot
	st   store
}

func (v *mapValue) empty() bool { return len(v.live) == 0 && v.st.empty() }

func (v *mapValue) appendDots(ds []dot) []dot {
	return v.st.appendDots(append(ds, v.live...))
}

// mapEntry is one key of a map with its values. Nodes that put values of
// different kinds under the key concurrently leave one value of each kind;
// the key then shows the value of the highest Kind, on every node alike,
// until a put or removal that has seen them replaces them all.
type mapEntry struct {
	key  *anypb.Any
	vals map[Kind]*mapValue
}

// visible returns the kind of the value the entry shows.
func (e *mapEntry) visible() Kind {
	var k Kind
	for kind := range e.vals {
		k = max(k, kind)
	}
	return k
}

func (e *mapEntry) appendDots(ds []dot) []dot {
	for _, v := range e.vals {
		ds = v.appendDots(ds)
	}
	return ds
}

// clone returns a deep copy of the entry.
func (e *mapEntry) clone() *mapEntry {
	c := &mapEntry{key: e.key, vals: make(map[Kind]*mapValue, len(e.vals))}
	for kind, v := range e.vals {
		c.vals[kind] = &mapValue{live: slices.Clone(v.live), st: v.st.clone()}
	}
	return c
}

// setValue stores v under kind, or drops the kind when v is empty.
func (e *mapEntry) setValue(kind Kind, v *mapValue) {
	if v.empty() {
		delete(e.vals, kind)
		return
	}
	if e.vals == nil {
		e.vals = make(map[Kind]*mapValue, 1)
	}
	e.vals[kind] = v
}

// prune drops the dots of the entry that the other side of j has seen, as
// a join with a replica that does not have the key.
func (e *mapEntry) prune(j *joining) {
	for kind, v := range e.vals {
		v.live = j.dots(v.live, nil)
		v.st.join(j, nil)
		e.setValue(kind, v)
	}
}

// mapStore is the store of an ORMap: an observed-remove map whose values
// are CRDTs of any kind, sharing the map's causal context. Putting a key
// mints a dot for it and removes what the key held; removing a key covers
// every dot of its values in the delta's context, so that the removal takes
// away only what it has seen. An update of a value also mints a dot for its
// key, so a key updated concurrently with its removal stays, with what the
// removal did not see; a counter updated so keeps the whole total of the
// updating node, since that node's newest dot carries it.
type mapStore struct {
	entries map[string]*mapEntry
}

func (s *mapStore) kind() Kind { return KindORMap }

// entry returns the entry of key k, adding an empty one when it is missing.
func (s *mapStore) entry(k string, key *anypb.Any) *mapEntry {
	e, ok := s.entries[k]
	if !ok {
		if s.entries == nil {
			s.entries = make(map[string]*mapEntry)
		}
		e = &mapEntry{key: key}
		s.entries[k] = e
	}
	return e
}

// dropIfEmpty removes the entry of key k when it has no values left.
func (s *mapStore) dropIfEmpty(k string) {
	if e, ok := s.entries[k]; ok && len(e.vals) == 0 {
		delete(s.entries, k)
	}
}

func (s *mapStore) join(j *joining, o store) {
	var oe map[string]*mapEntry
	if t, ok := o.(*mapStore); ok && t != nil {
		oe = t.entries
	}
	for k, x := range oe {
		e := s.entry(k, x.key)
		for kind, xv := range x.vals {
			v := e.vals[kind]
			if v == nil {
				v = &mapValue{st: newStore(kind)}
			}
			v.live = j.dots(v.live, xv.live)
			v.st.join(j, xv.st)
			e.setValue(kind, v)
		}
		for kind, v := range e.vals {
			if _, ok := x.vals[kind]; ok {
				continue
			}
			v.live = j.dots(v.live, nil)
			v.st.join(j, nil)
			e.setValue(kind, v)
		}
		s.dropIfEmpty(k)
	}
	if j.removesNothing() {
		return
	}
	for k, e := range s.entries {
		if _, ok := oe[k]; !ok {
			e.prune(j)
			s.dropIfEmpty(k)
		}
	}
}

func (s *mapStore) appendDots(ds []dot) []dot {
	for _, e := range s.entries {
		ds = e.appendDots(ds)
	}
	return ds
}

func (s *mapStore) empty() bool { return len(s.entries) == 0 }

func (s *mapStore) clone() store {
	out := &mapStore{}
	if len(s.entries) > 0 {
		out.entries = make(map[string]*mapEntry, len(s.entries))
	}
	for k, e := range s.entries {
		out.entries[k] = e.clone()
	}
	return out
}

// only returns copies of the entries of the given keys.
func (s *mapStore) only(keys []*anypb.Any) *mapStore {
	out := &mapStore{}
	for _, key := range keys {
		k := anyKey(key)
		if e, ok := s.entries[k]; ok {
			if out.entries == nil {
				out.entries = make(map[string]*mapEntry, len(keys))
			}
			out.entries[k] = e.clone()
		}
	}
	return out
}

// remove removes key k and everything this replica has seen under it.
func (s *mapStore) remove(m *mutation, delta *mapStore, k string) bool {
	e, ok := s.entries[k]
	if !ok {
		return false
	}
	m.cover(e.appendDots(nil))
	delete(s.entries, k)
	delete(delta.entries, k)
	return true
}

// put sets key to a new value built from st, replacing what the key held.
func (s *mapStore) put(
	m *mutation, delta *mapStore, key *anypb.Any, st *protocol.CrdtState, depth int,
) error {
	k := anyKey(key)
	s.remove(m, delta, k)
	kind := StateKind(st)
	d := m.mint()
	v := &mapValue{live: []dot{d}, st: newStore(kind)}
	dv := &mapValue{live: []dot{d}, st: newStore(kind)}
	if _, err := v.st.applyState(m, dv.st, st, depth+1); err != nil {
		return err
	}
	key = cloneAny(key)
	s.entry(k, key).setValue(kind, v)
	delta.entry(k, key).setValue(kind, dv)
	return nil
}

// update applies a user function's delta to the value under key. It ignores
// the delta when the key is gone or shows a value of another kind: the
// function did not know of the change yet.
func (s *mapStore) update(
	m *mutation, delta *mapStore, key *anypb.Any, d *protocol.CrdtDelta, depth int,
) (bool, error) {
	k := anyKey(key)
	e, ok := s.entries[k]
	if !ok {
		return false, nil
	}
	kind := e.visible()
	if kind != DeltaKind(d) {
		return false, nil
	}
	v := e.vals[kind]
	de := delta.entry(k, e.key)
	dv := de.vals[kind]
	if dv == nil {
		dv = &mapValue{st: newStore(kind)}
	}
	changed, err := v.st.applyDelta(m, dv.st, d, depth+1)
	if err == nil && changed {
		m.cover(v.live)
		l := m.mint()
		v.live = []dot{l}
		dv.live = []dot{l}
	}
	e.setValue(kind, v)
	s.dropIfEmpty(k)
	de.setValue(kind, dv)
	delta.dropIfEmpty(k)
	return changed, err
}

func (s *mapStore) view(mb Membership) *protocol.CrdtState {
	keys := make([]string, 0, len(s.entries))
	for k := range s.entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := &protocol.ORMapState{Entries: make([]*protocol.ORMapEntry, len(keys))}
	for i, k := range keys {
		e := s.entries[k]
		out.Entries[i] = &protocol.ORMapEntry{
			Key:   cloneAny(e.key),
			Value: e.vals[e.visible()].st.view(mb),
		}
	}
	return &protocol.CrdtState{State: &protocol.CrdtState_Ormap{Ormap: out}}
}

func (s *mapStore) applyState(
	m *mutation, delta store, st *protocol.CrdtState, depth int,
) (bool, error) {
	dm, ok := delta.(*mapStore)
	x := st.GetOrmap()
	if !ok || StateKind(st) != KindORMap {
		return false, errKindMismatch
	}
	for _, e := range x.GetEntries() {
		if err := s.put(m, dm, e.GetKey(), e.GetValue(), depth); err != nil {
			return false, err
		}
	}
	return len(x.GetEntries()) > 0, nil
}

func (s *mapStore) applyDelta(
	m *mutation, delta store, d *protocol.CrdtDelta, depth int,
) (bool, error) {
	dm, ok := delta.(*mapStore)
	x := d.GetOrmap()
	if !ok || DeltaKind(d) != KindORMap {
		return false, errKindMismatch
	}
	changed := false
	if x.GetCleared() {
		for k := range s.entries {
			changed = s.remove(m, dm, k) || changed
		}
	}
	for _, key := range x.GetRemoved() {
		changed = s.remove(m, dm, anyKey(key)) || changed
	}
	for _, u := range x.GetUpdated() {
		c, err := s.update(m, dm, u.GetKey(), u.GetDelta(), depth)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	for _, e := range x.GetAdded() {
		if err := s.put(m, dm, e.GetKey(), e.GetValue(), depth); err != nil {
			return false, err
		}
		changed = true
	}
	return changed, nil
}
