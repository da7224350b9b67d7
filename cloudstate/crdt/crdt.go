// Package crdt implements the conflict-free replicated data types that a
// proxy holds for Cloudstate CRDT entities: GCounter, PNCounter, GSet, ORSet,
// LWWRegister, Flag, ORMap and Vote.
//
// Each value is one node's replica. Local operations change it and yield a
// delta; deltas and full states from other nodes merge into it. Merging is
// idempotent, commutative and associative, so replicas that have seen the
// same operations hold the same value whatever the order and repetition of
// delivery.
//
// Every type is built the same way, as a delta-state CRDT over dots: each
// event a node makes (an increment, an add, a write, a vote) gets a dot, the
// node's ID and its next sequence number, and a replica keeps a causal
// context, the dots it has seen, as a version vector with a cloud of the
// dots that arrived out of order. A dot the context holds that the value
// does not was removed. Merging keeps what both sides hold and what one side
// holds that the other has not seen, so a delta merges correctly whatever
// order deltas arrive in, and removals take away only what they saw: ORSet
// and ORMap are observed-remove with add-wins. The values nested in an ORMap
// share the map's context, so that removing a key removes exactly what was
// seen under it.
//
// A NodeID must name one replica's whole life: a node that restarts without
// its replicas must take a new NodeID, or its new dots would reuse numbers
// that other nodes have already seen, and its changes would be lost.
//
// The package also translates between replicas and the Cloudstate wire
// protocol: it applies a user function's CrdtStateAction to a replica, and
// computes the full CrdtState or the CrdtDelta a user function must be told.
//
// The package does no I/O, logs nothing and reads no clock; callers pass the
// time where a type needs it.
package crdt

import (
	"errors"
	"fmt"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// NodeID identifies a replica: one proxy node of a cluster.
type NodeID string

// Kind is the type of a CRDT.
type Kind uint8

// The kinds of CRDT, numbered as the cases of protocol.CrdtState.
const (
	KindGCounter Kind = iota + 1
	KindPNCounter
	KindGSet
	KindORSet
	KindLWWRegister
	KindFlag
	KindORMap
	KindVote
)

// ErrIncompatible reports a change that cannot be expressed as a delta of
// the protocol, such as a value whose kind changed. The caller sends the
// full state instead.
var ErrIncompatible = errors.New("incompatible change")

// CRDT is one node's replica of a replicated value. A CRDT is not safe for
// concurrent use.
type CRDT interface {
	// Kind returns the type of the value.
	Kind() Kind
	// Merge joins other, a full state or a delta of the same kind from any
	// node, into the receiver. It does not keep other. Merging the same
	// state twice, or states in any order, gives the same result.
	Merge(other CRDT) error
	// Clone returns a deep copy.
	Clone() CRDT
}

// Membership is the set of live nodes as one node sees it. Votes count only
// live nodes.
type Membership struct {
	// Self is the node that computes a view.
	Self NodeID
	// Alive lists the live nodes, Self included while it is a member.
	Alive []NodeID
}

// Applied is the outcome of applying a state action to a replica.
type Applied struct {
	// Value is the replica after the action; nil after a delete.
	Value CRDT
	// Delta is the change to send to other nodes; nil when nothing changed.
	Delta CRDT
	// Deleted reports a delete action.
	Deleted bool
}

// New returns an empty replica of the given kind.
func New(kind Kind) (CRDT, error) {
	st := newStore(kind)
	if st == nil {
		return nil, fmt.Errorf("new crdt: unknown kind %d", uint8(kind))
	}
	return wrap(&replica{st: st}), nil
}

// View returns the full state a user function on m.Self is told of c.
// Elements, entries and keys are in a deterministic order, so two views of
// equal values are proto.Equal.
//
// An LWWRegister's view carries only its value, the empty Any when it was
// never written. A Vote counts only the members in m.Alive. View returns nil
// when c is nil. The returned messages share nothing with c.
func View(c CRDT, m Membership) *protocol.CrdtState {
	r, err := baseOf(c)
	if err != nil {
		return nil
	}
	return r.st.view(m)
}
