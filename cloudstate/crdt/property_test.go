package crdt

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"
)

// cases is the number of random histories each property test runs per kind.
const cases = 300

var nodes = []NodeID{"a", "b", "c"}

// parcel is a replica or delta on its way to a node.
type parcel struct {
	to   int
	data []byte
}

// history is the outcome of a random run of operations on three replicas
// that exchange deltas and full states in random order, with duplicates.
type history struct {
	// final holds the replicas after every parcel was delivered.
	final []CRDT
	// deltas holds, encoded, every delta that the operations produced.
	deltas [][]byte
	// own holds, per node, the deltas of its own operations.
	own [][][]byte
	// snapshots holds replicas and deltas taken along the way.
	snapshots []CRDT
}

// deliver merges an encoded replica or delta into a node's replica.
func deliver(t *testing.T, reps []CRDT, p parcel) {
	t.Helper()
	in := mustUnmarshal(t, p.data)
	if reps[p.to] == nil {
		reps[p.to] = in
		return
	}
	if err := reps[p.to].Merge(in); err != nil {
		t.Fatalf("deliver to %s: %v", nodes[p.to], err)
	}
}

// runHistory runs steps random steps on three replicas of kind and then
// delivers everything still in flight.
func runHistory(t *testing.T, r *rand.Rand, kind Kind, steps int) history {
	t.Helper()
	reps := make([]CRDT, len(nodes))
	h := history{own: make([][][]byte, len(nodes))}
	var inFlight []parcel
	now := int64(1000)
	send := func(from int, data []byte) {
		for to := range nodes {
			if to == from && r.IntN(4) > 0 {
				continue
			}
			for range 1 + r.IntN(2) {
				inFlight = append(inFlight, parcel{to: to, data: data})
			}
		}
	}
	for range steps {
		now += int64(r.IntN(3))
		switch x := r.IntN(10); {
		case x < 5:
			n := r.IntN(len(nodes))
			action := randAction(r, kind, View(reps[n], everyone), allClocks)
			out, err := Apply(reps[n], nodes[n], now, action)
			if err != nil {
				t.Fatalf("Apply(%v) on %s: %v", action, nodes[n], err)
			}
			reps[n] = out.Value
			if out.Delta == nil {
				continue
			}
			data := mustMarshal(t, out.Delta)
			h.deltas = append(h.deltas, data)
			h.own[n] = append(h.own[n], data)
			h.snapshots = append(h.snapshots, out.Delta)
			send(n, data)
		case x < 9 && len(inFlight) > 0:
			i := r.IntN(len(inFlight))
			deliver(t, reps, inFlight[i])
			if r.IntN(5) > 0 {
				inFlight = append(inFlight[:i], inFlight[i+1:]...)
			}
		default:
			n := r.IntN(len(nodes))
			if reps[n] == nil {
				continue
			}
			h.snapshots = append(h.snapshots, reps[n].Clone())
			inFlight = append(inFlight, parcel{to: r.IntN(len(nodes)), data: mustMarshal(t, reps[n])})
		}
	}
	r.Shuffle(len(inFlight), func(i, j int) { inFlight[i], inFlight[j] = inFlight[j], inFlight[i] })
	for _, p := range inFlight {
		deliver(t, reps, p)
	}
	h.final = reps
	return h
}

// TestReplication runs random histories of operations on three replicas of
// every kind, with deltas and full states delivered in random order and
// repeated, and checks after each that:
//   - the replicas converged: they are the same, and so are their views;
//   - merging every delta once, in any order, equals merging the replicas;
//   - merge is commutative, associative and idempotent on replicas and
//     deltas taken along the way.
func TestReplication(t *testing.T) {
	t.Parallel()
	s := seed(t)
	for _, kind := range allKinds {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			for i := range cases {
				r := newRand(s, i*10+int(kind))
				h := runHistory(t, r, kind, 10+r.IntN(30))
				if len(h.snapshots) == 0 {
					continue
				}
				checkConverged(t, h)
				checkDeltasEqualStates(t, r, h)
				checkMergeLaws(t, r, h)
				if t.Failed() {
					t.Fatalf("case %d failed", i)
				}
			}
		})
	}
}

// checkConverged checks that replicas that received the same deltas and
// states, in any order and with repeats, are the same.
func checkConverged(t *testing.T, h history) {
	t.Helper()
	for i := 1; i < len(h.final); i++ {
		sameReplica(t, "final replicas", h.final[0], h.final[i])
		if a, b := View(h.final[0], everyone), View(h.final[i], everyone); !proto.Equal(a, b) {
			t.Fatalf("equal replicas, views differ:\n%v\n%v", a, b)
		}
	}
}

// checkDeltasEqualStates checks that merging every delta, once each and in
// any order, gives the replica that merging the full states gives.
func checkDeltasEqualStates(t *testing.T, r *rand.Rand, h history) {
	t.Helper()
	order := r.Perm(len(h.deltas))
	acc := mustUnmarshal(t, h.deltas[order[0]])
	for _, i := range order[1:] {
		if err := acc.Merge(mustUnmarshal(t, h.deltas[i])); err != nil {
			t.Fatal(err)
		}
	}
	states := h.final[0].Clone()
	for _, c := range h.final[1:] {
		if err := states.Merge(c); err != nil {
			t.Fatal(err)
		}
	}
	sameReplica(t, "deltas against states", acc, states)
}

// checkMergeLaws checks that merge is commutative, associative and
// idempotent on replicas and deltas from a history.
func checkMergeLaws(t *testing.T, r *rand.Rand, h history) {
	t.Helper()
	pick := func() CRDT { return h.snapshots[r.IntN(len(h.snapshots))] }
	for range 2 {
		a, b, c := pick(), pick(), pick()
		ab := join(t, a, b)
		sameReplica(t, "a⊔b against b⊔a", ab, join(t, b, a))
		sameReplica(t, "(a⊔b)⊔c against a⊔(b⊔c)", join(t, ab, c), join(t, a, join(t, b, c)))
		sameReplica(t, "a⊔a against a", join(t, a, a), a)
		sameReplica(t, "(a⊔b)⊔b against a⊔b", join(t, ab, b), ab)
	}
}

// TestLocalDeltas checks that a replica that only makes its own changes
// equals the merge of the deltas they produced.
func TestLocalDeltas(t *testing.T) {
	t.Parallel()
	s := seed(t)
	for _, kind := range allKinds {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			for i := range cases {
				r := newRand(s, i*10+int(kind))
				var cur, acc CRDT
				for step := range 1 + r.IntN(20) {
					action := randAction(r, kind, View(cur, everyone), allClocks)
					out, err := Apply(cur, "a", int64(step), action)
					if err != nil {
						t.Fatalf("case %d: Apply: %v", i, err)
					}
					if cur != nil && out.Delta != nil {
						sameReplica(t, "replica merged with its delta", join(t, cur.Clone(), out.Delta), out.Value)
					}
					cur = out.Value
					switch {
					case out.Delta == nil:
					case acc == nil:
						acc = out.Delta.Clone()
					default:
						if err := acc.Merge(out.Delta); err != nil {
							t.Fatal(err)
						}
					}
				}
				sameReplica(t, "replica against its deltas", cur, acc)
			}
		})
	}
}
