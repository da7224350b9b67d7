package crdt

import (
	"errors"
	"fmt"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// store is the state of one CRDT without its causal context: a set of dots,
// each with what the dot's event contributed. A top-level replica pairs a
// store with its own context; the stores of an ORMap's values share the
// map's context.
type store interface {
	// kind returns the type of the CRDT.
	kind() Kind
	// join merges o into the store, with the contexts j carries. o may be
	// nil, an empty store. join keeps nothing o points to but immutable Any
	// messages.
	join(j *joining, o store)
	// appendDots appends every dot of the store to ds.
	appendDots(ds []dot) []dot
	// empty reports whether the store has no dots.
	empty() bool
	// clone returns a deep copy, sharing only immutable Any messages.
	clone() store
	// view returns the full state a user function is told of the value.
	view(m Membership) *protocol.CrdtState
	// applyState applies the local operations that build the full state st
	// on top of the store; delta mirrors the change. It returns whether anything
	// changed.
	applyState(m *mutation, delta store, st *protocol.CrdtState, depth int) (bool, error)
	// applyDelta applies a user function's delta; delta mirrors the change. It
	// returns whether anything changed. Unless the store is an ORMap, it
	// changes nothing when it returns an error.
	applyDelta(m *mutation, delta store, d *protocol.CrdtDelta, depth int) (bool, error)
}

// MaxDepth is the deepest nesting of ORMaps that the package accepts: a
// top-level value has depth 0, a value in an ORMap depth 1, and so on.
const MaxDepth = 16

// errDepth reports a value nested deeper than MaxDepth.
var errDepth = fmt.Errorf("values nested deeper than %d", MaxDepth)

// newStore returns an empty store of kind, or nil when kind is not valid.
func newStore(kind Kind) store {
	switch kind {
	case KindGCounter, KindPNCounter:
		return &counterStore{k: kind}
	case KindGSet, KindORSet:
		return &setStore{k: kind}
	case KindLWWRegister:
		return &registerStore{}
	case KindFlag:
		return &flagStore{}
	case KindORMap:
		return &mapStore{}
	case KindVote:
		return &voteStore{}
	}
	return nil
}

// replica is a store with its causal context: one node's replica of a
// top-level value, or a delta of one.
type replica struct {
	cc causalContext
	st store
}

// base returns the replica itself; every CRDT of the package has one.
func (r *replica) base() *replica { return r }

// Kind returns the type of the value.
func (r *replica) Kind() Kind { return r.st.kind() }

// Merge joins other, a full state or a delta of the same kind from any node,
// into the receiver. It does not keep other.
func (r *replica) Merge(other CRDT) error {
	o, err := baseOf(other)
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	if o.st.kind() != r.st.kind() {
		return fmt.Errorf("merge %v into %v: %w", o.st.kind(), r.st.kind(), errKindMismatch)
	}
	if o == r {
		return nil
	}
	r.st.join(&joining{sc: &r.cc, oc: &o.cc}, o.st)
	r.cc.merge(&o.cc)
	return nil
}

// clone returns a deep copy of the replica.
func (r *replica) clone() *replica {
	return &replica{cc: r.cc.clone(), st: r.st.clone()}
}

// errKindMismatch reports an operation between values of different kinds.
var errKindMismatch = errors.New("kinds differ")

// baseOf returns the replica of a CRDT of this package.
func baseOf(c CRDT) (*replica, error) {
	b, ok := c.(interface{ base() *replica })
	if !ok {
		return nil, fmt.Errorf("unsupported CRDT %T", c)
	}
	r := b.base()
	if r == nil || r.st == nil {
		return nil, errors.New("nil CRDT")
	}
	return r, nil
}

// wrap returns the exported type of a replica.
func wrap(r *replica) CRDT {
	switch r.st.kind() {
	case KindGCounter:
		return &GCounter{r}
	case KindPNCounter:
		return &PNCounter{r}
	case KindGSet:
		return &GSet{r}
	case KindORSet:
		return &ORSet{r}
	case KindLWWRegister:
		return &LWWRegister{r}
	case KindFlag:
		return &Flag{r}
	case KindORMap:
		return &ORMap{r}
	default:
		return &Vote{r}
	}
}
