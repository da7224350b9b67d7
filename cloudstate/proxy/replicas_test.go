package proxy

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// link sends every local change of from to to, as a cluster layer would.
func link(t *testing.T, from, to *Replicas) {
	t.Helper()
	store := to.Store()
	from.OnChange(func(c Change) {
		b, err := EncodeChange(c)
		if err != nil {
			t.Errorf("encode change: %v", err)
			return
		}
		if err := store.Merge(c.Key, b); err != nil {
			t.Errorf("merge change: %v", err)
		}
	})
}

func TestReplicaStoreReplicates(t *testing.T) {
	t.Parallel()
	a, b := NewReplicas("a"), NewReplicas("b")
	link(t, a, b)
	add := func(r *Replicas, key, elem string) {
		t.Helper()
		err := r.apply(key, setDelta(&protocol.ORSetDelta{Added: []*anypb.Any{str(elem)}}), nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	add(a, "Friends-ann", "bob")
	add(a, "Friends-ann", "cat")
	add(b, "Friends-ann", "dan") // not linked back: b's change stays on b

	view, _ := b.view("Friends-ann")
	if got := setItems(view); !slices.Equal(got, []string{"bob", "cat", "dan"}) {
		t.Fatalf("b sees %q", got)
	}

	// The repair path: a pulls what differs from b.
	fa, fb := a.Store().Fingerprints(), b.Store().Fingerprints()
	if fa["Friends-ann"] == fb["Friends-ann"] {
		t.Fatal("different replicas have equal fingerprints")
	}
	data, ok := b.Store().Encode("Friends-ann")
	if !ok {
		t.Fatal("b encodes nothing")
	}
	if err := a.Store().Merge("Friends-ann", data); err != nil {
		t.Fatal(err)
	}
	storeA, storeB := a.Store(), b.Store()
	if fa, fb := storeA.Fingerprints(), storeB.Fingerprints(); fa["Friends-ann"] != fb["Friends-ann"] {
		t.Errorf("after repair fingerprints differ: %x, %x", fa, fb)
	}
	if again := storeA.Fingerprints(); again["Friends-ann"] != fb["Friends-ann"] {
		t.Error("cached fingerprint differs")
	}

	// Deletion travels as a tombstone and wins over later merges.
	err := a.apply("Friends-ann", &protocol.CrdtStateAction{
		Action: &protocol.CrdtStateAction_Delete{Delete: &protocol.CrdtDelete{}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, deleted := b.view("Friends-ann"); !deleted {
		t.Fatal("tombstone not replicated")
	}
	if err := b.Store().Merge("Friends-ann", data); err != nil {
		t.Fatal(err)
	}
	if rep, _ := b.Get("Friends-ann"); !rep.Deleted || rep.Value != nil {
		t.Errorf("merge after delete revived %+v", rep)
	}

	b.Store().SetMembers([]string{"a", "b"})
	if m := b.Membership(); m.Self != "b" || len(m.Alive) != 2 {
		t.Errorf("membership %+v", m)
	}
}

func TestReplicaStoreRejectsGarbage(t *testing.T) {
	t.Parallel()
	s := NewReplicas("a").Store()
	for name, data := range map[string][]byte{
		"empty":          nil,
		"unknown kind":   {9, 1, 2},
		"bad value":      {encodedValue, 0xff, 0xff},
		"tombstone body": {encodedTombstone, 0},
	} {
		if err := s.Merge("k", data); err == nil {
			t.Errorf("%s: merged", name)
		}
	}
	if _, ok := s.Encode("k"); ok {
		t.Error("garbage left a replica")
	}
}
