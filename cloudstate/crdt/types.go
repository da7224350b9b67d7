package crdt

import (
	"fmt"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// String returns the kind's name as in the protocol, such as "gcounter".
func (k Kind) String() string {
	switch k {
	case KindGCounter:
		return "gcounter"
	case KindPNCounter:
		return "pncounter"
	case KindGSet:
		return "gset"
	case KindORSet:
		return "orset"
	case KindLWWRegister:
		return "lwwregister"
	case KindFlag:
		return "flag"
	case KindORMap:
		return "ormap"
	case KindVote:
		return "vote"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// StateKind returns the kind of a full state, or 0 when st is nil or has no
// case set.
func StateKind(st *protocol.CrdtState) Kind {
	switch st.GetState().(type) {
	case *protocol.CrdtState_Gcounter:
		return KindGCounter
	case *protocol.CrdtState_Pncounter:
		return KindPNCounter
	case *protocol.CrdtState_Gset:
		return KindGSet
	case *protocol.CrdtState_Orset:
		return KindORSet
	case *protocol.CrdtState_Lwwregister:
		return KindLWWRegister
	case *protocol.CrdtState_Flag:
		return KindFlag
	case *protocol.CrdtState_Ormap:
		return KindORMap
	case *protocol.CrdtState_Vote:
		return KindVote
	}
	return 0
}

// DeltaKind returns the kind of a delta, or 0 when d is nil or has no case
// set.
func DeltaKind(d *protocol.CrdtDelta) Kind {
	switch d.GetDelta().(type) {
	case *protocol.CrdtDelta_Gcounter:
		return KindGCounter
	case *protocol.CrdtDelta_Pncounter:
		return KindPNCounter
	case *protocol.CrdtDelta_Gset:
		return KindGSet
	case *protocol.CrdtDelta_Orset:
		return KindORSet
	case *protocol.CrdtDelta_Lwwregister:
		return KindLWWRegister
	case *protocol.CrdtDelta_Flag:
		return KindFlag
	case *protocol.CrdtDelta_Ormap:
		return KindORMap
	case *protocol.CrdtDelta_Vote:
		return KindVote
	}
	return 0
}

// GCounter is a grow-only counter. Each node counts its own increments; the
// value is the sum over the nodes.
type GCounter struct{ *replica }

// PNCounter is a counter that goes up and down: each node counts its own
// increments and decrements; the value is the difference of the sums.
type PNCounter struct{ *replica }

// GSet is a grow-only set of Any values.
type GSet struct{ *replica }

// ORSet is an observed-remove set of Any values: a removal, or a clear,
// takes away only the adds its node has seen, so an add concurrent with a
// removal of the same element wins.
type ORSet struct{ *replica }

// LWWRegister is a last-write-wins register holding an Any value. The write
// with the highest timestamp wins; equal timestamps go to the lowest node ID.
// A write that would not win on its own node is dropped.
type LWWRegister struct{ *replica }

// Flag is a boolean that starts off and can only be switched on.
type Flag struct{ *replica }

// ORMap is an observed-remove map from Any keys to CRDTs of any kind. A
// removal takes away only what its node has seen under the key, so a put or
// an update concurrent with a removal of the same key wins, keeping what the
// removal did not see. When nodes concurrently put values of different kinds
// under one key, the map keeps both and shows the value of the highest Kind
// (in the order of the Kind constants) on every node, until a put or a
// removal that has seen both replaces them.
type ORMap struct{ *replica }

// Vote is a vote of the nodes of a cluster: per node a counter, odd for a
// vote for. A node changes its vote by incrementing its own counter; merging
// takes the newest counter of each node. Only live members count.
type Vote struct{ *replica }

func (c *GCounter) base() *replica {
	if c == nil {
		return nil
	}
	return c.replica
}

func (c *PNCounter) base() *replica {
	if c == nil {
		return nil
	}
	return c.replica
}

func (c *GSet) base() *replica {
	if c == nil {
		return nil
	}
	return c.replica
}

func (c *ORSet) base() *replica {
	if c == nil {
		return nil
	}
	return c.replica
}

func (c *LWWRegister) base() *replica {
	if c == nil {
		return nil
	}
	return c.replica
}

func (c *Flag) base() *replica {
	if c == nil {
		return nil
	}
	return c.replica
}

func (c *ORMap) base() *replica {
	if c == nil {
		return nil
	}
	return c.replica
}

func (c *Vote) base() *replica {
	if c == nil {
		return nil
	}
	return c.replica
}

// Clone returns a deep copy.
func (c *GCounter) Clone() CRDT { return &GCounter{c.replica.clone()} }

// Clone returns a deep copy.
func (c *PNCounter) Clone() CRDT { return &PNCounter{c.replica.clone()} }

// Clone returns a deep copy.
func (c *GSet) Clone() CRDT { return &GSet{c.replica.clone()} }

// Clone returns a deep copy.
func (c *ORSet) Clone() CRDT { return &ORSet{c.replica.clone()} }

// Clone returns a deep copy.
func (c *LWWRegister) Clone() CRDT { return &LWWRegister{c.replica.clone()} }

// Clone returns a deep copy.
func (c *Flag) Clone() CRDT { return &Flag{c.replica.clone()} }

// Clone returns a deep copy.
func (c *ORMap) Clone() CRDT { return &ORMap{c.replica.clone()} }

// Clone returns a deep copy.
func (c *Vote) Clone() CRDT { return &Vote{c.replica.clone()} }

// Value returns the counter's value.
func (c *GCounter) Value() uint64 {
	p, _ := c.st.(*counterStore).totals()
	return p
}

// Value returns the counter's value.
func (c *PNCounter) Value() int64 { return c.st.(*counterStore).value() }

// Enabled reports whether the flag is on.
func (c *Flag) Enabled() bool { return !c.st.empty() }

// Len returns the number of elements.
func (c *GSet) Len() int { return len(c.st.(*setStore).elems) }

// Len returns the number of elements.
func (c *ORSet) Len() int { return len(c.st.(*setStore).elems) }

// Len returns the number of keys.
func (c *ORMap) Len() int { return len(c.st.(*mapStore).entries) }
