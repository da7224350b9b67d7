package crdt

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
)

// functionApplies returns what a user function holds after it applied a
// delta from the proxy to st, as the protocol tells it to: sets cleared,
// then removed, then added; maps cleared, removed, updated, then added; a
// Vote takes all three fields.
func functionApplies(t *testing.T, st *protocol.CrdtState, d *protocol.CrdtDelta) *protocol.CrdtState {
	t.Helper()
	st = proto.Clone(st).(*protocol.CrdtState)
	without := func(items []*anypb.Any, gone []*anypb.Any) []*anypb.Any {
		var out []*anypb.Any
		for _, v := range items {
			keep := true
			for _, g := range gone {
				keep = keep && !proto.Equal(v, g)
			}
			if keep {
				out = append(out, v)
			}
		}
		return out
	}
	switch x := d.Delta.(type) {
	case *protocol.CrdtDelta_Gcounter:
		st.GetGcounter().Value += x.Gcounter.Increment
	case *protocol.CrdtDelta_Pncounter:
		st.GetPncounter().Value += x.Pncounter.Change
	case *protocol.CrdtDelta_Gset:
		st.GetGset().Items = append(st.GetGset().Items, x.Gset.Added...)
	case *protocol.CrdtDelta_Orset:
		s := st.GetOrset()
		if x.Orset.Cleared {
			s.Items = nil
		}
		s.Items = append(without(s.Items, x.Orset.Removed), x.Orset.Added...)
	case *protocol.CrdtDelta_Lwwregister:
		st.GetLwwregister().Value = x.Lwwregister.Value
	case *protocol.CrdtDelta_Flag:
		st.GetFlag().Value = st.GetFlag().Value || x.Flag.Value
	case *protocol.CrdtDelta_Ormap:
		m := st.GetOrmap()
		if x.Ormap.Cleared {
			m.Entries = nil
		}
		var kept []*protocol.ORMapEntry
		for _, e := range m.Entries {
			if len(without([]*anypb.Any{e.Key}, x.Ormap.Removed)) == 1 {
				kept = append(kept, e)
			}
		}
		m.Entries = kept
		for _, u := range x.Ormap.Updated {
			found := false
			for _, e := range m.Entries {
				if proto.Equal(e.Key, u.Key) {
					e.Value = functionApplies(t, e.Value, u.Delta)
					found = true
				}
			}
			if !found {
				t.Fatalf("update of missing key %v", u.Key)
			}
		}
		m.Entries = append(m.Entries, x.Ormap.Added...)
	case *protocol.CrdtDelta_Vote:
		*st.GetVote() = protocol.VoteState{
			VotesFor:    uint32(x.Vote.VotesFor),
			TotalVoters: uint32(x.Vote.TotalVoters),
			SelfVote:    x.Vote.SelfVote,
		}
	default:
		t.Fatalf("delta without value: %v", d)
	}
	return st
}

// asSets compares states with sets and maps in any order.
var asSets = cmp.Options{
	protocmp.Transform(),
	protocmp.SortRepeated(func(a, b *anypb.Any) bool { return anyKey(a) < anyKey(b) }),
	protocmp.SortRepeated(func(a, b *protocol.ORMapEntry) bool { return anyKey(a.Key) < anyKey(b.Key) }),
}

// sortedCopy returns a copy of st with its elements and entries sorted by
// key, keeping duplicates.
func sortedCopy(st *protocol.CrdtState) *protocol.CrdtState {
	st = proto.Clone(st).(*protocol.CrdtState)
	byKey := func(a, b *anypb.Any) int { return strings.Compare(anyKey(a), anyKey(b)) }
	switch {
	case st.GetGset() != nil:
		slices.SortFunc(st.GetGset().Items, byKey)
	case st.GetOrset() != nil:
		slices.SortFunc(st.GetOrset().Items, byKey)
	case st.GetOrmap() != nil:
		for _, e := range st.GetOrmap().Entries {
			e.Value = sortedCopy(e.Value)
		}
		slices.SortFunc(st.GetOrmap().Entries, func(a, b *protocol.ORMapEntry) int {
			return byKey(a.Key, b.Key)
		})
	}
	return st
}

// impossible reports whether no delta can take a function from old to new.
func impossible(old, new *protocol.CrdtState) bool {
	if StateKind(old) != StateKind(new) {
		return true
	}
	switch {
	case old.GetGcounter() != nil:
		return new.GetGcounter().GetValue() < old.GetGcounter().GetValue()
	case old.GetFlag() != nil:
		return old.GetFlag().GetValue() && !new.GetFlag().GetValue()
	case old.GetGset() != nil:
		for _, v := range old.GetGset().GetItems() {
			found := false
			for _, w := range new.GetGset().GetItems() {
				found = found || proto.Equal(v, w)
			}
			if !found {
				return true
			}
		}
	}
	return false
}

func mustCanonical(t *testing.T, st *protocol.CrdtState) *protocol.CrdtState {
	t.Helper()
	out, err := canonical(st, 0)
	if err != nil {
		t.Fatalf("canonical: %v", err)
	}
	return out
}

// TestDiffRoundTrip checks that a function holding old that applies
// Diff(old, new) holds new, for random pairs of values.
func TestDiffRoundTrip(t *testing.T) {
	t.Parallel()
	s := seed(t)
	for _, kind := range allKinds {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			var compatible, incompatible int
			for i := range cases * 2 {
				r := newRand(s, i*10+int(kind))
				old := mustCanonical(t, randState(r, kind, 0))
				var new *protocol.CrdtState
				switch x := r.IntN(10); {
				case x == 0:
					new = mustCanonical(t, randState(r, randKind(r, 0), 0))
				case x < 5:
					new = mustCanonical(t, randState(r, kind, 0))
				default:
					var err error
					new, err = ApplyToState(old, update(randDelta(r, kind, old, 0, allClocks)))
					if err != nil {
						t.Fatalf("case %d: ApplyToState: %v", i, err)
					}
				}
				oldCopy := proto.Clone(old)
				d, err := Diff(old, new)
				if !proto.Equal(old, oldCopy) {
					t.Fatalf("case %d: Diff changed old", i)
				}
				if impossible(old, new) {
					if !errors.Is(err, ErrIncompatible) {
						t.Fatalf("case %d: Diff(%v, %v) = %v, %v; want ErrIncompatible", i, old, new, d, err)
					}
					incompatible++
					continue
				}
				if err != nil {
					t.Fatalf("case %d: Diff(%v, %v): %v", i, old, new, err)
				}
				compatible++
				if d == nil {
					if proto.Equal(sortedCopy(old), sortedCopy(new)) {
						continue
					}
					if diff := cmp.Diff(old, new, asSets); diff != "" {
						t.Fatalf("case %d: Diff gave nil for different values:\n%s", i, diff)
					}
					continue
				}
				got := functionApplies(t, old, d)
				if proto.Equal(sortedCopy(new), sortedCopy(got)) {
					continue
				}
				if diff := cmp.Diff(new, got, asSets); diff != "" {
					t.Fatalf("case %d: old %v + Diff %v (-want +got):\n%s", i, old, d, diff)
				}
			}
			t.Logf("%d compatible pairs, %d incompatible", compatible, incompatible)
		})
	}
}

func TestDiffForms(t *testing.T) {
	t.Parallel()
	a, b, c, d, k1, k2, k3 := str("a"), str("b"), str("c"), str("d"), str("k1"), str("k2"), str("k3")
	anys := func(v ...*anypb.Any) []*anypb.Any { return v }
	flag := func(v bool) *protocol.CrdtState {
		return &protocol.CrdtState{State: &protocol.CrdtState_Flag{Flag: &protocol.FlagState{Value: v}}}
	}
	ormap := func(e ...*protocol.ORMapEntry) *protocol.CrdtState {
		return &protocol.CrdtState{State: &protocol.CrdtState_Ormap{Ormap: &protocol.ORMapState{Entries: e}}}
	}
	gset := func(v ...*anypb.Any) *protocol.CrdtState {
		return &protocol.CrdtState{State: &protocol.CrdtState_Gset{Gset: &protocol.GSetState{Items: v}}}
	}
	lww := func(v *anypb.Any, clock protocol.CrdtClock) *protocol.CrdtState {
		return &protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{
			Lwwregister: &protocol.LWWRegisterState{Value: v, Clock: clock},
		}}
	}
	vote := func(f, n uint32, self bool) *protocol.CrdtState {
		return &protocol.CrdtState{State: &protocol.CrdtState_Vote{Vote: &protocol.VoteState{
			VotesFor: f, TotalVoters: n, SelfVote: self,
		}}}
	}
	tests := []struct {
		name     string
		old, new *protocol.CrdtState
		want     *protocol.CrdtDelta
		wantErr  error
	}{
		{name: "both nil"},
		{name: "created", new: gcounterState(1), wantErr: ErrIncompatible},
		{name: "deleted", old: gcounterState(1), wantErr: ErrIncompatible},
		{name: "kind changed", old: gcounterState(1), new: flag(true), wantErr: ErrIncompatible},
		{name: "gcounter up", old: gcounterState(1), new: gcounterState(4), want: gcounterDelta(3)},
		{name: "gcounter down", old: gcounterState(4), new: gcounterState(1), wantErr: ErrIncompatible},
		{name: "gcounter same", old: gcounterState(4), new: gcounterState(4)},
		{name: "gset lost", old: gset(a, b), new: gset(b), wantErr: ErrIncompatible},
		{
			name: "gset grew", old: gset(b), new: gset(c, a, b),
			want: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{Gset: &protocol.GSetDelta{Added: anys(a, c)}}},
		},
		{name: "gset reordered", old: gset(a, b), new: gset(b, a)},
		{name: "flag on", old: flag(false), new: flag(true), want: flagDelta(true)},
		{name: "flag off", old: flag(true), new: flag(false), wantErr: ErrIncompatible},
		{name: "orset emptied", old: orsetState(a, b, c), new: orsetState(), want: orsetDelta(true, nil, nil)},
		{name: "orset small change", old: orsetState(a, b, c), new: orsetState(a, b, d), want: orsetDelta(false, anys(c), anys(d))},
		{name: "orset replaced", old: orsetState(a, b), new: orsetState(c), want: orsetDelta(true, nil, anys(c))},
		{name: "lww new value", old: lww(a, 0), new: lww(b, 0), want: lwwDelta(b, 0, 0)},
		{name: "lww clock only", old: lww(a, 2), new: lww(a, 0)},
		{name: "lww missing equals empty", old: lww(nil, 0), new: lww(&anypb.Any{}, 0)},
		{
			name: "vote total changed", old: vote(1, 2, true), new: vote(1, 3, true),
			want: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{
				SelfVote: true, VotesFor: 1, TotalVoters: 3,
			}}},
		},
		{name: "vote same", old: vote(1, 2, true), new: vote(1, 2, true)},
		{name: "ormap emptied", old: ormap(&protocol.ORMapEntry{Key: k1, Value: flag(true)}), new: ormap(), want: ormapDelta(&protocol.ORMapDelta{Cleared: true})},
		{
			name: "ormap changes",
			old: ormap(
				&protocol.ORMapEntry{Key: k1, Value: gcounterState(1)},
				&protocol.ORMapEntry{Key: k2, Value: flag(true)},
			),
			new: ormap(
				&protocol.ORMapEntry{Key: k3, Value: orsetState(a)},
				&protocol.ORMapEntry{Key: k1, Value: gcounterState(3)},
			),
			want: ormapDelta(&protocol.ORMapDelta{
				Removed: anys(k2),
				Updated: []*protocol.ORMapEntryDelta{{Key: k1, Delta: gcounterDelta(2)}},
				Added:   []*protocol.ORMapEntry{{Key: k3, Value: orsetState(a)}},
			}),
		},
		{
			name: "ormap value changed incompatibly",
			old: ormap(
				&protocol.ORMapEntry{Key: k1, Value: gcounterState(5)},
				&protocol.ORMapEntry{Key: k2, Value: flag(true)},
			),
			new: ormap(
				&protocol.ORMapEntry{Key: k1, Value: gcounterState(1)},
				&protocol.ORMapEntry{Key: k2, Value: gcounterState(0)},
			),
			want: ormapDelta(&protocol.ORMapDelta{
				Removed: anys(k1, k2),
				Added: []*protocol.ORMapEntry{
					{Key: k1, Value: gcounterState(1)},
					{Key: k2, Value: gcounterState(0)},
				},
			}),
		},
		{name: "ormap same", old: ormap(&protocol.ORMapEntry{Key: k1, Value: orsetState(a, b)}), new: ormap(&protocol.ORMapEntry{Key: k1, Value: orsetState(b, a)})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Diff(tt.old, tt.new)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Diff error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("Diff (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := Diff(&protocol.CrdtState{}, gcounterState(1)); err == nil || errors.Is(err, ErrIncompatible) {
		t.Errorf("Diff of a state without value = %v, want a plain error", err)
	}
}

func TestApplyToState(t *testing.T) {
	t.Parallel()
	a, b, c, k1, k2, k3 := str("a"), str("b"), str("c"), str("k1"), str("k2"), str("k3")
	anys := func(v ...*anypb.Any) []*anypb.Any { return v }
	vote := func(f, n uint32, self bool) *protocol.CrdtState {
		return &protocol.CrdtState{State: &protocol.CrdtState_Vote{Vote: &protocol.VoteState{
			VotesFor: f, TotalVoters: n, SelfVote: self,
		}}}
	}
	flagOn := &protocol.CrdtState{State: &protocol.CrdtState_Flag{Flag: &protocol.FlagState{Value: true}}}
	ormap := func(e ...*protocol.ORMapEntry) *protocol.CrdtState {
		return &protocol.CrdtState{State: &protocol.CrdtState_Ormap{Ormap: &protocol.ORMapState{Entries: e}}}
	}
	tests := []struct {
		name    string
		st      *protocol.CrdtState
		action  *protocol.CrdtStateAction
		want    *protocol.CrdtState
		wantErr bool
	}{
		{
			name: "vote for", st: vote(2, 3, false),
			action: update(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{
				SelfVote: true, VotesFor: 9, TotalVoters: 9,
			}}}),
			want: vote(3, 3, true),
		},
		{name: "vote against", st: vote(2, 3, true), action: update(voteDelta(false)), want: vote(1, 3, false)},
		{name: "vote unchanged", st: vote(2, 3, true), action: update(voteDelta(true)), want: vote(2, 3, true)},
		{name: "vote on nothing", action: update(voteDelta(true)), want: vote(1, 0, true)},
		{
			name: "orset order", st: orsetState(a, b),
			action: update(orsetDelta(true, anys(c, b), anys(b, c))),
			want:   orsetState(b, c),
		},
		{
			name: "ormap order",
			st: ormap(
				&protocol.ORMapEntry{Key: k1, Value: gcounterState(1)},
				&protocol.ORMapEntry{Key: k2, Value: orsetState(a)},
			),
			action: update(ormapDelta(&protocol.ORMapDelta{
				Removed: anys(k1),
				Updated: []*protocol.ORMapEntryDelta{
					{Key: k1, Delta: gcounterDelta(1)},
					{Key: k2, Delta: orsetDelta(false, nil, anys(b))},
					{Key: k3, Delta: gcounterDelta(1)},
				},
				Added: []*protocol.ORMapEntry{{Key: k3, Value: flagOn}},
			})),
			want: ormap(
				&protocol.ORMapEntry{Key: k2, Value: orsetState(a, b)},
				&protocol.ORMapEntry{Key: k3, Value: flagOn},
			),
		},
		{
			name:   "ormap update of another kind is ignored",
			st:     ormap(&protocol.ORMapEntry{Key: k1, Value: gcounterState(1)}),
			action: update(ormapDelta(&protocol.ORMapDelta{Updated: []*protocol.ORMapEntryDelta{{Key: k1, Delta: flagDelta(true)}}})),
			want:   ormap(&protocol.ORMapEntry{Key: k1, Value: gcounterState(1)}),
		},
		{name: "create replaces", st: gcounterState(5), action: create(orsetState(b, a, b)), want: orsetState(a, b)},
		{
			name: "create drops register clock",
			action: create(&protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{Lwwregister: &protocol.LWWRegisterState{
				Value: a, Clock: protocol.CrdtClock_CUSTOM, CustomClockValue: 3,
			}}}),
			want: &protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{Lwwregister: &protocol.LWWRegisterState{Value: a}}},
		},
		{name: "create vote keeps the function's totals", action: create(vote(4, 5, true)), want: vote(4, 5, true)},
		{
			name: "delete", st: gcounterState(5),
			action: &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Delete{Delete: &protocol.CrdtDelete{}}},
		},
		{name: "update on nothing", action: update(gcounterDelta(3)), want: gcounterState(3)},
		{name: "kind mismatch", st: gcounterState(5), action: update(flagDelta(true)), wantErr: true},
		{name: "flag off", st: flagOn, action: update(flagDelta(false)), wantErr: true},
		{name: "empty delta", st: gcounterState(5), action: update(&protocol.CrdtDelta{}), wantErr: true},
		{name: "no action", st: gcounterState(5), action: &protocol.CrdtStateAction{}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := proto.Clone(tt.st)
			got, err := ApplyToState(tt.st, tt.action)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ApplyToState error = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("ApplyToState (-want +got):\n%s", diff)
			}
			if !proto.Equal(before, tt.st) {
				t.Errorf("ApplyToState changed st")
			}
		})
	}
}

// TestModelFollowsReplica checks that, while one node alone acts, the
// proxy's model of the function (ApplyToState) stays the view of the replica
// (Apply then View), so the proxy tells the function nothing it knows.
func TestModelFollowsReplica(t *testing.T) {
	t.Parallel()
	s := seed(t)
	alone := Membership{Self: "a", Alive: []NodeID{"a"}}
	winning := []protocol.CrdtClock{protocol.CrdtClock_DEFAULT, protocol.CrdtClock_CUSTOM_AUTO_INCREMENT}
	for _, kind := range allKinds {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			for i := range cases {
				r := newRand(s, i*10+int(kind))
				var cur CRDT
				model := (*protocol.CrdtState)(nil)
				for step := range 1 + r.IntN(15) {
					action := randAction(r, kind, model, winning)
					next, err := ApplyToState(model, action)
					if err != nil {
						t.Fatalf("case %d: ApplyToState: %v", i, err)
					}
					out := mustApply(t, cur, "a", int64(step), action)
					cur, model = out.Value, next
					d, err := Diff(model, View(cur, alone))
					if err != nil || (d != nil && !onlyVoteTotals(model, d)) {
						t.Fatalf("case %d step %d: after %v, Diff(model, view) = %v, %v",
							i, step, action, d, err)
					}
					if d != nil {
						// A Vote a function creates carries totals that the
						// proxy ignores; its first push corrects them.
						model = functionApplies(t, model, d)
					}
				}
			}
		})
	}
}

// onlyVoteTotals reports whether d, a delta for a function holding st,
// changes nothing but the totals of Votes.
func onlyVoteTotals(st *protocol.CrdtState, d *protocol.CrdtDelta) bool {
	switch x := d.Delta.(type) {
	case *protocol.CrdtDelta_Vote:
		return x.Vote.SelfVote == st.GetVote().GetSelfVote()
	case *protocol.CrdtDelta_Ormap:
		if x.Ormap.Cleared || len(x.Ormap.Removed) > 0 || len(x.Ormap.Added) > 0 {
			return false
		}
		for _, u := range x.Ormap.Updated {
			for _, e := range st.GetOrmap().GetEntries() {
				if proto.Equal(e.Key, u.Key) && !onlyVoteTotals(e.Value, u.Delta) {
					return false
				}
			}
		}
		return true
	}
	return false
}
