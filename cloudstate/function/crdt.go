package function

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// CRDT is the value of an entity as the user function sees it: the current
// value, and the changes made to it since the proxy last heard from the
// function. It is one of *GCounter, *PNCounter, *GSet, *ORSet,
// *LWWRegister, *Flag, *ORMap and *Vote.
//
// A CRDT is not safe for concurrent use. Read and change it only inside a
// command handler or a stream callback of its entity; change it only in a
// command handler or an OnCancel callback. The SDK reports each change to
// the proxy with that command's reply.
type CRDT interface {
	// base gives the SDK the hook every value carries.
	base() *crdtBase
	// state returns the full state.
	state() *protocol.CrdtState
	// delta returns the changes since the last resetDelta, or nil if there
	// are none.
	delta() *protocol.CrdtDelta
	// resetDelta forgets the changes, once they are sent or to be dropped.
	resetDelta()
	// applyState replaces the value with a full state from the proxy.
	applyState(*protocol.CrdtState) error
	// applyDelta applies a delta from the proxy.
	applyDelta(*protocol.CrdtDelta) error
	// clone returns a deep copy, pending changes included, without hooks.
	clone() CRDT
	// restore makes the receiver equal to from, a clone of the same type.
	restore(from CRDT)
}

// crdtBase holds what every CRDT shares.
type crdtBase struct {
	// onWrite, when set, runs just before any change to the value. The SDK
	// uses it to snapshot a value before a command changes it, so that a
	// failed command can be undone, and an ORMap to pass the hook to the
	// values it holds.
	onWrite func()
}

func (b *crdtBase) base() *crdtBase { return b }

// willWrite announces a change.
func (b *crdtBase) willWrite() {
	if b.onWrite != nil {
		b.onWrite()
	}
}

// anyKey is the comparable form of an Any: the proxy compares elements and
// keys by type URL and bytes.
type anyKey struct {
	typeURL string
	value   string
}

// keyOf returns the comparable form of a; a nil Any is the empty one.
func keyOf(a *anypb.Any) anyKey {
	return anyKey{typeURL: a.GetTypeUrl(), value: string(a.GetValue())}
}

// toAny returns a new Any for k.
func (k anyKey) toAny() *anypb.Any {
	return &anypb.Any{TypeUrl: k.typeURL, Value: []byte(k.value)}
}

func compareKeys(a, b anyKey) int {
	if c := cmp.Compare(a.typeURL, b.typeURL); c != 0 {
		return c
	}
	return cmp.Compare(a.value, b.value)
}

// sortedAnys returns the keys of m as new Anys in a stable order: by type
// URL, then by bytes.
func sortedAnys[V any](m map[anyKey]V) []*anypb.Any {
	keys := make([]anyKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	out := make([]*anypb.Any, len(keys))
	for i, k := range keys {
		out[i] = k.toAny()
	}
	return out
}

// newFromState returns a value built from a full state.
func newFromState(s *protocol.CrdtState) (CRDT, error) {
	v, err := newForKind(stateKind(s))
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := v.applyState(s); err != nil {
		return nil, err
	}
	return v, nil
}

// newForDelta returns an empty value of the kind a delta applies to.
func newForDelta(d *protocol.CrdtDelta) (CRDT, error) {
	v, err := newForKind(deltaKind(d))
	if err != nil {
		return nil, fmt.Errorf("delta: %w", err)
	}
	return v, nil
}

// errNoKind reports a state or delta with no case of its oneof set.
var errNoKind = errors.New("no CRDT type set")

func newForKind(kind string) (CRDT, error) {
	switch kind {
	case "gcounter":
		return NewGCounter(), nil
	case "pncounter":
		return NewPNCounter(), nil
	case "gset":
		return NewGSet(), nil
	case "orset":
		return NewORSet(), nil
	case "lwwregister":
		return &LWWRegister{value: &anypb.Any{}}, nil
	case "flag":
		return NewFlag(), nil
	case "ormap":
		return NewORMap(), nil
	case "vote":
		return NewVote(), nil
	default:
		return nil, errNoKind
	}
}

// stateKind names the CRDT type of a full state, or "" if none is set.
func stateKind(s *protocol.CrdtState) string {
	switch s.GetState().(type) {
	case *protocol.CrdtState_Gcounter:
		return "gcounter"
	case *protocol.CrdtState_Pncounter:
		return "pncounter"
	case *protocol.CrdtState_Gset:
		return "gset"
	case *protocol.CrdtState_Orset:
		return "orset"
	case *protocol.CrdtState_Lwwregister:
		return "lwwregister"
	case *protocol.CrdtState_Flag:
		return "flag"
	case *protocol.CrdtState_Ormap:
		return "ormap"
	case *protocol.CrdtState_Vote:
		return "vote"
	default:
		return ""
	}
}

// deltaKind names the CRDT type of a delta, or "" if none is set.
func deltaKind(d *protocol.CrdtDelta) string {
	switch d.GetDelta().(type) {
	case *protocol.CrdtDelta_Gcounter:
		return "gcounter"
	case *protocol.CrdtDelta_Pncounter:
		return "pncounter"
	case *protocol.CrdtDelta_Gset:
		return "gset"
	case *protocol.CrdtDelta_Orset:
		return "orset"
	case *protocol.CrdtDelta_Lwwregister:
		return "lwwregister"
	case *protocol.CrdtDelta_Flag:
		return "flag"
	case *protocol.CrdtDelta_Ormap:
		return "ormap"
	case *protocol.CrdtDelta_Vote:
		return "vote"
	default:
		return ""
	}
}

// kindOf names the CRDT type of a value.
func kindOf(v CRDT) string {
	switch v.(type) {
	case *GCounter:
		return "gcounter"
	case *PNCounter:
		return "pncounter"
	case *GSet:
		return "gset"
	case *ORSet:
		return "orset"
	case *LWWRegister:
		return "lwwregister"
	case *Flag:
		return "flag"
	case *ORMap:
		return "ormap"
	case *Vote:
		return "vote"
	default:
		return ""
	}
}

// mismatch reports a state or delta of another CRDT type than the value.
func mismatch(what string, got string, v CRDT) error {
	if got == "" {
		got = "none"
	}
	return fmt.Errorf("apply %s: got a %s %s, the value is a %s", what, got, what, kindOf(v))
}
