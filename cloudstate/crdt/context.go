package crdt

import (
	"cmp"
	"slices"
)

// dot names one event: the node that made it and that node's sequence
// number for it, counted from 1. A node numbers its events across every
// value nested in one replica, so a dot is unique within a replica.
type dot struct {
	node NodeID
	seq  uint64
}

// compareDots orders dots by node, then by sequence number.
func compareDots(a, b dot) int {
	if c := cmp.Compare(a.node, b.node); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// causalContext is the set of dots a replica or a delta has seen. It is kept
// compact: a version vector holds, per node, the sequence number up to which
// every dot of the node was seen, and the cloud holds the other dots, which
// out-of-order deltas bring. No cloud dot is covered by, or next to, its
// node's entry in the version vector.
//
// A dot that the context holds but the store beside it does not was
// removed. The zero value is an empty context.
type causalContext struct {
	vv    map[NodeID]uint64
	cloud map[dot]struct{}
}

// contains reports whether the context has seen d.
func (c *causalContext) contains(d dot) bool {
	if d.seq <= c.vv[d.node] {
		return true
	}
	_, ok := c.cloud[d]
	return ok
}

// add records d as seen.
func (c *causalContext) add(d dot) {
	if c.contains(d) {
		return
	}
	if d.seq != c.vv[d.node]+1 {
		if c.cloud == nil {
			c.cloud = make(map[dot]struct{})
		}
		c.cloud[d] = struct{}{}
		return
	}
	if c.vv == nil {
		c.vv = make(map[NodeID]uint64)
	}
	c.vv[d.node] = d.seq
	c.absorb(d.node)
}

// addAll records every dot of ds as seen.
func (c *causalContext) addAll(ds []dot) {
	for _, d := range ds {
		c.add(d)
	}
}

// absorb moves the cloud dots of node that have become contiguous with its
// version into the version vector.
func (c *causalContext) absorb(node NodeID) {
	for len(c.cloud) > 0 {
		next := dot{node: node, seq: c.vv[node] + 1}
		if _, ok := c.cloud[next]; !ok {
			return
		}
		delete(c.cloud, next)
		c.vv[node] = next.seq
	}
}

// merge adds every dot that o has seen.
func (c *causalContext) merge(o *causalContext) {
	for n, s := range o.vv {
		if s > c.vv[n] {
			if c.vv == nil {
				c.vv = make(map[NodeID]uint64, len(o.vv))
			}
			c.vv[n] = s
		}
	}
	for d := range o.cloud {
		if !c.contains(d) {
			if c.cloud == nil {
				c.cloud = make(map[dot]struct{}, len(o.cloud))
			}
			c.cloud[d] = struct{}{}
		}
	}
	if len(c.cloud) == 0 {
		return
	}
	for d := range c.cloud {
		if d.seq <= c.vv[d.node] {
			delete(c.cloud, d)
		}
	}
	for n := range o.vv {
		c.absorb(n)
	}
	for d := range o.cloud {
		c.absorb(d.node)
	}
}

// next returns a dot of node that the context has not seen and that is
// greater than every dot of node it has seen.
func (c *causalContext) next(node NodeID) dot {
	seq := c.vv[node]
	for d := range c.cloud {
		if d.node == node && d.seq > seq {
			seq = d.seq
		}
	}
	return dot{node: node, seq: seq + 1}
}

// clone returns a copy of the context.
func (c *causalContext) clone() causalContext {
	var out causalContext
	if len(c.vv) > 0 {
		out.vv = make(map[NodeID]uint64, len(c.vv))
		for n, s := range c.vv {
			out.vv[n] = s
		}
	}
	if len(c.cloud) > 0 {
		out.cloud = make(map[dot]struct{}, len(c.cloud))
		for d := range c.cloud {
			out.cloud[d] = struct{}{}
		}
	}
	return out
}

// joining carries the contexts of a join: sc, that of the store merged
// into, and oc, that of the store merged from, both as they were before the
// join; the caller merges the contexts last.
type joining struct {
	sc, oc *causalContext
	// quiet caches whether sc has seen none of the dots oc has: 0 while
	// not known, 1 when so, -1 when not.
	quiet int8
}

// dots returns the dots of a dot set that survive the join of a, seen with
// sc, and b, seen with oc: the dots in both, and those in one that the
// other has not seen. It returns a itself when the join leaves it
// unchanged, and never modifies a or b.
func (j *joining) dots(a, b []dot) []dot {
	keep := func(d dot) bool { return slices.Contains(b, d) || !j.oc.contains(d) }
	gain := func(d dot) bool { return !slices.Contains(a, d) && !j.sc.contains(d) }
	if !slices.ContainsFunc(a, func(d dot) bool { return !keep(d) }) &&
		!slices.ContainsFunc(b, gain) {
		return a
	}
	var out []dot
	for _, d := range a {
		if keep(d) {
			out = append(out, d)
		}
	}
	for _, d := range b {
		if gain(d) {
			out = append(out, d)
		}
	}
	return out
}

// removesNothing reports whether sc has seen none of the dots that oc has
// seen, so that the join can remove nothing the store merged into holds
// outside what the other store holds. It may report false for contexts
// that are disjoint but large.
func (j *joining) removesNothing() bool {
	if j.quiet == 0 {
		j.quiet = -1
		if disjoint(j.sc, j.oc) {
			j.quiet = 1
		}
	}
	return j.quiet == 1
}

// disjoint reports whether c has seen none of the dots o has seen, giving
// up with false when o has seen many.
func disjoint(c, o *causalContext) bool {
	const limit = 1024
	n := len(o.cloud)
	for node, seq := range o.vv {
		n += int(min(seq, limit))
		if c.vv[node] > 0 || n > limit {
			return false
		}
		for s := uint64(1); s <= seq; s++ {
			if c.contains(dot{node: node, seq: s}) {
				return false
			}
		}
	}
	if n > limit {
		return false
	}
	for d := range o.cloud {
		if c.contains(d) {
			return false
		}
	}
	return true
}

// mutation carries what a local operation needs: the node that makes it, the
// time, the context of the replica it changes and the context of the delta
// it records the change in. Operations mirror every change of the replica's
// store into the delta's store, so that the delta, merged into any replica
// that has seen the replica's earlier state, makes the same change.
type mutation struct {
	node NodeID
	now  int64
	cc   *causalContext
	dcc  *causalContext
}

// mint returns a new dot of the mutation's node, seen by both contexts.
func (m *mutation) mint() dot {
	d := m.cc.next(m.node)
	m.cc.add(d)
	m.dcc.add(d)
	return d
}

// cover records in the delta's context that ds were seen: merged into
// another replica, the delta then removes them.
func (m *mutation) cover(ds []dot) {
	m.dcc.addAll(ds)
}
