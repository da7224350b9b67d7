package crdt

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"google.golang.org/protobuf/types/known/anypb"
)

var (
	// errNoState reports a full state with no case of its oneof set.
	errNoState = errors.New("state has no value")
	// errNoDelta reports a delta with no case of its oneof set.
	errNoDelta = errors.New("delta has no value")
	// errNilAny reports a missing element or key.
	errNilAny = errors.New("missing element or key")
)

// checkState checks a full state from a user function for what no replica
// could hold, before any of it is applied. depth is the state's nesting
// depth.
func checkState(st *protocol.CrdtState, depth int) error {
	if depth > MaxDepth {
		return errDepth
	}
	switch x := st.GetState().(type) {
	case nil:
		return errNoState
	case *protocol.CrdtState_Gcounter:
		if v := x.Gcounter.GetValue(); v > math.MaxInt64 {
			return fmt.Errorf("gcounter value %d is negative as int64", v)
		}
	case *protocol.CrdtState_Gset:
		return checkAnys(x.Gset.GetItems())
	case *protocol.CrdtState_Orset:
		return checkAnys(x.Orset.GetItems())
	case *protocol.CrdtState_Lwwregister:
		return checkClock(x.Lwwregister.GetClock())
	case *protocol.CrdtState_Ormap:
		for _, e := range x.Ormap.GetEntries() {
			if e.GetKey() == nil {
				return fmt.Errorf("ormap entry: %w", errNilAny)
			}
			if err := checkState(e.GetValue(), depth+1); err != nil {
				return fmt.Errorf("ormap entry: %w", err)
			}
		}
	}
	return nil
}

// checkDelta checks a delta from a user function as checkState does a full
// state.
func checkDelta(d *protocol.CrdtDelta, depth int) error {
	if depth > MaxDepth {
		return errDepth
	}
	switch x := d.GetDelta().(type) {
	case nil:
		return errNoDelta
	case *protocol.CrdtDelta_Gcounter:
		if v := x.Gcounter.GetIncrement(); v > math.MaxInt64 {
			return fmt.Errorf("gcounter increment %d is negative as int64", v)
		}
	case *protocol.CrdtDelta_Gset:
		return checkAnys(x.Gset.GetAdded())
	case *protocol.CrdtDelta_Orset:
		if err := checkAnys(x.Orset.GetRemoved()); err != nil {
			return err
		}
		return checkAnys(x.Orset.GetAdded())
	case *protocol.CrdtDelta_Lwwregister:
		return checkClock(x.Lwwregister.GetClock())
	case *protocol.CrdtDelta_Ormap:
		return checkMapDelta(x.Ormap, depth)
	}
	return nil
}

// checkMapDelta checks an ORMapDelta at depth.
func checkMapDelta(x *protocol.ORMapDelta, depth int) error {
	if err := checkAnys(x.GetRemoved()); err != nil {
		return fmt.Errorf("ormap removed: %w", err)
	}
	for _, u := range x.GetUpdated() {
		if u.GetKey() == nil {
			return fmt.Errorf("ormap updated: %w", errNilAny)
		}
		if err := checkDelta(u.GetDelta(), depth+1); err != nil {
			return fmt.Errorf("ormap updated: %w", err)
		}
	}
	for _, e := range x.GetAdded() {
		if e.GetKey() == nil {
			return fmt.Errorf("ormap added: %w", errNilAny)
		}
		if err := checkState(e.GetValue(), depth+1); err != nil {
			return fmt.Errorf("ormap added: %w", err)
		}
	}
	return nil
}

// checkAnys returns errNilAny when an element of vs is nil.
func checkAnys(vs []*anypb.Any) error {
	if slices.Contains(vs, nil) {
		return errNilAny
	}
	return nil
}

// checkClock returns an error for a clock the protocol does not define.
func checkClock(c protocol.CrdtClock) error {
	if _, ok := protocol.CrdtClock_name[int32(c)]; !ok {
		return fmt.Errorf("unknown clock %d", c)
	}
	return nil
}
