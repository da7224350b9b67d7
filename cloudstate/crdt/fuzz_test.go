package crdt

import (
	"bytes"
	"testing"

	crdtv1 "github.com/cloudchat/cloudchat/gen/cloudchat/crdt/v1"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"google.golang.org/protobuf/proto"
)

// seedReplicas returns assorted replicas and deltas of every kind, from
// short random histories with a fixed seed.
func seedReplicas(t testing.TB) []CRDT {
	t.Helper()
	var out []CRDT
	for _, kind := range allKinds {
		for i := range 3 {
			r := newRand(7, i*10+int(kind))
			var cur CRDT
			for step := range 3 + r.IntN(6) {
				node := nodes[r.IntN(len(nodes))]
				res, err := Apply(cur, node, int64(step), randAction(r, kind, View(cur, everyone), allClocks))
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				cur = res.Value
				if res.Delta != nil && step%3 == 0 {
					out = append(out, res.Delta)
				}
			}
			out = append(out, cur)
		}
	}
	return out
}

func FuzzUnmarshal(f *testing.F) {
	for _, c := range seedReplicas(f) {
		f.Add(mustMarshal(f, c))
	}
	bad, _ := proto.Marshal(&crdtv1.Replica{
		Nodes:   []string{"a"},
		Context: &crdtv1.Context{Cloud: []*crdtv1.Dot{{Node: 0, Seq: 3}}},
		Value: &crdtv1.Value{Kind: &crdtv1.Value_Flag{Flag: &crdtv1.Flag{
			Dots: []*crdtv1.Dot{{Node: 0, Seq: 1}},
		}}},
	})
	f.Add(bad)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Unmarshal(b)
		if err != nil {
			if c != nil {
				t.Fatalf("Unmarshal returned a value and error %v", err)
			}
			return
		}
		enc := mustMarshal(t, c)
		again := mustUnmarshal(t, enc)
		if enc2 := mustMarshal(t, again); !bytes.Equal(enc, enc2) {
			t.Fatal("Marshal(Unmarshal(Marshal(x))) differs from Marshal(x)")
		}
		View(c, everyone)
		sameReplica(t, "x⊔x against x", join(t, c, c), c)
		empty, err := New(c.Kind())
		if err != nil {
			t.Fatal(err)
		}
		sameReplica(t, "∅⊔x against x", join(t, empty, c), c)
	})
}

func FuzzApply(f *testing.F) {
	r := newRand(11, 0)
	for _, kind := range allKinds {
		for range 4 {
			b, err := proto.Marshal(randAction(r, kind, randState(r, kind, 0), allClocks))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
		b, _ := proto.Marshal(create(randState(r, kind, 0)))
		f.Add(b)
	}
	f.Add([]byte{})
	base := seedReplicas(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var action protocol.CrdtStateAction
		if err := proto.Unmarshal(b, &action); err != nil {
			return
		}
		if _, err := Apply(nil, "a", 5, &action); err == nil {
			if _, err := ApplyToState(nil, &action); err != nil {
				t.Fatalf("Apply accepted what ApplyToState rejects: %v", err)
			}
		}
		for _, c := range base {
			cur := c.Clone()
			before := mustMarshal(t, cur)
			out, err := Apply(cur, "b", 7, &action)
			if err != nil {
				if !bytes.Equal(before, mustMarshal(t, cur)) {
					t.Fatalf("failed Apply (%v) changed cur", err)
				}
				continue
			}
			if out.Deleted {
				continue
			}
			want := mustUnmarshal(t, before)
			if out.Delta != nil {
				mustMerge(t, want, out.Delta)
			}
			sameReplica(t, "cur merged with the delta against the result", want, out.Value)
			View(out.Value, everyone)
		}
	})
}
