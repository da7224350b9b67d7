package crdt

import (
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// TestObservedClearKeepsUnseenAdds replays a user function clearing a set
// while the replica already holds an element merged from another node that
// the function has not been told of: only what the function saw goes.
func TestObservedClearKeepsUnseenAdds(t *testing.T) {
	t.Parallel()
	m := Membership{Self: "a", Alive: []NodeID{"a", "b"}}
	replica := mustApply(t, nil, "a", 1, update(orsetDelta(false, nil, []*anypb.Any{str("old")}))).Value
	model := View(replica, m)
	remote := mustApply(t, nil, "b", 2, update(orsetDelta(false, nil, []*anypb.Any{str("new")}))).Value
	mustMerge(t, replica, remote)

	clear := update(orsetDelta(true, nil, nil))
	mustApply(t, replica, "a", 3, Observed(model, clear))
	wantView(t, replica, m, orsetState(str("new")))

	// Without the rewrite the clear removes the unseen element too.
	other := mustApply(t, nil, "a", 1, update(orsetDelta(false, nil, []*anypb.Any{str("old")}))).Value
	mustMerge(t, other, remote)
	mustApply(t, other, "a", 3, clear)
	wantView(t, other, m, orsetState())
}

func TestObservedClearOfMap(t *testing.T) {
	t.Parallel()
	m := Membership{Self: "a", Alive: []NodeID{"a", "b"}}
	replica := mustApply(t, nil, "a", 1, update(ormapDelta(&protocol.ORMapDelta{
		Added: []*protocol.ORMapEntry{
			entry(str("seen"), orsetState(str("x"))),
			entry(str("shared"), orsetState(str("y"))),
		},
	}))).Value
	model := View(replica, m)
	remote := mustApply(t, nil, "b", 2, update(ormapDelta(&protocol.ORMapDelta{
		Added: []*protocol.ORMapEntry{entry(str("unseen"), gcounterState(1))},
	}))).Value
	mustMerge(t, replica, remote)

	// The function clears the map.
	mustApply(t, replica, "a", 3, Observed(model, update(ormapDelta(&protocol.ORMapDelta{Cleared: true}))))
	wantView(t, replica, m, ormapState(entry(str("unseen"), gcounterState(1))))
}

func TestObservedLeavesOtherActionsAlone(t *testing.T) {
	t.Parallel()
	model := orsetState(str("a"))
	for _, action := range []*protocol.CrdtStateAction{
		update(orsetDelta(false, []*anypb.Any{str("a")}, nil)),
		create(orsetState(str("b"))),
		update(gcounterDelta(3)),
		{Action: &protocol.CrdtStateAction_Delete{Delete: &protocol.CrdtDelete{}}},
	} {
		if got := Observed(model, action); got != action {
			t.Errorf("Observed(%v) = %v, want the action itself", action, got)
		}
	}
	// A clear by a function that held nothing removes nothing.
	got := Observed(nil, update(orsetDelta(true, nil, []*anypb.Any{str("c")})))
	d := got.GetUpdate().GetOrset()
	if d.GetCleared() || len(d.GetRemoved()) != 0 || len(d.GetAdded()) != 1 {
		t.Errorf("Observed(nil, clear+add c) = %v, want only the add", got)
	}
}
