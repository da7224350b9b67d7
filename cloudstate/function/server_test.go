package function_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/cloudstate/function/functiontest"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// syncBuffer is a log destination safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func getFriends(*function.CommandContext, *friendspb.User) (*friendspb.FriendsList, error) {
	return &friendspb.FriendsList{}, nil
}

func TestDiscover(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	srv, err := function.New(function.Config{
		Logger:         slog.New(slog.NewTextHandler(logs, nil)),
		ServiceName:    "chat",
		ServiceVersion: "1.2.3",
	})
	if err != nil {
		t.Fatal(err)
	}
	friends := function.NewEntity(friendspbconnect.FriendsName, function.EntityOptions{})
	function.Handle(friends, "GetFriends", getFriends)
	presence := function.NewEntity(presencepbconnect.PresenceName,
		function.EntityOptions{PersistenceID: "presence-v1"})
	for _, e := range []*function.Entity{friends, presence} {
		if err := srv.Register(e); err != nil {
			t.Fatal(err)
		}
	}
	proxy := functiontest.NewProxy(t, functiontest.Serve(t, srv))

	spec := proxy.Discover()
	want := []*protocol.Entity{
		{EntityType: "cloudstate.crdt.Crdt", ServiceName: friendspbconnect.FriendsName,
			PersistenceId: "Friends"},
		{EntityType: "cloudstate.crdt.Crdt", ServiceName: presencepbconnect.PresenceName,
			PersistenceId: "presence-v1"},
	}
	if len(spec.GetEntities()) != len(want) {
		t.Fatalf("got entities %v, want %v", spec.GetEntities(), want)
	}
	for i := range want {
		if !proto.Equal(spec.GetEntities()[i], want[i]) {
			t.Errorf("entity %d: got %v, want %v", i, spec.GetEntities()[i], want[i])
		}
	}
	info := spec.GetServiceInfo()
	if info.GetServiceName() != "chat" || info.GetServiceVersion() != "1.2.3" ||
		info.GetSupportLibraryName() == "" || !strings.HasPrefix(info.GetServiceRuntime(), "go") {
		t.Errorf("service info: %v", info)
	}

	// The descriptor set stands alone, each file after its imports.
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatalf("the descriptor set does not stand alone: %v", err)
	}
	seen := map[string]bool{}
	for _, f := range set.GetFile() {
		for _, dep := range f.GetDependency() {
			if !seen[dep] {
				t.Errorf("%s comes before its import %s", f.GetName(), dep)
			}
		}
		seen[f.GetName()] = true
	}
	for _, path := range []string{
		"google/protobuf/descriptor.proto", "cloudstate/entity_key.proto",
		"cloudstate/samples/chat/friends/friends.proto",
		"cloudstate/samples/chat/presence/presence.proto",
	} {
		if !seen[path] {
			t.Errorf("the descriptor set lacks %s", path)
		}
	}
	for _, name := range []string{friendspbconnect.FriendsName, presencepbconnect.PresenceName} {
		if _, err := files.FindDescriptorByName(protoreflectName(name)); err != nil {
			t.Errorf("find %s: %v", name, err)
		}
	}
	// The entity key option survives as field option 50002.
	user, err := files.FindDescriptorByName("cloudstate.samples.chat.presence.User")
	if err != nil {
		t.Fatal(err)
	}
	opts := protodesc.ToFieldDescriptorProto(userName(t, user)).GetOptions()
	raw, err := proto.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, []byte{0x90, 0xb5, 0x18, 0x01}) {
		t.Errorf("options of User.name: got % x, want entity_key (50002) = true", raw)
	}

	ctx := context.Background()
	_, err = proxy.Discovery.ReportError(ctx, connect.NewRequest(&protocol.UserFunctionError{
		Message: "entity crashed: boom",
	}))
	if err != nil {
		t.Fatalf("report error: %v", err)
	}
	if !strings.Contains(logs.String(), "entity crashed: boom") {
		t.Errorf("the reported error was not logged; logs:\n%s", logs)
	}
}

func TestDiscoverWithoutEntities(t *testing.T) {
	t.Parallel()
	srv, err := function.New(function.Config{})
	if err != nil {
		t.Fatal(err)
	}
	proxy := functiontest.NewProxy(t, functiontest.Serve(t, srv))
	_, err = proxy.Discovery.Discover(context.Background(),
		connect.NewRequest(&protocol.ProxyInfo{}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("got %v, want failed_precondition", err)
	}
}

func TestRegisterErrors(t *testing.T) {
	t.Parallel()
	monitor := func(*function.CommandContext, *presencepb.User,
		*function.Stream[*presencepb.OnlineStatus]) error {
		return nil
	}
	tests := []struct {
		name  string
		build func() *function.Entity
		want  string
	}{
		{"unknown service", func() *function.Entity {
			return function.NewEntity("no.such.Service", function.EntityOptions{})
		}, "no.such.Service"},
		{"unknown method", func() *function.Entity {
			e := function.NewEntity(friendspbconnect.FriendsName, function.EntityOptions{})
			function.Handle(e, "Nope", getFriends)
			return e
		}, "has no method Nope"},
		{"wrong request type", func() *function.Entity {
			e := function.NewEntity(friendspbconnect.FriendsName, function.EntityOptions{})
			function.Handle(e, "Add",
				func(*function.CommandContext, *friendspb.User) (*friendspb.Empty, error) {
					return nil, nil
				})
			return e
		}, "takes cloudstate.samples.chat.friends.Friend"},
		{"wrong response type", func() *function.Entity {
			e := function.NewEntity(friendspbconnect.FriendsName, function.EntityOptions{})
			function.Handle(e, "Add",
				func(*function.CommandContext, *friendspb.Friend) (*friendspb.User, error) {
					return nil, nil
				})
			return e
		}, "returns cloudstate.samples.chat.friends.Empty"},
		{"unary handler for a streaming method", func() *function.Entity {
			e := function.NewEntity(presencepbconnect.PresenceName, function.EntityOptions{})
			function.Handle(e, "Monitor",
				func(*function.CommandContext, *presencepb.User) (*presencepb.OnlineStatus, error) {
					return nil, nil
				})
			return e
		}, "use HandleStream"},
		{"streaming handler for a unary method", func() *function.Entity {
			e := function.NewEntity(friendspbconnect.FriendsName, function.EntityOptions{})
			function.HandleStream(e, "GetFriends", func(*function.CommandContext, *friendspb.User,
				*function.Stream[*friendspb.FriendsList]) error {
				return nil
			})
			return e
		}, "use Handle"},
		{"two handlers", func() *function.Entity {
			e := function.NewEntity(presencepbconnect.PresenceName, function.EntityOptions{})
			function.HandleStream(e, "Monitor", monitor)
			function.HandleStream(e, "Monitor", monitor)
			return e
		}, "two handlers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, err := function.New(function.Config{})
			if err != nil {
				t.Fatal(err)
			}
			err = srv.Register(tt.build())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	srv, err := function.New(function.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Register(function.NewEntity(friendspbconnect.FriendsName,
		function.EntityOptions{})); err != nil {
		t.Fatal(err)
	}
	err = srv.Register(function.NewEntity(friendspbconnect.FriendsName, function.EntityOptions{}))
	if err == nil || !strings.Contains(err.Error(), "registered twice") {
		t.Errorf("second registration: got %v", err)
	}
}

func protoreflectName(s string) protoreflect.FullName { return protoreflect.FullName(s) }

// userName returns the name field of a User message descriptor.
func userName(t *testing.T, d protoreflect.Descriptor) protoreflect.FieldDescriptor {
	t.Helper()
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		t.Fatalf("%s is not a message", d.FullName())
	}
	f := md.Fields().ByName("name")
	if f == nil {
		t.Fatalf("%s has no field name", d.FullName())
	}
	return f
}
