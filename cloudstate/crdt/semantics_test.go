package crdt

import (
	"errors"
	"math"
	"testing"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
)

func update(d *protocol.CrdtDelta) *protocol.CrdtStateAction {
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{Update: d}}
}

func create(st *protocol.CrdtState) *protocol.CrdtStateAction {
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Create{Create: st}}
}

func orsetDelta(cleared bool, removed, added []*anypb.Any) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: &protocol.ORSetDelta{
		Cleared: cleared, Removed: removed, Added: added,
	}}}
}

func orsetState(items ...*anypb.Any) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Orset{Orset: &protocol.ORSetState{Items: items}}}
}

func gcounterState(v uint64) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Gcounter{Gcounter: &protocol.GCounterState{Value: v}}}
}

func gcounterDelta(inc uint64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{Gcounter: &protocol.GCounterDelta{Increment: inc}}}
}

func lwwDelta(v *anypb.Any, clock protocol.CrdtClock, custom int64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{
		Value: v, Clock: clock, CustomClockValue: custom,
	}}}
}

func voteDelta(self bool) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: self}}}
}

func flagDelta(v bool) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{Flag: &protocol.FlagDelta{Value: v}}}
}

func ormapDelta(d *protocol.ORMapDelta) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: d}}
}

// mustApply applies action to node's replica cur and returns the result.
func mustApply(t testing.TB, cur CRDT, node NodeID, now int64, action *protocol.CrdtStateAction) Applied {
	t.Helper()
	out, err := Apply(cur, node, now, action)
	if err != nil {
		t.Fatalf("Apply on %s: %v", node, err)
	}
	return out
}

// mustMerge merges each of others into c, through the encoding.
func mustMerge(t testing.TB, c CRDT, others ...CRDT) {
	t.Helper()
	for _, o := range others {
		if err := c.Merge(mustUnmarshal(t, mustMarshal(t, o))); err != nil {
			t.Fatalf("Merge: %v", err)
		}
	}
}

// wantView fails the test unless node's view of c is want.
func wantView(t *testing.T, c CRDT, m Membership, want *protocol.CrdtState) {
	t.Helper()
	if diff := cmp.Diff(want, View(c, m), protocmp.Transform()); diff != "" {
		t.Errorf("view on %s (-want +got):\n%s", m.Self, diff)
	}
}

func TestORSetAddWinsOverConcurrentRemove(t *testing.T) {
	t.Parallel()
	x := str("x")
	a := mustApply(t, nil, "a", 1, update(orsetDelta(false, nil, []*anypb.Any{x}))).Value
	b := a.Clone()
	removal := mustApply(t, b, "b", 2, update(orsetDelta(false, []*anypb.Any{x}, nil)))
	c := mustApply(t, nil, "c", 2, update(orsetDelta(false, nil, []*anypb.Any{x})))

	mustMerge(t, a, removal.Delta, c.Delta)
	mustMerge(t, b, c.Delta)
	wantView(t, a, everyone, orsetState(x))
	wantView(t, b, everyone, orsetState(x))
	sameReplica(t, "a and b", a, b)
}

func TestORSetClearRemovesOnlyWhatItSaw(t *testing.T) {
	t.Parallel()
	x, y := str("x"), str("y")
	a := mustApply(t, nil, "a", 1, update(orsetDelta(false, nil, []*anypb.Any{x})))
	b := mustApply(t, nil, "b", 1, update(orsetDelta(false, nil, []*anypb.Any{y}))).Value
	mustMerge(t, b, a.Delta)

	clear := mustApply(t, a.Value, "a", 2, update(orsetDelta(true, nil, nil)))
	if clear.Delta == nil {
		t.Fatal("clear gave no delta")
	}
	mustMerge(t, b, clear.Delta)
	wantView(t, b, everyone, orsetState(y))
}

func TestORSetOutOfOrderDeltas(t *testing.T) {
	t.Parallel()
	x, y := str("x"), str("y")
	var deltas []CRDT
	a := CRDT(nil)
	for i, d := range []*protocol.CrdtDelta{
		orsetDelta(false, nil, []*anypb.Any{x}),
		orsetDelta(false, nil, []*anypb.Any{y}),
		orsetDelta(false, []*anypb.Any{x}, nil),
		orsetDelta(false, nil, []*anypb.Any{x}),
		orsetDelta(true, nil, []*anypb.Any{y}),
	} {
		out := mustApply(t, a, "a", int64(i), update(d))
		a = out.Value
		deltas = append(deltas, out.Delta)
	}
	b := deltas[4].Clone()
	for _, i := range []int{3, 1, 4, 0, 2, 2} {
		mustMerge(t, b, deltas[i])
	}
	sameReplica(t, "replica against its deltas in reverse", a, b)
	wantView(t, b, everyone, orsetState(y))
}

func TestORMapUpdateWinsOverConcurrentRemove(t *testing.T) {
	t.Parallel()
	k, x, y := str("k"), str("x"), str("y")
	a := mustApply(t, nil, "a", 1, create(&protocol.CrdtState{State: &protocol.CrdtState_Ormap{
		Ormap: &protocol.ORMapState{Entries: []*protocol.ORMapEntry{{Key: k, Value: orsetState(x)}}},
	}})).Value
	b := a.Clone()

	removal := mustApply(t, b, "b", 2, update(ormapDelta(&protocol.ORMapDelta{Removed: []*anypb.Any{k}})))
	wantView(t, removal.Value, everyone, &protocol.CrdtState{State: &protocol.CrdtState_Ormap{
		Ormap: &protocol.ORMapState{},
	}})
	upd := mustApply(t, a, "a", 2, update(ormapDelta(&protocol.ORMapDelta{
		Updated: []*protocol.ORMapEntryDelta{{Key: k, Delta: orsetDelta(false, nil, []*anypb.Any{y})}},
	})))

	mustMerge(t, upd.Value, removal.Delta)
	mustMerge(t, removal.Value, upd.Delta)
	want := &protocol.CrdtState{State: &protocol.CrdtState_Ormap{Ormap: &protocol.ORMapState{
		Entries: []*protocol.ORMapEntry{{Key: k, Value: orsetState(y)}},
	}}}
	wantView(t, upd.Value, everyone, want)
	wantView(t, removal.Value, everyone, want)
}

func TestORMapRemoveThenPutAgain(t *testing.T) {
	t.Parallel()
	// A key removed and put again must not bring back the old value on a
	// node that sees the new put before the removal.
	k := str("k")
	put := func(v uint64) *protocol.CrdtStateAction {
		return update(ormapDelta(&protocol.ORMapDelta{
			Added: []*protocol.ORMapEntry{{Key: k, Value: gcounterState(v)}},
		}))
	}
	first := mustApply(t, nil, "a", 1, put(5))
	b := first.Delta.Clone()
	removal := mustApply(t, first.Value, "a", 2, update(ormapDelta(&protocol.ORMapDelta{Removed: []*anypb.Any{k}})))
	again := mustApply(t, removal.Value, "a", 3, put(1))

	mustMerge(t, b, again.Delta, removal.Delta)
	want := &protocol.CrdtState{State: &protocol.CrdtState_Ormap{Ormap: &protocol.ORMapState{
		Entries: []*protocol.ORMapEntry{{Key: k, Value: gcounterState(1)}},
	}}}
	wantView(t, b, everyone, want)
	sameReplica(t, "a and b", again.Value, b)
}

func TestORMapKindConflict(t *testing.T) {
	t.Parallel()
	k, x := str("k"), str("x")
	putA := mustApply(t, nil, "a", 1, update(ormapDelta(&protocol.ORMapDelta{
		Added: []*protocol.ORMapEntry{{Key: k, Value: gcounterState(5)}},
	})))
	putB := mustApply(t, nil, "b", 1, update(ormapDelta(&protocol.ORMapDelta{
		Added: []*protocol.ORMapEntry{{Key: k, Value: orsetState(x)}},
	})))
	a, b := putA.Value, putB.Value
	mustMerge(t, a, putB.Delta)
	mustMerge(t, b, putA.Delta)
	sameReplica(t, "a and b", a, b)
	showsSet := &protocol.CrdtState{State: &protocol.CrdtState_Ormap{Ormap: &protocol.ORMapState{
		Entries: []*protocol.ORMapEntry{{Key: k, Value: orsetState(x)}},
	}}}
	wantView(t, a, everyone, showsSet)

	ignored := mustApply(t, a, "a", 2, update(ormapDelta(&protocol.ORMapDelta{
		Updated: []*protocol.ORMapEntryDelta{{Key: k, Delta: gcounterDelta(1)}},
	})))
	if ignored.Delta != nil {
		t.Errorf("update of the hidden kind gave delta %v", View(ignored.Delta, everyone))
	}
	wantView(t, ignored.Value, everyone, showsSet)

	removal := mustApply(t, ignored.Value, "a", 3, update(ormapDelta(&protocol.ORMapDelta{Removed: []*anypb.Any{k}})))
	mustMerge(t, b, removal.Delta)
	empty := &protocol.CrdtState{State: &protocol.CrdtState_Ormap{Ormap: &protocol.ORMapState{}}}
	wantView(t, b, everyone, empty)
	wantView(t, removal.Value, everyone, empty)
}

func TestLWWRegisterClocks(t *testing.T) {
	t.Parallel()
	v1, v2 := str("one"), str("two")
	tests := []struct {
		name      string
		first     *protocol.CrdtDelta
		second    *protocol.CrdtDelta
		firstAt   int64
		secondAt  int64
		wantValue *anypb.Any
	}{
		{
			name:  "default clock: the later write wins",
			first: lwwDelta(v1, protocol.CrdtClock_DEFAULT, 0), firstAt: 100,
			second: lwwDelta(v2, protocol.CrdtClock_DEFAULT, 0), secondAt: 50,
			wantValue: v2,
		},
		{
			name:  "reverse clock: the first write wins",
			first: lwwDelta(v1, protocol.CrdtClock_REVERSE, 0), firstAt: 100,
			second: lwwDelta(v2, protocol.CrdtClock_REVERSE, 0), secondAt: 200,
			wantValue: v1,
		},
		{
			name:  "custom clock: a lower value loses",
			first: lwwDelta(v1, protocol.CrdtClock_CUSTOM, 5), firstAt: 1,
			second: lwwDelta(v2, protocol.CrdtClock_CUSTOM, 3), secondAt: 2,
			wantValue: v1,
		},
		{
			name:  "custom clock: an equal value from the same node wins",
			first: lwwDelta(v1, protocol.CrdtClock_CUSTOM, 5), firstAt: 1,
			second: lwwDelta(v2, protocol.CrdtClock_CUSTOM, 5), secondAt: 2,
			wantValue: v2,
		},
		{
			name:  "auto-increment clock: a lower value still wins",
			first: lwwDelta(v1, protocol.CrdtClock_CUSTOM, 5), firstAt: 1,
			second: lwwDelta(v2, protocol.CrdtClock_CUSTOM_AUTO_INCREMENT, 3), secondAt: 2,
			wantValue: v2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			first := mustApply(t, nil, "a", tt.firstAt, update(tt.first))
			second := mustApply(t, first.Value, "a", tt.secondAt, update(tt.second))
			want := &protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{
				Lwwregister: &protocol.LWWRegisterState{Value: tt.wantValue},
			}}
			wantView(t, second.Value, everyone, want)
			if proto.Equal(tt.wantValue, v1) != (second.Delta == nil) {
				t.Errorf("losing write gave delta %v, winning write none, or the reverse", second.Delta)
			}
			other := first.Delta.Clone()
			if second.Delta != nil {
				mustMerge(t, other, second.Delta)
			}
			wantView(t, other, everyone, want)
		})
	}
}

func TestLWWRegisterConcurrentWrites(t *testing.T) {
	t.Parallel()
	v1, v2 := str("one"), str("two")
	tests := []struct {
		name   string
		a, b   *protocol.CrdtDelta
		aAt    int64
		bAt    int64
		winner *anypb.Any
	}{
		{"higher timestamp", lwwDelta(v1, 0, 0), lwwDelta(v2, 0, 0), 10, 20, v2},
		{"tie goes to the lower node", lwwDelta(v1, 0, 0), lwwDelta(v2, 0, 0), 10, 10, v1},
		{"reverse: earlier wins", lwwDelta(v1, 1, 0), lwwDelta(v2, 1, 0), 10, 20, v1},
		{"custom", lwwDelta(v1, 2, 9), lwwDelta(v2, 2, 3), 0, 0, v1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := mustApply(t, nil, "a", tt.aAt, update(tt.a))
			b := mustApply(t, nil, "b", tt.bAt, update(tt.b))
			mustMerge(t, a.Value, b.Delta)
			mustMerge(t, b.Value, a.Delta)
			want := &protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{
				Lwwregister: &protocol.LWWRegisterState{Value: tt.winner},
			}}
			wantView(t, a.Value, everyone, want)
			wantView(t, b.Value, everyone, want)
		})
	}
}

func TestVoteMembership(t *testing.T) {
	t.Parallel()
	votes := map[NodeID]bool{"a": true, "b": true, "c": false, "d": true}
	var all CRDT
	for _, n := range []NodeID{"a", "b", "c", "d"} {
		out := mustApply(t, nil, n, 1, update(voteDelta(votes[n])))
		if all == nil {
			all = out.Value
		} else {
			mustMerge(t, all, out.Delta)
		}
	}
	vote := func(forIt, total uint32, self bool) *protocol.CrdtState {
		return &protocol.CrdtState{State: &protocol.CrdtState_Vote{Vote: &protocol.VoteState{
			VotesFor: forIt, TotalVoters: total, SelfVote: self,
		}}}
	}
	tests := []struct {
		name string
		m    Membership
		want *protocol.CrdtState
	}{
		{"everyone alive", Membership{Self: "a", Alive: []NodeID{"a", "b", "c", "d"}}, vote(3, 4, true)},
		{"b left", Membership{Self: "a", Alive: []NodeID{"a", "c", "d"}}, vote(2, 3, true)},
		{"dead d never counts", Membership{Self: "c", Alive: []NodeID{"a", "b", "c"}}, vote(2, 3, false)},
		{"self not alive", Membership{Self: "a", Alive: []NodeID{"b", "c"}}, vote(1, 2, false)},
		{"duplicates count once", Membership{Self: "b", Alive: []NodeID{"b", "b", "c"}}, vote(1, 2, true)},
		{"unknown member votes against", Membership{Self: "e", Alive: []NodeID{"a", "e"}}, vote(1, 2, false)},
		{"no members", Membership{Self: "a"}, vote(0, 0, false)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantView(t, all, tt.m, tt.want)
		})
	}
}

func TestVoteChangesIncrementOwnCounter(t *testing.T) {
	t.Parallel()
	m := Membership{Self: "a", Alive: []NodeID{"a", "b"}}
	a := mustApply(t, nil, "a", 0, create(&protocol.CrdtState{State: &protocol.CrdtState_Vote{
		Vote: &protocol.VoteState{VotesFor: 7, TotalVoters: 9, SelfVote: true},
	}}))
	b := mustApply(t, nil, "b", 0, update(voteDelta(true)))
	mustMerge(t, a.Value, b.Delta)
	wantView(t, a.Value, m, &protocol.CrdtState{State: &protocol.CrdtState_Vote{
		Vote: &protocol.VoteState{VotesFor: 2, TotalVoters: 2, SelfVote: true},
	}})

	same := mustApply(t, a.Value, "a", 1, update(voteDelta(true)))
	if same.Delta != nil {
		t.Error("repeating the vote gave a delta")
	}
	against := mustApply(t, a.Value, "a", 2, update(voteDelta(false)))
	again := mustApply(t, against.Value, "a", 3, update(voteDelta(true)))
	if got := against.Value.(*Vote).st.(*voteStore).counters()["a"]; got != 3 {
		t.Errorf("counter of a after for, against, for = %d, want 3", got)
	}
	// b saw only the last change: a's newest counter replaces the older.
	bv := b.Value
	mustMerge(t, bv, again.Delta, a.Delta)
	wantView(t, bv, Membership{Self: "b", Alive: []NodeID{"a", "b"}}, &protocol.CrdtState{
		State: &protocol.CrdtState_Vote{Vote: &protocol.VoteState{VotesFor: 2, TotalVoters: 2, SelfVote: true}},
	})
}

func TestApplyCreate(t *testing.T) {
	t.Parallel()
	x, y := str("x"), str("y")
	tests := []struct {
		name  string
		state *protocol.CrdtState
		want  *protocol.CrdtState
	}{
		{"gcounter", gcounterState(7), gcounterState(7)},
		{
			"pncounter",
			&protocol.CrdtState{State: &protocol.CrdtState_Pncounter{Pncounter: &protocol.PNCounterState{Value: -3}}},
			&protocol.CrdtState{State: &protocol.CrdtState_Pncounter{Pncounter: &protocol.PNCounterState{Value: -3}}},
		},
		{
			"gset",
			&protocol.CrdtState{State: &protocol.CrdtState_Gset{Gset: &protocol.GSetState{Items: []*anypb.Any{y, x, y}}}},
			&protocol.CrdtState{State: &protocol.CrdtState_Gset{Gset: &protocol.GSetState{Items: []*anypb.Any{x, y}}}},
		},
		{"orset", orsetState(y, x), orsetState(x, y)},
		{
			"lwwregister drops the clock",
			&protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{Lwwregister: &protocol.LWWRegisterState{
				Value: x, Clock: protocol.CrdtClock_CUSTOM, CustomClockValue: 4,
			}}},
			&protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{Lwwregister: &protocol.LWWRegisterState{Value: x}}},
		},
		{
			"lwwregister without value holds the empty Any",
			&protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{Lwwregister: &protocol.LWWRegisterState{}}},
			&protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{Lwwregister: &protocol.LWWRegisterState{Value: &anypb.Any{}}}},
		},
		{
			"flag",
			&protocol.CrdtState{State: &protocol.CrdtState_Flag{Flag: &protocol.FlagState{Value: true}}},
			&protocol.CrdtState{State: &protocol.CrdtState_Flag{Flag: &protocol.FlagState{Value: true}}},
		},
		{
			"vote takes only self_vote",
			&protocol.CrdtState{State: &protocol.CrdtState_Vote{Vote: &protocol.VoteState{VotesFor: 5, TotalVoters: 5, SelfVote: true}}},
			&protocol.CrdtState{State: &protocol.CrdtState_Vote{Vote: &protocol.VoteState{VotesFor: 1, TotalVoters: 1, SelfVote: true}}},
		},
		{
			"vote against",
			&protocol.CrdtState{State: &protocol.CrdtState_Vote{Vote: &protocol.VoteState{}}},
			&protocol.CrdtState{State: &protocol.CrdtState_Vote{Vote: &protocol.VoteState{TotalVoters: 1}}},
		},
		{
			"ormap",
			&protocol.CrdtState{State: &protocol.CrdtState_Ormap{Ormap: &protocol.ORMapState{Entries: []*protocol.ORMapEntry{
				{Key: y, Value: orsetState(x)},
				{Key: x, Value: gcounterState(1)},
				{Key: y, Value: gcounterState(2)},
			}}}},
			&protocol.CrdtState{State: &protocol.CrdtState_Ormap{Ormap: &protocol.ORMapState{Entries: []*protocol.ORMapEntry{
				{Key: x, Value: gcounterState(1)},
				{Key: y, Value: gcounterState(2)},
			}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := mustApply(t, nil, "a", 10, create(tt.state))
			if out.Deleted || out.Value == nil || out.Delta == nil {
				t.Fatalf("Apply(create) = %+v, want a value and a delta", out)
			}
			alone := Membership{Self: "a", Alive: []NodeID{"a"}}
			wantView(t, out.Value, alone, tt.want)
			wantView(t, out.Delta, alone, tt.want)
			model, err := ApplyToState(nil, create(tt.state))
			if err != nil {
				t.Fatal(err)
			}
			if tt.name != "vote takes only self_vote" && tt.name != "vote against" {
				if diff := cmp.Diff(tt.want, model, protocmp.Transform()); diff != "" {
					t.Errorf("ApplyToState (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestApplyNoChange(t *testing.T) {
	t.Parallel()
	x := str("x")
	tests := []struct {
		name   string
		first  *protocol.CrdtStateAction
		second *protocol.CrdtStateAction
	}{
		{"gcounter by zero", update(gcounterDelta(1)), update(gcounterDelta(0))},
		{"orset add present", update(orsetDelta(false, nil, []*anypb.Any{x})), update(orsetDelta(false, nil, []*anypb.Any{x}))},
		{"orset remove absent", update(orsetDelta(false, nil, nil)), update(orsetDelta(false, []*anypb.Any{x}, nil))},
		{"flag on again", update(flagDelta(true)), update(flagDelta(true))},
		{"vote unchanged", update(voteDelta(true)), update(voteDelta(true))},
		{"ormap update of missing key", update(ormapDelta(&protocol.ORMapDelta{})), update(ormapDelta(&protocol.ORMapDelta{
			Updated: []*protocol.ORMapEntryDelta{{Key: x, Delta: gcounterDelta(1)}},
		}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			first := mustApply(t, nil, "a", 1, tt.first)
			if first.Delta == nil {
				t.Fatal("first action on no value gave no delta")
			}
			before := mustMarshal(t, first.Value)
			second := mustApply(t, first.Value, "a", 2, tt.second)
			if second.Delta != nil {
				t.Errorf("no-op gave delta %v", View(second.Delta, everyone))
			}
			sameReplica(t, "after a no-op", mustUnmarshal(t, before), second.Value)
		})
	}
}

func TestApplyDelete(t *testing.T) {
	t.Parallel()
	cur := mustApply(t, nil, "a", 1, update(gcounterDelta(1))).Value
	out := mustApply(t, cur, "a", 2, &protocol.CrdtStateAction{
		Action: &protocol.CrdtStateAction_Delete{Delete: &protocol.CrdtDelete{}},
	})
	if !out.Deleted || out.Value != nil || out.Delta != nil {
		t.Errorf("Apply(delete) = %+v, want only Deleted", out)
	}
}

func TestApplyErrors(t *testing.T) {
	t.Parallel()
	x := str("x")
	deep := gcounterState(1)
	for range MaxDepth + 1 {
		deep = &protocol.CrdtState{State: &protocol.CrdtState_Ormap{Ormap: &protocol.ORMapState{
			Entries: []*protocol.ORMapEntry{{Key: x, Value: deep}},
		}}}
	}
	flagOn := mustApply(t, nil, "a", 1, update(flagDelta(true))).Value
	counter := mustApply(t, nil, "a", 1, update(gcounterDelta(math.MaxInt64-1))).Value
	pn := mustApply(t, nil, "a", 1, update(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{
		Pncounter: &protocol.PNCounterDelta{Change: math.MinInt64 + 1},
	}})).Value
	mapWithFlag := mustApply(t, nil, "a", 1, create(&protocol.CrdtState{State: &protocol.CrdtState_Ormap{
		Ormap: &protocol.ORMapState{Entries: []*protocol.ORMapEntry{
			{Key: x, Value: &protocol.CrdtState{State: &protocol.CrdtState_Flag{Flag: &protocol.FlagState{Value: true}}}},
		}},
	}})).Value
	tests := []struct {
		name   string
		cur    CRDT
		node   NodeID
		action *protocol.CrdtStateAction
	}{
		{"nil action", nil, "a", nil},
		{"no action", nil, "a", &protocol.CrdtStateAction{}},
		{"empty node", nil, "", update(gcounterDelta(1))},
		{"empty delta", nil, "a", update(&protocol.CrdtDelta{})},
		{"empty state", nil, "a", create(&protocol.CrdtState{})},
		{"kind mismatch", counter, "a", update(flagDelta(true))},
		{"create of another kind", counter, "a", create(orsetState())},
		{"negative gcounter increment", nil, "a", update(gcounterDelta(1 << 63))},
		{"negative gcounter state", nil, "a", create(gcounterState(math.MaxUint64))},
		{"gcounter overflow", counter, "a", update(gcounterDelta(2))},
		{"pncounter overflow", pn, "a", update(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{
			Pncounter: &protocol.PNCounterDelta{Change: -2},
		}})},
		{"flag switched off", flagOn, "a", update(flagDelta(false))},
		{"nested flag switched off", mapWithFlag, "a", update(ormapDelta(&protocol.ORMapDelta{
			Removed: []*anypb.Any{str("other")},
			Updated: []*protocol.ORMapEntryDelta{{Key: x, Delta: flagDelta(false)}},
		}))},
		{"nil orset element", nil, "a", update(orsetDelta(false, nil, []*anypb.Any{nil}))},
		{"nil ormap key", nil, "a", update(ormapDelta(&protocol.ORMapDelta{
			Added: []*protocol.ORMapEntry{{Value: gcounterState(1)}},
		}))},
		{"nil ormap value", nil, "a", update(ormapDelta(&protocol.ORMapDelta{
			Added: []*protocol.ORMapEntry{{Key: x}},
		}))},
		{"empty nested delta", nil, "a", update(ormapDelta(&protocol.ORMapDelta{
			Updated: []*protocol.ORMapEntryDelta{{Key: x}},
		}))},
		{"unknown clock", nil, "a", update(lwwDelta(x, 9, 0))},
		{"too deep", nil, "a", create(deep)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var before []byte
			if tt.cur != nil {
				before = mustMarshal(t, tt.cur)
			}
			out, err := Apply(tt.cur, tt.node, 5, tt.action)
			if err == nil {
				t.Fatalf("Apply = %+v, want an error", out)
			}
			if tt.cur != nil {
				sameReplica(t, "cur after a failed Apply", mustUnmarshal(t, before), tt.cur)
			}
		})
	}
}

func TestMergeErrors(t *testing.T) {
	t.Parallel()
	counter, _ := New(KindGCounter)
	set, _ := New(KindORSet)
	if err := counter.Merge(set); err == nil {
		t.Error("Merge of another kind succeeded")
	}
	if err := counter.Merge(nil); err == nil {
		t.Error("Merge of nil succeeded")
	}
	if err := counter.Merge((*GCounter)(nil)); err == nil {
		t.Error("Merge of a nil GCounter succeeded")
	}
	if _, err := New(0); err == nil {
		t.Error("New(0) succeeded")
	}
	if got := View(nil, everyone); got != nil {
		t.Errorf("View(nil) = %v, want nil", got)
	}
	if !errors.Is(counter.Merge(counter), nil) {
		t.Error("Merge with itself failed")
	}
}
