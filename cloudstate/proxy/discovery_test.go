package proxy

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/friendspb"
)

// editFriends returns the chat descriptor set with the friends file edited.
func editFriends(edit func(*descriptorpb.FileDescriptorProto)) *descriptorpb.FileDescriptorSet {
	set := chatSet()
	for _, f := range set.File {
		if f.GetPackage() == "cloudstate.samples.chat.friends" {
			edit(f)
		}
	}
	return set
}

func findMessage(f *descriptorpb.FileDescriptorProto, name string) *descriptorpb.DescriptorProto {
	for _, m := range f.MessageType {
		if m.GetName() == name {
			return m
		}
	}
	return nil
}

func TestDiscoveryRejectsBadSpecs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec func(t *testing.T) *protocol.EntitySpec
		want string
	}{
		{
			name: "missing service",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return specOf(t, chatSet(), "cloudstate.samples.chat.friends.Nope")
			},
			want: `service "cloudstate.samples.chat.friends.Nope" is not in the descriptor set`,
		},
		{
			name: "no entity key",
			spec: func(t *testing.T) *protocol.EntitySpec {
				set := editFriends(func(f *descriptorpb.FileDescriptorProto) {
					findMessage(f, "User").Field[0].Options = nil
				})
				return specOf(t, set, friendsService)
			},
			want: "input message cloudstate.samples.chat.friends.User has no field marked " +
				"(cloudstate.entity_key) = true",
		},
		{
			name: "client streaming",
			spec: func(t *testing.T) *protocol.EntitySpec {
				set := editFriends(func(f *descriptorpb.FileDescriptorProto) {
					f.Service[0].Method[0].ClientStreaming = proto.Bool(true)
				})
				return specOf(t, set, friendsService)
			},
			want: "method cloudstate.samples.chat.friends.Friends.Add is client streaming",
		},
		{
			name: "unknown entity type",
			spec: func(t *testing.T) *protocol.EntitySpec {
				spec := chatSpec(t)
				spec.Entities[0].EntityType = "cloudstate.eventsourced.EventSourced"
				return spec
			},
			want: `has entity type "cloudstate.eventsourced.EventSourced"; ` +
				"this proxy serves only cloudstate.crdt.Crdt",
		},
		{
			name: "not self-contained",
			spec: func(t *testing.T) *protocol.EntitySpec {
				set := chatSet()
				set.File = slices.DeleteFunc(set.File, func(f *descriptorpb.FileDescriptorProto) bool {
					return f.GetName() == "cloudstate/entity_key.proto"
				})
				return specOf(t, set, friendsService)
			},
			want: "descriptor set is not self-contained",
		},
		{
			name: "no entities",
			spec: func(t *testing.T) *protocol.EntitySpec { return specOf(t, chatSet()) },
			want: "no entities",
		},
		{
			name: "garbage descriptors",
			spec: func(t *testing.T) *protocol.EntitySpec {
				spec := chatSpec(t)
				spec.Proto = []byte{0xff, 0xff, 0xff}
				return spec
			},
			want: "proto is not a FileDescriptorSet",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, newFakeFn(tt.spec(t)), nil)
			h.waitReport(tt.want)

			res, err := h.h1.Get("http://" + h.p.MetricsAddr() + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("readyz: got %s, want 503", res.Status)
			}
			_, err = h.friends().GetFriends(context.Background(),
				connect.NewRequest(&friendspb.User{User: "alice"}))
			wantCode(t, err, connect.CodeUnavailable, "not discovered")
		})
	}
}

func TestDiscoveryRetriesUntilSpecFixed(t *testing.T) {
	t.Parallel()
	fn := newFakeFn(specOf(t, chatSet(), "cloudstate.samples.chat.friends.Nope"))
	h := newHarness(t, fn, nil)
	h.waitReport("is not in the descriptor set")
	fn.setSpec(chatSpec(t))
	h.waitReady()

	fn.mu.Lock()
	info := fn.infos[0]
	fn.mu.Unlock()
	if info.GetProtocolMajorVersion() != 0 || info.GetProtocolMinorVersion() != 1 {
		t.Errorf("protocol %d.%d, want 0.1", info.GetProtocolMajorVersion(),
			info.GetProtocolMinorVersion())
	}
	if got := info.GetSupportedEntityTypes(); !slices.Equal(got, []string{crdtEntityType}) {
		t.Errorf("supported entity types %q", got)
	}
	if info.GetProxyName() == "" || info.GetProxyVersion() == "" {
		t.Errorf("proxy name %q version %q", info.GetProxyName(), info.GetProxyVersion())
	}
}

func TestDiscoveryWaitsForFunction(t *testing.T) {
	t.Parallel()
	fn := newFakeFn(chatSpec(t))
	addr := fn.start(t, "127.0.0.1:0")
	fn.kill()
	p := startProxy(t, Config{
		Logger: testLogger(), HTTPAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		FunctionAddr: addr, NodeName: "n", RetryMin: 10e6, RetryMax: 50e6,
	})
	h := &harness{t: t, fn: fn, p: p, h1: &http.Client{}}
	res, err := h.h1.Get("http://" + p.MetricsAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz before discovery: %s", res.Status)
	}
	fn.start(t, addr)
	h.waitReady()
}

// unknownOptions re-reads a descriptor set without the entity_key extension
// registered, so the option is an unknown field of FieldOptions, as a proxy
// that does not know the extension sees it.
func unknownOptions(t *testing.T, set *descriptorpb.FileDescriptorSet) *protoregistry.Files {
	t.Helper()
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	var raw descriptorpb.FileDescriptorSet
	opts := proto.UnmarshalOptions{Resolver: new(protoregistry.Types)}
	if err := opts.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&raw)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestEntityIDFromKeyFields(t *testing.T) {
	t.Parallel()
	for name, files := range map[string]*protoregistry.Files{
		"resolved": mustFiles(t, chatSet()),
		"unknown":  unknownOptions(t, chatSet()),
	} {
		t.Run(name, func(t *testing.T) {
			d, err := files.FindDescriptorByName("cloudstate.samples.chat.friends.Friends")
			if err != nil {
				t.Fatal(err)
			}
			svc := &service{name: friendsService}
			m, err := newMethod(svc, d.(protoreflect.ServiceDescriptor).Methods().ByName("Add"))
			if err != nil {
				t.Fatal(err)
			}
			opts := m.key[0].Options().(*descriptorpb.FieldOptions)
			if got := proto.HasExtension(opts, protocol.E_EntityKey); got != (name == "resolved") {
				t.Fatalf("option resolved = %v in the %s case", got, name)
			}
			msg := dynamicpb.NewMessage(m.desc.Input())
			raw := mustMarshal(t, &friendspb.Friend{User: "ann", Friend: "bob"})
			if err := proto.Unmarshal(raw, msg); err != nil {
				t.Fatal(err)
			}
			id, err := m.entityID(msg)
			if err != nil || id != "ann" {
				t.Fatalf("entityID = %q, %v; want ann", id, err)
			}
			empty := dynamicpb.NewMessage(m.desc.Input())
			if _, err := m.entityID(empty); err == nil || !strings.Contains(err.Error(), "empty") {
				t.Fatalf("entityID of empty key: %v", err)
			}
		})
	}
}

func mustFiles(t *testing.T, set *descriptorpb.FileDescriptorSet) *protoregistry.Files {
	t.Helper()
	files, err := protodesc.NewFiles(set)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
