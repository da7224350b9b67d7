package crdt

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
)

var seedFlag = flag.Uint64("crdt.seed", 0, "seed for the random tests; 0 picks one")

// seed returns the seed of a random test and logs it, so that a failure can
// be replayed with -crdt.seed.
func seed(t *testing.T) uint64 {
	t.Helper()
	s := *seedFlag
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -crdt.seed=%d)", s, s)
	return s
}

// newRand returns a generator for case i of a test seeded with s.
func newRand(s uint64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(s, uint64(i)))
}

var allKinds = []Kind{
	KindGCounter, KindPNCounter, KindGSet, KindORSet,
	KindLWWRegister, KindFlag, KindORMap, KindVote,
}

// str returns an Any holding s as the primitive string encoding does.
func str(s string) *anypb.Any {
	return &anypb.Any{
		TypeUrl: "p.cloudstate.io/string",
		Value:   append([]byte{0x0a, byte(len(s))}, s...),
	}
}

// pool is the small set of values random operations draw from, so that
// operations on different nodes collide.
var pool = []*anypb.Any{
	str("ann"), str("bob"), str("cy"), str("dee"), str("eve"),
	{TypeUrl: "p.cloudstate.io/int64", Value: []byte{0x08, 0x01}},
	{TypeUrl: "p.cloudstate.io/int64"},
}

func randAny(r *rand.Rand) *anypb.Any { return pool[r.IntN(len(pool))] }

func randAnys(r *rand.Rand, max int) []*anypb.Any {
	out := make([]*anypb.Any, r.IntN(max+1))
	for i := range out {
		out[i] = randAny(r)
	}
	return out
}

// randKind returns a random kind; maps only above the depth limit of the
// random values.
func randKind(r *rand.Rand, depth int) Kind {
	for {
		k := allKinds[r.IntN(len(allKinds))]
		if k != KindORMap || depth < 2 {
			return k
		}
	}
}

// randState returns a random full state of kind, as a user function could
// create it.
func randState(r *rand.Rand, kind Kind, depth int) *protocol.CrdtState {
	st := emptyState(kind)
	switch kind {
	case KindGCounter:
		st.GetGcounter().Value = uint64(r.IntN(20))
	case KindPNCounter:
		st.GetPncounter().Value = int64(r.IntN(40) - 20)
	case KindGSet:
		st.GetGset().Items = randAnys(r, 4)
	case KindORSet:
		st.GetOrset().Items = randAnys(r, 4)
	case KindLWWRegister:
		l := st.GetLwwregister()
		l.Value = randAny(r)
		if r.IntN(5) == 0 {
			l.Value = nil
		}
		l.Clock = protocol.CrdtClock(r.IntN(4))
		l.CustomClockValue = int64(r.IntN(20) - 5)
	case KindFlag:
		st.GetFlag().Value = r.IntN(2) == 0
	case KindORMap:
		for range r.IntN(4) {
			st.GetOrmap().Entries = append(st.GetOrmap().Entries, &protocol.ORMapEntry{
				Key:   randAny(r),
				Value: randState(r, randKind(r, depth+1), depth+1),
			})
		}
	case KindVote:
		v := st.GetVote()
		v.SelfVote = r.IntN(2) == 0
		v.TotalVoters = uint32(r.IntN(4))
		v.VotesFor = uint32(r.IntN(int(v.TotalVoters) + 1))
	}
	return st
}

// randDelta returns a random delta that a user function holding st, of
// kind, could report. clocks are the register clocks it may use.
func randDelta(
	r *rand.Rand, kind Kind, st *protocol.CrdtState, depth int, clocks []protocol.CrdtClock,
) *protocol.CrdtDelta {
	d := &protocol.CrdtDelta{}
	switch kind {
	case KindGCounter:
		d.Delta = &protocol.CrdtDelta_Gcounter{Gcounter: &protocol.GCounterDelta{
			Increment: uint64(r.IntN(6)),
		}}
	case KindPNCounter:
		d.Delta = &protocol.CrdtDelta_Pncounter{Pncounter: &protocol.PNCounterDelta{
			Change: int64(r.IntN(11) - 5),
		}}
	case KindGSet:
		d.Delta = &protocol.CrdtDelta_Gset{Gset: &protocol.GSetDelta{Added: randAnys(r, 2)}}
	case KindORSet:
		od := &protocol.ORSetDelta{Cleared: r.IntN(6) == 0, Added: randAnys(r, 2)}
		items := st.GetOrset().GetItems()
		for range r.IntN(3) {
			if len(items) > 0 && r.IntN(3) > 0 {
				od.Removed = append(od.Removed, items[r.IntN(len(items))])
			} else {
				od.Removed = append(od.Removed, randAny(r))
			}
		}
		d.Delta = &protocol.CrdtDelta_Orset{Orset: od}
	case KindLWWRegister:
		ld := &protocol.LWWRegisterDelta{
			Value:            randAny(r),
			Clock:            clocks[r.IntN(len(clocks))],
			CustomClockValue: int64(r.IntN(20) - 5),
		}
		d.Delta = &protocol.CrdtDelta_Lwwregister{Lwwregister: ld}
	case KindFlag:
		d.Delta = &protocol.CrdtDelta_Flag{Flag: &protocol.FlagDelta{
			Value: st.GetFlag().GetValue() || r.IntN(2) == 0,
		}}
	case KindORMap:
		d.Delta = &protocol.CrdtDelta_Ormap{Ormap: randMapDelta(r, st.GetOrmap(), depth, clocks)}
	case KindVote:
		d.Delta = &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: r.IntN(2) == 0}}
	}
	return d
}

func randMapDelta(
	r *rand.Rand, m *protocol.ORMapState, depth int, clocks []protocol.CrdtClock,
) *protocol.ORMapDelta {
	md := &protocol.ORMapDelta{Cleared: r.IntN(10) == 0}
	entries := m.GetEntries()
	for range r.IntN(2) {
		if len(entries) > 0 && r.IntN(3) > 0 {
			md.Removed = append(md.Removed, entries[r.IntN(len(entries))].Key)
		} else {
			md.Removed = append(md.Removed, randAny(r))
		}
	}
	for _, i := range r.Perm(len(entries))[:r.IntN(len(entries)+1)] {
		e := entries[i]
		md.Updated = append(md.Updated, &protocol.ORMapEntryDelta{
			Key:   e.Key,
			Delta: randDelta(r, StateKind(e.Value), e.Value, depth+1, clocks),
		})
	}
	for range r.IntN(3) {
		md.Added = append(md.Added, &protocol.ORMapEntry{
			Key:   randAny(r),
			Value: randState(r, randKind(r, depth+1), depth+1),
		})
	}
	return md
}

var allClocks = []protocol.CrdtClock{
	protocol.CrdtClock_DEFAULT, protocol.CrdtClock_REVERSE,
	protocol.CrdtClock_CUSTOM, protocol.CrdtClock_CUSTOM_AUTO_INCREMENT,
}

// randAction returns a random state action for a node whose function holds
// view st, nil when it holds none. Creates come only for a missing value.
func randAction(r *rand.Rand, kind Kind, st *protocol.CrdtState, clocks []protocol.CrdtClock) *protocol.CrdtStateAction {
	if st == nil && r.IntN(2) == 0 {
		return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Create{
			Create: randState(r, kind, 0),
		}}
	}
	if st == nil {
		st = emptyState(kind)
	}
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{
		Update: randDelta(r, kind, st, 0, clocks),
	}}
}

// mustMarshal encodes c or fails the test.
func mustMarshal(t testing.TB, c CRDT) []byte {
	t.Helper()
	b, err := Marshal(c)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	return b
}

// mustUnmarshal decodes b or fails the test.
func mustUnmarshal(t testing.TB, b []byte) CRDT {
	t.Helper()
	c, err := Unmarshal(b)
	if err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	return c
}

// join returns a copy of a with b merged into it.
func join(t testing.TB, a, b CRDT) CRDT {
	t.Helper()
	out := a.Clone()
	if err := out.Merge(b); err != nil {
		t.Fatalf("Merge: %v", err)
	}
	return out
}

// everyone is a membership in which the test nodes are all alive.
var everyone = Membership{Self: "a", Alive: []NodeID{"a", "b", "c"}}

// sameReplica fails the test unless a and b are the same replica.
func sameReplica(t testing.TB, what string, a, b CRDT) {
	t.Helper()
	ab, bb := mustMarshal(t, a), mustMarshal(t, b)
	if bytes.Equal(ab, bb) {
		return
	}
	diff := cmp.Diff(View(a, everyone), View(b, everyone), protocmp.Transform())
	if diff == "" {
		diff = fmt.Sprintf("same view, replicas differ:\n%s\n%s", dump(a), dump(b))
	}
	t.Fatalf("%s: replicas differ (-a +b):\n%s", what, diff)
}

// dump describes a replica's dots for failure messages.
func dump(c CRDT) string {
	r, err := baseOf(c)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("ctx vv=%v cloud=%v dots=%v", r.cc.vv, r.cc.cloud, r.st.appendDots(nil))
}

// Constructors of states, deltas and actions, for short test tables.

func gcounterState(v uint64) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Gcounter{
		Gcounter: &protocol.GCounterState{Value: v},
	}}
}

func pncounterState(v int64) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Pncounter{
		Pncounter: &protocol.PNCounterState{Value: v},
	}}
}

func gsetState(items ...*anypb.Any) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Gset{Gset: &protocol.GSetState{Items: items}}}
}

func orsetState(items ...*anypb.Any) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Orset{Orset: &protocol.ORSetState{Items: items}}}
}

func lwwState(v *anypb.Any, clock protocol.CrdtClock, custom int64) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{
		Lwwregister: &protocol.LWWRegisterState{Value: v, Clock: clock, CustomClockValue: custom},
	}}
}

func flagState(v bool) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Flag{Flag: &protocol.FlagState{Value: v}}}
}

func ormapState(entries ...*protocol.ORMapEntry) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Ormap{
		Ormap: &protocol.ORMapState{Entries: entries},
	}}
}

func entry(k *anypb.Any, v *protocol.CrdtState) *protocol.ORMapEntry {
	return &protocol.ORMapEntry{Key: k, Value: v}
}

func voteState(forIt, total uint32, self bool) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Vote{Vote: &protocol.VoteState{
		VotesFor: forIt, TotalVoters: total, SelfVote: self,
	}}}
}

func gcounterDelta(inc uint64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{
		Gcounter: &protocol.GCounterDelta{Increment: inc},
	}}
}

func pncounterDelta(c int64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{
		Pncounter: &protocol.PNCounterDelta{Change: c},
	}}
}

func gsetDelta(added ...*anypb.Any) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{Gset: &protocol.GSetDelta{Added: added}}}
}

func orsetDelta(cleared bool, removed, added []*anypb.Any) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: &protocol.ORSetDelta{
		Cleared: cleared, Removed: removed, Added: added,
	}}}
}

func lwwDelta(v *anypb.Any, clock protocol.CrdtClock, custom int64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{
		Lwwregister: &protocol.LWWRegisterDelta{Value: v, Clock: clock, CustomClockValue: custom},
	}}
}

func flagDelta(v bool) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{Flag: &protocol.FlagDelta{Value: v}}}
}

func ormapDelta(d *protocol.ORMapDelta) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: d}}
}

func entryDelta(k *anypb.Any, d *protocol.CrdtDelta) *protocol.ORMapEntryDelta {
	return &protocol.ORMapEntryDelta{Key: k, Delta: d}
}

func voteDelta(self bool) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: self}}}
}

func update(d *protocol.CrdtDelta) *protocol.CrdtStateAction {
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{Update: d}}
}

func create(st *protocol.CrdtState) *protocol.CrdtStateAction {
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Create{Create: st}}
}

// anys returns its arguments as a slice.
func anys(v ...*anypb.Any) []*anypb.Any { return v }
