package function

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/google/go-cmp/cmp"

	"github.com/cloudchat/cloudchat/cloudstate/value"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

func str(s string) *anypb.Any { return value.EncodeString(s) }

func strs(ss ...string) []*anypb.Any {
	out := make([]*anypb.Any, len(ss))
	for i, s := range ss {
		out[i] = str(s)
	}
	return out
}

func diffProto(t *testing.T, got, want proto.Message) {
	t.Helper()
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Errorf("mismatch (-want +got):\n%s", d)
	}
}

func orsetDelta(cleared bool, removed, added []*anypb.Any) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: &protocol.ORSetDelta{
		Cleared: cleared, Removed: removed, Added: added,
	}}}
}

func TestORSetDelta(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// start is the state the proxy knows; ops run after it.
		start []string
		ops   func(s *ORSet)
		want  *protocol.CrdtDelta
	}{
		{"add", nil, func(s *ORSet) { s.Add(str("a")); s.Add(str("b")) },
			orsetDelta(false, nil, strs("a", "b"))},
		{"add existing", []string{"a"}, func(s *ORSet) { s.Add(str("a")) }, nil},
		{"remove", []string{"a", "b"}, func(s *ORSet) { s.Remove(str("a")) },
			orsetDelta(false, strs("a"), nil)},
		{"remove then add back", []string{"a", "b"},
			func(s *ORSet) { s.Remove(str("a")); s.Add(str("a")) }, nil},
		{"add then remove", []string{"a"},
			func(s *ORSet) { s.Add(str("b")); s.Remove(str("b")) }, nil},
		{"remove last clears", []string{"a"}, func(s *ORSet) { s.Remove(str("a")) },
			orsetDelta(true, nil, nil)},
		{"clear then add", []string{"a", "b"},
			func(s *ORSet) { s.Clear(); s.Add(str("c")) },
			orsetDelta(true, nil, strs("c"))},
		{"clear empty", nil, func(s *ORSet) { s.Clear() }, nil},
		{"remove missing", []string{"a"}, func(s *ORSet) { s.Remove(str("x")) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := NewORSet()
			if err := s.applyState(&protocol.CrdtState{State: &protocol.CrdtState_Orset{
				Orset: &protocol.ORSetState{Items: strs(tt.start...)},
			}}); err != nil {
				t.Fatal(err)
			}
			tt.ops(s)
			diffProto(t, s.delta(), tt.want)
		})
	}
}

func TestORMapDelta(t *testing.T) {
	t.Parallel()
	m := NewORMap()
	c := NewGCounter()
	if err := c.Increment(2); err != nil {
		t.Fatal(err)
	}
	if err := m.Set(str("a"), c); err != nil {
		t.Fatal(err)
	}
	if err := m.Set(str("b"), NewFlag()); err != nil {
		t.Fatal(err)
	}
	gcState := func(v uint64) *protocol.CrdtState {
		return &protocol.CrdtState{State: &protocol.CrdtState_Gcounter{
			Gcounter: &protocol.GCounterState{Value: v},
		}}
	}
	flagState := &protocol.CrdtState{State: &protocol.CrdtState_Flag{Flag: &protocol.FlagState{}}}
	diffProto(t, m.delta(), &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{
		Ormap: &protocol.ORMapDelta{Added: []*protocol.ORMapEntry{
			{Key: str("a"), Value: gcState(2)},
			{Key: str("b"), Value: flagState},
		}},
	}})
	m.resetDelta()

	// A nested change is sent as an update; replacing a key as a removal
	// and an addition.
	got, _ := m.Get(str("a"))
	if err := got.(*GCounter).Increment(3); err != nil {
		t.Fatal(err)
	}
	if err := m.Set(str("b"), NewGCounter()); err != nil {
		t.Fatal(err)
	}
	diffProto(t, m.delta(), &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{
		Ormap: &protocol.ORMapDelta{
			Removed: strs("b"),
			Added:   []*protocol.ORMapEntry{{Key: str("b"), Value: gcState(0)}},
			Updated: []*protocol.ORMapEntryDelta{{Key: str("a"), Delta: &protocol.CrdtDelta{
				Delta: &protocol.CrdtDelta_Gcounter{Gcounter: &protocol.GCounterDelta{Increment: 3}},
			}}},
		},
	}})
	m.resetDelta()

	if !m.Delete(str("a")) {
		t.Fatal("delete a: not there")
	}
	diffProto(t, m.delta(), &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{
		Ormap: &protocol.ORMapDelta{Removed: strs("a")},
	}})
	m.resetDelta()
	m.Delete(str("b"))
	diffProto(t, m.delta(), &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{
		Ormap: &protocol.ORMapDelta{Cleared: true},
	}})

	if err := m.Set(str("x"), m); err == nil {
		t.Error("set the map into itself: got no error")
	}
	other := NewORMap()
	held := NewFlag()
	if err := other.Set(str("k"), held); err != nil {
		t.Fatal(err)
	}
	if err := m.Set(str("y"), held); err == nil {
		t.Error("set a value held by another map: got no error")
	}
}

func TestVote(t *testing.T) {
	t.Parallel()
	v := NewVote()
	if v.AtLeastOne() || v.VotesFor() != 0 || v.Voters() != 1 {
		t.Fatalf("new vote: for %d of %d", v.VotesFor(), v.Voters())
	}
	v.Set(true)
	if !v.SelfVote() || !v.AtLeastOne() || !v.All() || !v.Majority() {
		t.Errorf("after voting for: self %v, for %d of %d", v.SelfVote(), v.VotesFor(), v.Voters())
	}
	diffProto(t, v.delta(), &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{
		Vote: &protocol.VoteDelta{SelfVote: true},
	}})
	v.resetDelta()
	err := v.applyDelta(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{
		Vote: &protocol.VoteDelta{SelfVote: false, VotesFor: 2, TotalVoters: 5},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !v.SelfVote() || v.VotesFor() != 2 || v.Voters() != 5 || v.Majority() || v.All() {
		t.Errorf("after the proxy's totals: self %v, for %d of %d",
			v.SelfVote(), v.VotesFor(), v.Voters())
	}
	v.Set(false)
	if v.VotesFor() != 1 {
		t.Errorf("after voting against: for %d, want 1", v.VotesFor())
	}
	if v.delta() == nil {
		t.Error("no delta after a change of vote")
	}
	bad := &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{
		Vote: &protocol.VoteDelta{VotesFor: -1, TotalVoters: 2},
	}}
	if err := v.applyDelta(bad); err == nil {
		t.Error("negative votes: got no error")
	}
}

func TestCounterOverflow(t *testing.T) {
	t.Parallel()
	g := NewGCounter()
	if err := g.Increment(math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	if err := g.Increment(1); !errors.Is(err, ErrOverflow) {
		t.Errorf("gcounter past MaxInt64: got %v, want ErrOverflow", err)
	}
	if g.Value() != math.MaxInt64 {
		t.Errorf("gcounter changed by a refused increment: %d", g.Value())
	}
	p := NewPNCounter()
	if err := p.Decrement(math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	if err := p.Decrement(2); !errors.Is(err, ErrOverflow) {
		t.Errorf("pncounter below MinInt64: got %v, want ErrOverflow", err)
	}
	if err := p.Decrement(math.MinInt64); !errors.Is(err, ErrOverflow) {
		t.Errorf("decrement by MinInt64: got %v, want ErrOverflow", err)
	}
}

func TestApplyMismatch(t *testing.T) {
	t.Parallel()
	flag := &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{Flag: &protocol.FlagDelta{Value: true}}}
	for _, v := range []CRDT{
		NewGCounter(), NewPNCounter(), NewGSet(), NewORSet(),
		NewLWWRegister(nil), NewORMap(), NewVote(),
	} {
		err := v.applyDelta(flag)
		if err == nil || !strings.Contains(err.Error(), "got a flag delta") {
			t.Errorf("%T: got %v, want a mismatch error", v, err)
		}
		if err := v.applyState(&protocol.CrdtState{}); err == nil {
			t.Errorf("%T: empty state: got no error", v)
		}
	}
	if _, err := newFromState(&protocol.CrdtState{}); !errors.Is(err, errNoKind) {
		t.Errorf("empty state: got %v, want errNoKind", err)
	}
}

// describe renders a value for comparisons.
func describe(v CRDT) string {
	switch v := v.(type) {
	case nil:
		return "<none>"
	case *GCounter:
		return fmt.Sprintf("gcounter %d", v.Value())
	case *PNCounter:
		return fmt.Sprintf("pncounter %d", v.Value())
	case *GSet:
		return "gset " + describeAnys(v.Elements())
	case *ORSet:
		return "orset " + describeAnys(v.Elements())
	case *LWWRegister:
		return "lwwregister " + describeAnys([]*anypb.Any{v.Value()})
	case *Flag:
		return fmt.Sprintf("flag %v", v.Enabled())
	case *Vote:
		return fmt.Sprintf("vote self=%v %d/%d", v.SelfVote(), v.VotesFor(), v.Voters())
	case *ORMap:
		var parts []string
		for _, k := range v.Keys() {
			e, _ := v.Get(k)
			parts = append(parts, describeAnys([]*anypb.Any{k})+": "+describe(e))
		}
		return "ormap {" + strings.Join(parts, ", ") + "}"
	}
	return "?"
}

func describeAnys(as []*anypb.Any) string {
	parts := make([]string, len(as))
	for i, a := range as {
		d, err := value.Decode(a)
		if err != nil {
			parts[i] = fmt.Sprintf("%s:%x", a.GetTypeUrl(), a.GetValue())
			continue
		}
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// TestDeltasReplay checks the deltas a value emits: a second replica that
// applies them, as the proxy would, ends equal to the first, whatever the
// random operations were and however they were batched. The value itself
// is also checked against a plain model.
func TestDeltasReplay(t *testing.T) {
	t.Parallel()
	type kind struct {
		name string
		new  func() CRDT
		op   func(r *rand.Rand, v CRDT)
	}
	elems := []string{"a", "b", "c", "d"}
	kinds := []kind{
		{"gcounter", func() CRDT { return NewGCounter() }, func(r *rand.Rand, v CRDT) {
			_ = v.(*GCounter).Increment(r.Uint64N(5))
		}},
		{"pncounter", func() CRDT { return NewPNCounter() }, func(r *rand.Rand, v CRDT) {
			_ = v.(*PNCounter).Increment(r.Int64N(11) - 5)
		}},
		{"gset", func() CRDT { return NewGSet() }, func(r *rand.Rand, v CRDT) {
			v.(*GSet).Add(str(elems[r.IntN(len(elems))]))
		}},
		{"orset", func() CRDT { return NewORSet() }, func(r *rand.Rand, v CRDT) {
			s := v.(*ORSet)
			switch e := str(elems[r.IntN(len(elems))]); r.IntN(5) {
			case 0:
				s.Clear()
			case 1, 2:
				s.Remove(e)
			default:
				s.Add(e)
			}
		}},
		{"lwwregister", func() CRDT { return NewLWWRegister(nil) }, func(r *rand.Rand, v CRDT) {
			v.(*LWWRegister).Set(str(elems[r.IntN(len(elems))]))
		}},
		{"flag", func() CRDT { return NewFlag() }, func(r *rand.Rand, v CRDT) {
			if r.IntN(4) == 0 {
				v.(*Flag).Enable()
			}
		}},
		{"ormap", func() CRDT { return NewORMap() }, func(r *rand.Rand, v CRDT) {
			m := v.(*ORMap)
			k := str(elems[r.IntN(len(elems))])
			switch r.IntN(6) {
			case 0:
				m.Delete(k)
			case 1:
				_ = m.Set(k, NewORSet())
			default:
				e, ok := m.Get(k)
				if !ok {
					e = NewORSet()
					_ = m.Set(k, e)
				}
				if s, ok := e.(*ORSet); ok {
					if r.IntN(3) == 0 {
						s.Remove(str("x"))
					} else {
						s.Add(str(elems[r.IntN(len(elems))]))
					}
				}
			}
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			for seed := range uint64(50) {
				r := rand.New(rand.NewPCG(seed, 7))
				a, b := k.new(), k.new()
				var ops int
				for range 40 {
					k.op(r, a)
					ops++
					if r.IntN(3) != 0 {
						continue
					}
					if d := a.delta(); d != nil {
						if err := b.applyDelta(d); err != nil {
							t.Fatalf("seed %d: apply delta %v: %v", seed, d, err)
						}
					}
					a.resetDelta()
					if describe(a) != describe(b) {
						t.Fatalf("seed %d after %d ops: replica %s, value %s",
							seed, ops, describe(b), describe(a))
					}
					if a.delta() != nil {
						t.Fatalf("seed %d: delta left after reset", seed)
					}
				}
				c := k.new()
				if err := c.applyState(a.state()); err != nil {
					t.Fatalf("seed %d: apply state: %v", seed, err)
				}
				if describe(c) != describe(a) {
					t.Fatalf("seed %d: from state %s, value %s", seed, describe(c), describe(a))
				}
			}
		})
	}
}

// TestVoteDeltasReplay checks that the self votes sent track the vote: the
// proxy takes only self_vote from the function.
func TestVoteDeltasReplay(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	v := NewVote()
	var proxy bool
	for i := range 200 {
		v.Set(r.IntN(2) == 0)
		if r.IntN(3) != 0 {
			continue
		}
		if d := v.delta(); d != nil {
			proxy = d.GetVote().GetSelfVote()
		}
		v.resetDelta()
		if proxy != v.SelfVote() {
			t.Fatalf("after %d ops: proxy holds %v, vote is %v", i, proxy, v.SelfVote())
		}
	}
}

func TestCloneRestore(t *testing.T) {
	t.Parallel()
	m := NewORMap()
	s := NewORSet()
	s.Add(str("a"))
	if err := m.Set(str("k"), s); err != nil {
		t.Fatal(err)
	}
	snap := m.clone()
	s.Add(str("b"))
	_ = m.Set(str("j"), NewFlag())
	m.restore(snap)
	if got, want := describe(m), "ormap {[k]: orset [a]}"; got != want {
		t.Errorf("restored: got %s, want %s", got, want)
	}
	// The restored values are hooked to the map again.
	var writes int
	m.onWrite = func() { writes++ }
	e, _ := m.Get(str("k"))
	e.(*ORSet).Add(str("z"))
	if writes != 1 {
		t.Errorf("writes seen through the map: got %d, want 1", writes)
	}
	if got := slices.Collect(func(yield func(string) bool) {
		for _, a := range e.(*ORSet).Elements() {
			s, _ := value.DecodeString(a)
			if !yield(s) {
				return
			}
		}
	}); !slices.Equal(got, []string{"a", "z"}) {
		t.Errorf("elements: got %v", got)
	}
}
