package crdt

import (
	"math"
	"testing"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
)

// mustApply applies action to node's replica cur and returns the result.
func mustApply(
	t testing.TB, cur CRDT, node NodeID, now int64, action *protocol.CrdtStateAction,
) Applied {
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
	a := mustApply(t, nil, "a", 1, update(orsetDelta(false, nil, anys(x)))).Value
	b := a.Clone()
	removal := mustApply(t, b, "b", 2, update(orsetDelta(false, anys(x), nil)))
	c := mustApply(t, nil, "c", 2, update(orsetDelta(false, nil, anys(x))))

	mustMerge(t, a, removal.Delta, c.Delta)
	mustMerge(t, b, c.Delta)
	wantView(t, a, everyone, orsetState(x))
	wantView(t, b, everyone, orsetState(x))
	sameReplica(t, "a and b", a, b)
}

func TestORSetClearRemovesOnlyWhatItSaw(t *testing.T) {
	t.Parallel()
	x, y := str("x"), str("y")
	a := mustApply(t, nil, "a", 1, update(orsetDelta(false, nil, anys(x))))
	b := mustApply(t, nil, "b", 1, update(orsetDelta(false, nil, anys(y)))).Value
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
		orsetDelta(false, nil, anys(x)),
		orsetDelta(false, nil, anys(y)),
		orsetDelta(false, anys(x), nil),
		orsetDelta(false, nil, anys(x)),
		orsetDelta(true, nil, anys(y)),
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
	a := mustApply(t, nil, "a", 1, create(ormapState(entry(k, orsetState(x))))).Value
	b := a.Clone()

	removal := mustApply(t, b, "b", 2, update(ormapDelta(&protocol.ORMapDelta{Removed: anys(k)})))
	wantView(t, removal.Value, everyone, ormapState())
	upd := mustApply(t, a, "a", 2, update(ormapDelta(&protocol.ORMapDelta{
		Updated: []*protocol.ORMapEntryDelta{entryDelta(k, orsetDelta(false, nil, anys(y)))},
	})))

	mustMerge(t, upd.Value, removal.Delta)
	mustMerge(t, removal.Value, upd.Delta)
	want := ormapState(entry(k, orsetState(y)))
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
			Added: []*protocol.ORMapEntry{entry(k, gcounterState(v))},
		}))
	}
	remove := update(ormapDelta(&protocol.ORMapDelta{Removed: anys(k)}))
	first := mustApply(t, nil, "a", 1, put(5))
	b := first.Delta.Clone()
	removal := mustApply(t, first.Value, "a", 2, remove)
	again := mustApply(t, removal.Value, "a", 3, put(1))

	mustMerge(t, b, again.Delta, removal.Delta)
	wantView(t, b, everyone, ormapState(entry(k, gcounterState(1))))
	sameReplica(t, "a and b", again.Value, b)
}

func TestORMapKindConflict(t *testing.T) {
	t.Parallel()
	k, x := str("k"), str("x")
	put := func(v *protocol.CrdtState) *protocol.CrdtStateAction {
		return update(ormapDelta(&protocol.ORMapDelta{Added: []*protocol.ORMapEntry{entry(k, v)}}))
	}
	putA := mustApply(t, nil, "a", 1, put(gcounterState(5)))
	putB := mustApply(t, nil, "b", 1, put(orsetState(x)))
	a, b := putA.Value, putB.Value
	mustMerge(t, a, putB.Delta)
	mustMerge(t, b, putA.Delta)
	sameReplica(t, "a and b", a, b)
	showsSet := ormapState(entry(k, orsetState(x)))
	wantView(t, a, everyone, showsSet)

	ignored := mustApply(t, a, "a", 2, update(ormapDelta(&protocol.ORMapDelta{
		Updated: []*protocol.ORMapEntryDelta{entryDelta(k, gcounterDelta(1))},
	})))
	if ignored.Delta != nil {
		t.Errorf("update of the hidden kind gave delta %v", View(ignored.Delta, everyone))
	}
	wantView(t, ignored.Value, everyone, showsSet)

	remove := update(ormapDelta(&protocol.ORMapDelta{Removed: anys(k)}))
	removal := mustApply(t, ignored.Value, "a", 3, remove)
	mustMerge(t, b, removal.Delta)
	wantView(t, b, everyone, ormapState())
	wantView(t, removal.Value, everyone, ormapState())
}

func TestLWWRegisterClocks(t *testing.T) {
	t.Parallel()
	v1, v2 := str("one"), str("two")
	const (
		def     = protocol.CrdtClock_DEFAULT
		reverse = protocol.CrdtClock_REVERSE
		custom  = protocol.CrdtClock_CUSTOM
		autoInc = protocol.CrdtClock_CUSTOM_AUTO_INCREMENT
	)
	tests := []struct {
		name              string
		first, second     *protocol.CrdtDelta
		firstAt, secondAt int64
		want              *anypb.Any
	}{
		{"default: the later write wins", lwwDelta(v1, def, 0), lwwDelta(v2, def, 0), 100, 50, v2},
		{"reverse: the first write wins", lwwDelta(v1, reverse, 0), lwwDelta(v2, reverse, 0), 100, 200, v1},
		{"custom: a lower value loses", lwwDelta(v1, custom, 5), lwwDelta(v2, custom, 3), 1, 2, v1},
		{"custom: an equal value wins", lwwDelta(v1, custom, 5), lwwDelta(v2, custom, 5), 1, 2, v2},
		{"auto-increment: a lower value wins", lwwDelta(v1, custom, 5), lwwDelta(v2, autoInc, 3), 1, 2, v2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			first := mustApply(t, nil, "a", tt.firstAt, update(tt.first))
			second := mustApply(t, first.Value, "a", tt.secondAt, update(tt.second))
			want := lwwState(tt.want, 0, 0)
			wantView(t, second.Value, everyone, want)
			if lost := proto.Equal(tt.want, v1); lost != (second.Delta == nil) {
				t.Errorf("second write lost %v, gave delta %v", lost, second.Delta != nil)
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
		name     string
		a, b     *protocol.CrdtDelta
		aAt, bAt int64
		winner   *anypb.Any
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
			wantView(t, a.Value, everyone, lwwState(tt.winner, 0, 0))
			wantView(t, b.Value, everyone, lwwState(tt.winner, 0, 0))
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
	tests := []struct {
		name string
		m    Membership
		want *protocol.CrdtState
	}{
		{"everyone alive", Membership{"a", []NodeID{"a", "b", "c", "d"}}, voteState(3, 4, true)},
		{"b left", Membership{"a", []NodeID{"a", "c", "d"}}, voteState(2, 3, true)},
		{"dead d never counts", Membership{"c", []NodeID{"a", "b", "c"}}, voteState(2, 3, false)},
		{"self not alive", Membership{"a", []NodeID{"b", "c"}}, voteState(1, 2, false)},
		{"duplicates count once", Membership{"b", []NodeID{"b", "b", "c"}}, voteState(1, 2, true)},
		{"unknown member votes against", Membership{"e", []NodeID{"a", "e"}}, voteState(1, 2, false)},
		{"no members", Membership{Self: "a"}, voteState(0, 0, false)},
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
	ab := []NodeID{"a", "b"}
	a := mustApply(t, nil, "a", 0, create(voteState(7, 9, true)))
	b := mustApply(t, nil, "b", 0, update(voteDelta(true)))
	mustMerge(t, a.Value, b.Delta)
	wantView(t, a.Value, Membership{"a", ab}, voteState(2, 2, true))

	if same := mustApply(t, a.Value, "a", 1, update(voteDelta(true))); same.Delta != nil {
		t.Error("repeating the vote gave a delta")
	}
	against := mustApply(t, a.Value, "a", 2, update(voteDelta(false)))
	again := mustApply(t, against.Value, "a", 3, update(voteDelta(true)))
	if got := against.Value.(*Vote).st.(*voteStore).counters()["a"]; got != 3 {
		t.Errorf("counter of a after for, against, for = %d, want 3", got)
	}
	// b sees a's last change before its first: the newest counter wins.
	mustMerge(t, b.Value, again.Delta, a.Delta)
	wantView(t, b.Value, Membership{"b", ab}, voteState(2, 2, true))
}

func TestApplyCreate(t *testing.T) {
	t.Parallel()
	x, y := str("x"), str("y")
	tests := []struct {
		name      string
		state     *protocol.CrdtState
		want      *protocol.CrdtState
		wantModel *protocol.CrdtState
	}{
		{name: "gcounter", state: gcounterState(7), want: gcounterState(7)},
		{name: "pncounter", state: pncounterState(-3), want: pncounterState(-3)},
		{name: "gset", state: gsetState(y, x, y), want: gsetState(x, y)},
		{name: "orset", state: orsetState(y, x), want: orsetState(x, y)},
		{
			name:  "lwwregister drops the clock",
			state: lwwState(x, protocol.CrdtClock_CUSTOM, 4), want: lwwState(x, 0, 0),
		},
		{
			name:  "lwwregister without value holds the empty Any",
			state: lwwState(nil, 0, 0), want: lwwState(&anypb.Any{}, 0, 0),
		},
		{name: "flag", state: flagState(true), want: flagState(true)},
		{
			name:  "vote takes only self_vote",
			state: voteState(5, 5, true), want: voteState(1, 1, true), wantModel: voteState(5, 5, true),
		},
		{
			name:  "vote against",
			state: voteState(0, 0, false), want: voteState(0, 1, false), wantModel: voteState(0, 0, false),
		},
		{
			name: "ormap, a later duplicate key wins",
			state: ormapState(
				entry(y, orsetState(x)),
				entry(x, gcounterState(1)),
				entry(y, gcounterState(2)),
			),
			want: ormapState(entry(x, gcounterState(1)), entry(y, gcounterState(2))),
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
			wantModel := tt.wantModel
			if wantModel == nil {
				wantModel = tt.want
			}
			if diff := cmp.Diff(wantModel, model, protocmp.Transform()); diff != "" {
				t.Errorf("ApplyToState (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyNoChange(t *testing.T) {
	t.Parallel()
	x := str("x")
	tests := []struct {
		name          string
		first, second *protocol.CrdtDelta
	}{
		{"gcounter by zero", gcounterDelta(1), gcounterDelta(0)},
		{"orset add present", orsetDelta(false, nil, anys(x)), orsetDelta(false, nil, anys(x))},
		{"orset remove absent", orsetDelta(false, nil, nil), orsetDelta(false, anys(x), nil)},
		{"flag on again", flagDelta(true), flagDelta(true)},
		{"vote unchanged", voteDelta(true), voteDelta(true)},
		{
			"ormap update of missing key",
			ormapDelta(&protocol.ORMapDelta{}),
			ormapDelta(&protocol.ORMapDelta{
				Updated: []*protocol.ORMapEntryDelta{entryDelta(x, gcounterDelta(1))},
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			first := mustApply(t, nil, "a", 1, update(tt.first))
			if first.Delta == nil {
				t.Fatal("first action on no value gave no delta")
			}
			before := mustMarshal(t, first.Value)
			second := mustApply(t, first.Value, "a", 2, update(tt.second))
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
		deep = ormapState(entry(x, deep))
	}
	flagOn := mustApply(t, nil, "a", 1, update(flagDelta(true))).Value
	counter := mustApply(t, nil, "a", 1, update(gcounterDelta(math.MaxInt64-1))).Value
	pn := mustApply(t, nil, "a", 1, update(pncounterDelta(math.MinInt64+1))).Value
	mapWithFlag := mustApply(t, nil, "a", 1, create(ormapState(entry(x, flagState(true))))).Value
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
		{"pncounter overflow", pn, "a", update(pncounterDelta(-2))},
		{"flag switched off", flagOn, "a", update(flagDelta(false))},
		{"nested flag switched off", mapWithFlag, "a", update(ormapDelta(&protocol.ORMapDelta{
			Removed: anys(str("other")),
			Updated: []*protocol.ORMapEntryDelta{entryDelta(x, flagDelta(false))},
		}))},
		{"nil orset element", nil, "a", update(orsetDelta(false, nil, anys(nil)))},
		{"nil ormap key", nil, "a", update(ormapDelta(&protocol.ORMapDelta{
			Added: []*protocol.ORMapEntry{entry(nil, gcounterState(1))},
		}))},
		{"nil ormap value", nil, "a", update(ormapDelta(&protocol.ORMapDelta{
			Added: []*protocol.ORMapEntry{entry(x, nil)},
		}))},
		{"empty nested delta", nil, "a", update(ormapDelta(&protocol.ORMapDelta{
			Updated: []*protocol.ORMapEntryDelta{entryDelta(x, nil)},
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
	if err := counter.Merge(counter); err != nil {
		t.Errorf("Merge with itself: %v", err)
	}
	if _, err := New(0); err == nil {
		t.Error("New(0) succeeded")
	}
	if got := View(nil, everyone); got != nil {
		t.Errorf("View(nil) = %v, want nil", got)
	}
}

func TestAccessors(t *testing.T) {
	t.Parallel()
	x, y := str("x"), str("y")
	gc := mustApply(t, nil, "a", 1, update(gcounterDelta(4))).Value.(*GCounter)
	mustMerge(t, gc, mustApply(t, nil, "b", 1, update(gcounterDelta(3))).Delta)
	pn := mustApply(t, nil, "a", 1, update(pncounterDelta(-4))).Value.(*PNCounter)
	gs := mustApply(t, nil, "a", 1, update(gsetDelta(x, y, x))).Value.(*GSet)
	os := mustApply(t, nil, "a", 1, update(orsetDelta(false, nil, anys(x)))).Value.(*ORSet)
	fl := mustApply(t, nil, "a", 1, update(flagDelta(true))).Value.(*Flag)
	om := mustApply(t, nil, "a", 1, create(ormapState(entry(x, flagState(false))))).Value.(*ORMap)
	got := []any{gc.Value(), pn.Value(), gs.Len(), os.Len(), fl.Enabled(), om.Len()}
	want := []any{uint64(7), int64(-4), 2, 1, true, 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("accessors (-want +got):\n%s", diff)
	}
	for _, k := range allKinds {
		c, err := New(k)
		if err != nil || c.Kind() != k || k.String() == "" {
			t.Errorf("New(%v) = %v, %v", k, c, err)
		}
	}
}
