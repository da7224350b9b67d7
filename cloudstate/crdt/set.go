package crdt

import (
	"slices"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"google.golang.org/protobuf/types/known/anypb"
)

// element is one element of a set and the dots of the adds that keep it.
type element struct {
	value *anypb.Any
	dots  []dot
}

// setStore is the store of a GSet or an ORSet: each element with the dots
// of the adds that keep it in the set. Adding an element mints a dot;
// removing it covers its dots in the delta's context, so that the removal
// takes away only the adds it has seen and a concurrent add wins.
type setStore struct {
	k     Kind
	elems map[string]*element
}

func (s *setStore) kind() Kind { return s.k }

func (s *setStore) put(key string, e *element) {
	if s.elems == nil {
		s.elems = make(map[string]*element)
	}
	s.elems[key] = e
}

func (s *setStore) join(j *joining, o store) {
	var oe map[string]*element
	if t, ok := o.(*setStore); ok && t != nil {
		oe = t.elems
	}
	for k, e := range oe {
		var mine []dot
		se := s.elems[k]
		if se != nil {
			mine = se.dots
		}
		ds := j.dots(mine, e.dots)
		switch {
		case len(ds) == 0:
			delete(s.elems, k)
		case se != nil:
			se.dots = ds
		default:
			s.put(k, &element{value: e.value, dots: ds})
		}
	}
	if j.removesNothing() {
		return
	}
	// TODO: a removal merged into a large set visits every element to find
	// the ones it covers; an index from dot to element would visit only
	// those, at the cost of memory in every replica.
	for k, e := range s.elems {
		if _, ok := oe[k]; ok {
			continue
		}
		if ds := j.dots(e.dots, nil); len(ds) == 0 {
			delete(s.elems, k)
		} else {
			e.dots = ds
		}
	}
}

func (s *setStore) appendDots(ds []dot) []dot {
	for _, e := range s.elems {
		ds = append(ds, e.dots...)
	}
	return ds
}

func (s *setStore) empty() bool { return len(s.elems) == 0 }

func (s *setStore) clone() store {
	out := &setStore{k: s.k}
	if len(s.elems) > 0 {
		out.elems = make(map[string]*element, len(s.elems))
		for k, e := range s.elems {
			out.elems[k] = &element{value: e.value, dots: slices.Clone(e.dots)}
		}
	}
	return out
}

// add adds v unless it is in the set already.
func (s *setStore) add(m *mutation, delta *setStore, v *anypb.Any) bool {
	k := anyKey(v)
	if _, ok := s.elems[k]; ok {
		return false
	}
	d := m.mint()
	v = cloneAny(v)
	s.put(k, &element{value: v, dots: []dot{d}})
	delta.put(k, &element{value: v, dots: []dot{d}})
	return true
}

// remove removes v, which then stays removed on every replica that has seen
// only the adds this replica has seen.
func (s *setStore) remove(m *mutation, delta *setStore, v *anypb.Any) bool {
	k := anyKey(v)
	e, ok := s.elems[k]
	if !ok {
		return false
	}
	m.cover(e.dots)
	delete(s.elems, k)
	delete(delta.elems, k)
	return true
}

// clear removes every element this replica has seen.
func (s *setStore) clear(m *mutation, delta *setStore) bool {
	changed := false
	for _, e := range s.elems {
		changed = s.remove(m, delta, e.value) || changed
	}
	return changed
}

// items returns the elements, sorted by key.
func (s *setStore) items() []*anypb.Any {
	keys := make([]string, 0, len(s.elems))
	for k := range s.elems {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*anypb.Any, len(keys))
	for i, k := range keys {
		out[i] = cloneAny(s.elems[k].value)
	}
	return out
}

func (s *setStore) view(Membership) *protocol.CrdtState {
	if s.k == KindGSet {
		return &protocol.CrdtState{State: &protocol.CrdtState_Gset{
			Gset: &protocol.GSetState{Items: s.items()},
		}}
	}
	return &protocol.CrdtState{State: &protocol.CrdtState_Orset{
		Orset: &protocol.ORSetState{Items: s.items()},
	}}
}

// addAll adds every element of vs.
func (s *setStore) addAll(m *mutation, delta *setStore, vs []*anypb.Any) bool {
	changed := false
	for _, v := range vs {
		changed = s.add(m, delta, v) || changed
	}
	return changed
}

func (s *setStore) applyState(
	m *mutation, delta store, st *protocol.CrdtState, _ int,
) (bool, error) {
	ds, ok := delta.(*setStore)
	if !ok {
		return false, errKindMismatch
	}
	switch x := st.GetState().(type) {
	case *protocol.CrdtState_Gset:
		if s.k == KindGSet {
			return s.addAll(m, ds, x.Gset.GetItems()), nil
		}
	case *protocol.CrdtState_Orset:
		if s.k == KindORSet {
			return s.addAll(m, ds, x.Orset.GetItems()), nil
		}
	}
	return false, errKindMismatch
}

func (s *setStore) applyDelta(
	m *mutation, delta store, d *protocol.CrdtDelta, _ int,
) (bool, error) {
	ds, ok := delta.(*setStore)
	if !ok {
		return false, errKindMismatch
	}
	switch x := d.GetDelta().(type) {
	case *protocol.CrdtDelta_Gset:
		if s.k == KindGSet {
			return s.addAll(m, ds, x.Gset.GetAdded()), nil
		}
	case *protocol.CrdtDelta_Orset:
		if s.k != KindORSet {
			break
		}
		changed := false
		if x.Orset.GetCleared() {
			changed = s.clear(m, ds)
		}
		for _, v := range x.Orset.GetRemoved() {
			changed = s.remove(m, ds, v) || changed
		}
		return s.addAll(m, ds, x.Orset.GetAdded()) || changed, nil
	}
	return false, errKindMismatch
}
