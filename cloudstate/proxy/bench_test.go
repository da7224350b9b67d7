package proxy

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/cloudchat/cloudchat/gen/friendspb"
)

// benchMethod returns the catalog's Friends.Add method.
func benchMethod(b *testing.B) (*catalog, *method) {
	b.Helper()
	cat, err := newCatalog(chatSpec(b))
	if err != nil {
		b.Fatal(err)
	}
	m, ok := cat.lookup(friendsService, "Add")
	if !ok {
		b.Fatal("no Add method")
	}
	return cat, m
}

func BenchmarkEntityID(b *testing.B) {
	_, m := benchMethod(b)
	msg := dynamicpb.NewMessage(m.desc.Input())
	msg.Set(m.desc.Input().Fields().ByName("user"), protoreflect.ValueOfString("alice"))
	msg.Set(m.desc.Input().Fields().ByName("friend"), protoreflect.ValueOfString("bob"))
	for b.Loop() {
		if _, err := m.entityID(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDynamicBinaryDecodeEncode(b *testing.B) {
	_, m := benchMethod(b)
	raw, err := proto.Marshal(&friendspb.Friend{User: "alice", Friend: "bob"})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		msg := dynamicpb.NewMessage(m.desc.Input())
		if err := proto.Unmarshal(raw, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := proto.Marshal(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDynamicJSONDecodeEncode(b *testing.B) {
	cat, m := benchMethod(b)
	codec := &jsonCodec{name: "json", types: cat.types}
	raw := []byte(`{"user":"alice","friend":"bob"}`)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		msg := dynamicpb.NewMessage(m.desc.Input())
		if err := codec.Unmarshal(raw, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := codec.Marshal(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnaryRoundTrip(b *testing.B) {
	h := newEchoHarness(b, nil)
	client := h.friends()
	req := connect.NewRequest(&friendspb.User{User: "alice"})
	for b.Loop() {
		if _, err := client.GetFriends(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
