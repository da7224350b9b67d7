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
	a, b, c, d := str("a"), str("b"), str("c"), str("d")
	k1, k2, k3 := str("k1"), str("k2"), str("k3")
	tests := []struct {
		name     string
		old, new *protocol.CrdtState
		want     *protocol.CrdtDelta
		wantErr  error
	}{
		{name: "both nil"},
		{name: "created", new: gcounterState(1), wantErr: ErrIncompatible},
		{name: "deleted", old: gcounterState(1), wantErr: ErrIncompatible},
		{name: "kind changed", old: gcounterState(1), new: flagState(true), wantErr: ErrIncompatible},
		{name: "gcounter up", old: gcounterState(1), new: gcounterState(4), want: gcounterDelta(3)},
		{name: "gcounter down", old: gcounterState(4), new: gcounterState(1), wantErr: ErrIncompatible},
		{name: "gcounter same", old: gcounterState(4), new: gcounterState(4)},
		{name: "pncounter down", old: pncounterState(4), new: pncounterState(-1), want: pncounterDelta(-5)},
		{name: "gset lost", old: gsetState(a, b), new: gsetState(b), wantErr: ErrIncompatible},
		{name: "gset grew", old: gsetState(b), new: gsetState(c, a, b), want: gsetDelta(a, c)},
		{name: "gset reordered", old: gsetState(a, b), new: gsetState(b, a)},
		{name: "flag on", old: flagState(false), new: flagState(true), want: flagDelta(true)},
		{name: "flag off", old: flagState(true), new: flagState(false), wantErr: ErrIncompatible},
		{
			name: "orset emptied", old: orsetState(a, b, c), new: orsetState(),
			want: orsetDelta(true, nil, nil),
		},
		{
			name: "orset small change", old: orsetState(a, b, c), new: orsetState(a, b, d),
			want: orsetDelta(false, anys(c), anys(d)),
		},
		{
			name: "orset replaced", old: orsetState(a, b), new: orsetState(c),
			want: orsetDelta(true, nil, anys(c)),
		},
		{name: "lww new value", old: lwwState(a, 0, 0), new: lwwState(b, 0, 0), want: lwwDelta(b, 0, 0)},
		{name: "lww clock only", old: lwwState(a, 2, 7), new: lwwState(a, 0, 0)},
		{name: "lww missing equals empty", old: lwwState(nil, 0, 0), new: lwwState(&anypb.Any{}, 0, 0)},
		{
			name: "vote total changed", old: voteState(1, 2, true), new: voteState(1, 3, true),
			want: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{
				SelfVote: true, VotesFor: 1, TotalVoters: 3,
			}}},
		},
		{name: "vote same", old: voteState(1, 2, true), new: voteState(1, 2, true)},
		{
			name: "ormap emptied", old: ormapState(entry(k1, flagState(true))), new: ormapState(),
			want: ormapDelta(&protocol.ORMapDelta{Cleared: true}),
		},
		{
			name: "ormap changes",
			old:  ormapState(entry(k1, gcounterState(1)), entry(k2, flagState(true))),
			new:  ormapState(entry(k3, orsetState(a)), entry(k1, gcounterState(3))),
			want: ormapDelta(&protocol.ORMapDelta{
				Removed: anys(k2),
				Updated: []*protocol.ORMapEntryDelta{entryDelta(k1, gcounterDelta(2))},
				Added:   []*protocol.ORMapEntry{entry(k3, orsetState(a))},
			}),
		},
		{
			name: "ormap value changed incompatibly",
			old:  ormapState(entry(k1, gcounterState(5)), entry(k2, flagState(true))),
			new:  ormapState(entry(k1, gcounterState(1)), entry(k2, gcounterState(0))),
			want: ormapDelta(&protocol.ORMapDelta{
				Removed: anys(k1, k2),
				Added:   []*protocol.ORMapEntry{entry(k1, gcounterState(1)), entry(k2, gcounterState(0))},
			}),
		},
		{
			name: "ormap same",
			old:  ormapState(entry(k1, orsetState(a, b))),
			new:  ormapState(entry(k1, orsetState(b, a))),
		},
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
	_, err := Diff(&protocol.CrdtState{}, gcounterState(1))
	if err == nil || errors.Is(err, ErrIncompatible) {
		t.Errorf("Diff of a state without value = %v, want a plain error", err)
	}
}

func TestApplyToState(t *testing.T) {
	t.Parallel()
	a, b, c, k1, k2, k3 := str("a"), str("b"), str("c"), str("k1"), str("k2"), str("k3")
	tests := []struct {
		name    string
		st      *protocol.CrdtState
		action  *protocol.CrdtStateAction
		want    *protocol.CrdtState
		wantErr bool
	}{
		{
			name: "vote for", st: voteState(2, 3, false),
			action: update(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{
				SelfVote: true, VotesFor: 9, TotalVoters: 9,
			}}}),
			want: voteState(3, 3, true),
		},
		{
			name: "vote against", st: voteState(2, 3, true),
			action: update(voteDelta(false)), want: voteState(1, 3, false),
		},
		{
			name: "vote unchanged", st: voteState(2, 3, true),
			action: update(voteDelta(true)), want: voteState(2, 3, true),
		},
		{name: "vote on nothing", action: update(voteDelta(true)), want: voteState(1, 0, true)},
		{
			name: "orset order", st: orsetState(a, b),
			action: update(orsetDelta(true, anys(c, b), anys(b, c))),
			want:   orsetState(b, c),
		},
		{
			name: "ormap order",
			st:   ormapState(entry(k1, gcounterState(1)), entry(k2, orsetState(a))),
			action: update(ormapDelta(&protocol.ORMapDelta{
				Removed: anys(k1),
				Updated: []*protocol.ORMapEntryDelta{
					entryDelta(k1, gcounterDelta(1)),
					entryDelta(k2, orsetDelta(false, nil, anys(b))),
					entryDelta(k3, gcounterDelta(1)),
				},
				Added: []*protocol.ORMapEntry{entry(k3, flagState(true))},
			})),
			want: ormapState(entry(k2, orsetState(a, b)), entry(k3, flagState(true))),
		},
		{
			name: "ormap update of another kind is ignored",
			st:   ormapState(entry(k1, gcounterState(1))),
			action: update(ormapDelta(&protocol.ORMapDelta{
				Updated: []*protocol.ORMapEntryDelta{entryDelta(k1, flagDelta(true))},
			})),
			want: ormapState(entry(k1, gcounterState(1))),
		},
		{
			name: "create replaces", st: gcounterState(5),
			action: create(orsetState(b, a, b)), want: orsetState(a, b),
		},
		{
			name:   "create drops the register clock",
			action: create(lwwState(a, protocol.CrdtClock_CUSTOM, 3)),
			want:   lwwState(a, 0, 0),
		},
		{
			name:   "create keeps the function's vote totals",
			action: create(voteState(4, 5, true)), want: voteState(4, 5, true),
		},
		{
			name: "delete", st: gcounterState(5),
			action: &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Delete{
				Delete: &protocol.CrdtDelete{},
			}},
		},
		{name: "update on nothing", action: update(gcounterDelta(3)), want: gcounterState(3)},
		{name: "kind mismatch", st: gcounterState(5), action: update(flagDelta(true)), wantErr: true},
		{name: "flag off", st: flagState(true), action: update(flagDelta(false)), wantErr: true},
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
