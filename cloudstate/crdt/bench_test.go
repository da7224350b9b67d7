package crdt

import (
	"fmt"
	"testing"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"google.golang.org/protobuf/types/known/anypb"
)

// benchCase is a replica with a local action on it, and a delta from
// another node to merge into it.
type benchCase struct {
	name   string
	cur    CRDT
	action *protocol.CrdtStateAction
	delta  CRDT
}

// benchCases returns a small replica of every kind and a 10,000-element
// ORSet.
func benchCases(b *testing.B) []benchCase {
	b.Helper()
	var out []benchCase
	for _, kind := range allKinds {
		r := newRand(3, int(kind))
		var cur, other CRDT
		for step := range 20 {
			res, err := Apply(cur, nodes[step%2], int64(step), randAction(r, kind, View(cur, everyone), allClocks))
			if err != nil {
				b.Fatal(err)
			}
			cur = res.Value
			res, err = Apply(other, "c", int64(step), randAction(r, kind, View(other, everyone), allClocks))
			if err != nil {
				b.Fatal(err)
			}
			other = res.Value
		}
		out = append(out, benchCase{
			name:   kind.String(),
			cur:    cur,
			action: update(randDelta(r, kind, View(cur, everyone), 0, allClocks)),
			delta:  other,
		})
	}
	big := make([]*anypb.Any, 10000)
	for i := range big {
		big[i] = str(fmt.Sprintf("user-%05d", i))
	}
	set := mustApply(b, nil, "a", 0, create(orsetState(big...))).Value
	more := mustApply(b, set.Clone(), "b", 1, update(orsetDelta(false, big[:1], []*anypb.Any{str("new")})))
	out = append(out, benchCase{
		name:   "orset-10k",
		cur:    set,
		action: update(orsetDelta(false, nil, []*anypb.Any{str("extra")})),
		delta:  more.Delta,
	})
	return out
}

func BenchmarkMerge(b *testing.B) {
	for _, bc := range benchCases(b) {
		b.Run(bc.name, func(b *testing.B) {
			cur := bc.cur.Clone()
			for b.Loop() {
				if err := cur.Merge(bc.delta); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDelta(b *testing.B) {
	for _, bc := range benchCases(b) {
		b.Run(bc.name, func(b *testing.B) {
			// Each round applies the action to a fresh copy, so that it
			// changes the value every time; the copy is not timed.
			for b.Loop() {
				b.StopTimer()
				cur := bc.cur.Clone()
				b.StartTimer()
				if _, err := Apply(cur, "a", 99, bc.action); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMarshal(b *testing.B) {
	for _, bc := range benchCases(b) {
		b.Run(bc.name, func(b *testing.B) {
			var size int
			for b.Loop() {
				data, err := Marshal(bc.cur)
				if err != nil {
					b.Fatal(err)
				}
				size = len(data)
			}
			b.ReportMetric(float64(size), "bytes")
		})
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	for _, bc := range benchCases(b) {
		b.Run(bc.name, func(b *testing.B) {
			data := mustMarshal(b, bc.cur)
			for b.Loop() {
				if _, err := Unmarshal(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
