package jsfixture_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol/protocolconnect"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/internal/jsfixture"
)

const (
	friendsService = "cloudstate.samples.chat.friends.Friends"
	crdtEntityType = "cloudstate.crdt.Crdt"
	streamTimeout  = 15 * time.Second
	maxMessage     = 12 << 20
)

// clients are what a proxy holds towards one user function.
type clients struct {
	discovery protocolconnect.EntityDiscoveryClient
	crdt      protocolconnect.CrdtClient
}

// newClients connects to f as the proxy does: gRPC over cleartext HTTP/2.
func newClients(t *testing.T, f *jsfixture.Function) clients {
	t.Helper()
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	transport := &http.Transport{Protocols: protocols}
	t.Cleanup(transport.CloseIdleConnections)
	hc := &http.Client{Transport: transport}
	opts := []connect.ClientOption{
		connect.WithGRPC(),
		connect.WithReadMaxBytes(maxMessage),
		connect.WithSendMaxBytes(maxMessage),
	}
	return clients{
		discovery: protocolconnect.NewEntityDiscoveryClient(hc, f.URL(), opts...),
		crdt:      protocolconnect.NewCrdtClient(hc, f.URL(), opts...),
	}
}

// stream is one handle call, as a proxy entity holds it.
type stream struct {
	t      *testing.T
	call   *connect.BidiStreamForClient[protocol.CrdtStreamIn, protocol.CrdtStreamOut]
	cancel context.CancelFunc
}

func openStream(t *testing.T, c clients) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), streamTimeout)
	t.Cleanup(cancel)
	return &stream{t: t, call: c.crdt.Handle(ctx), cancel: cancel}
}

func (s *stream) send(in *protocol.CrdtStreamIn) {
	s.t.Helper()
	if err := s.call.Send(in); err != nil {
		s.t.Fatalf("send %v: %v", in, err)
	}
}

func (s *stream) recv() *protocol.CrdtStreamOut {
	s.t.Helper()
	out, err := s.call.Receive()
	if err != nil {
		s.t.Fatalf("receive: %v", err)
	}
	return out
}

// wantEnd checks that the function ended its side of the call cleanly.
func (s *stream) wantEnd() {
	s.t.Helper()
	out, err := s.call.Receive()
	if !errors.Is(err, io.EOF) {
		s.t.Fatalf("receive after fatal failure: got %v, %v; want end of stream", out, err)
	}
}

func (s *stream) init(entityID string, state *protocol.CrdtState) {
	s.t.Helper()
	s.send(initMsg(friendsService, entityID, state))
}

// command sends a command and returns the function's answer.
func (s *stream) command(id int64, name string, msg proto.Message) *protocol.CrdtStreamOut {
	s.t.Helper()
	s.send(commandMsg(s.t, id, name, msg))
	return s.recv()
}

// friends runs GetFriends and returns the sorted names.
func (s *stream) friends(id int64, user string) []string {
	s.t.Helper()
	out := s.command(id, "GetFriends", &friendspb.User{User: user})
	reply := out.GetReply()
	if reply.GetCommandId() != id || reply.GetStateAction() != nil {
		s.t.Fatalf("GetFriends: got %v, want a reply to %d without state action", out, id)
	}
	payload := reply.GetClientAction().GetReply().GetPayload()
	var list friendspb.FriendsList
	if err := payload.UnmarshalTo(&list); err != nil {
		s.t.Fatalf("GetFriends payload %v: %v", payload, err)
	}
	names := slices.Clone(list.GetFriends())
	slices.Sort(names)
	return names
}

func initMsg(service, entityID string, state *protocol.CrdtState) *protocol.CrdtStreamIn {
	return &protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Init{Init: &protocol.CrdtInit{
		ServiceName: service,
		EntityId:    entityID,
		State:       state,
	}}}
}

func commandMsg(t *testing.T, id int64, name string, msg proto.Message) *protocol.CrdtStreamIn {
	t.Helper()
	payload, err := anypb.New(msg)
	if err != nil {
		t.Fatalf("pack %v: %v", msg, err)
	}
	return rawCommand(id, name, payload)
}

func rawCommand(id int64, name string, payload *anypb.Any) *protocol.CrdtStreamIn {
	command := &protocol.Command{Id: id, Name: name, Payload: payload}
	return &protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Command{Command: command}}
}

func changedMsg(delta *protocol.ORSetDelta) *protocol.CrdtStreamIn {
	changed := &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: delta}}
	return &protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Changed{Changed: changed}}
}

func stateMsg(state *protocol.CrdtState) *protocol.CrdtStreamIn {
	return &protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_State{State: state}}
}

// name encodes a set element as the JavaScript library does: a string in
// field 1, written even when empty.
func name(s string) *anypb.Any {
	value := protowire.AppendTag(nil, 1, protowire.BytesType)
	return &anypb.Any{
		TypeUrl: "p.cloudstate.io/string",
		Value:   protowire.AppendString(value, s),
	}
}

func orsetState(items ...*anypb.Any) *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Orset{Orset: &protocol.ORSetState{
		Items: items,
	}}}
}

func createAction(items ...*anypb.Any) *protocol.CrdtStateAction {
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Create{
		Create: orsetState(items...),
	}}
}

func updateAction(delta *protocol.ORSetDelta) *protocol.CrdtStateAction {
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{
		Update: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: delta}},
	}}
}

func added(elements ...*anypb.Any) *protocol.CrdtStateAction {
	return updateAction(&protocol.ORSetDelta{Added: elements})
}

func removed(elements ...*anypb.Any) *protocol.CrdtStateAction {
	return updateAction(&protocol.ORSetDelta{Removed: elements})
}

// wantEmptyReply checks that out answers command id with the Empty message
// and the given state action.
func wantEmptyReply(
	t *testing.T, out *protocol.CrdtStreamOut, id int64, action *protocol.CrdtStateAction,
) {
	t.Helper()
	empty := &anypb.Any{TypeUrl: "type.googleapis.com/cloudstate.samples.chat.friends.Empty"}
	reply := &protocol.ClientAction_Reply{Reply: &protocol.Reply{Payload: empty}}
	want := &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{
		Reply: &protocol.CrdtReply{
			CommandId:    id,
			ClientAction: &protocol.ClientAction{Action: reply},
			StateAction:  action,
		},
	}}
	if diff := cmp.Diff(want, out, protocmp.Transform()); diff != "" {
		t.Fatalf("reply to command %d (-want +got):\n%s", id, diff)
	}
}

func failureOut(id int64, description string) *protocol.CrdtStreamOut {
	failure := &protocol.Failure{CommandId: id, Description: description}
	return &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Failure{Failure: failure}}
}

func TestFunction(t *testing.T) {
	f := jsfixture.Start(t, 0)
	c := newClients(t, f)

	t.Run("discover", func(t *testing.T) {
		resp, err := c.discovery.Discover(t.Context(), connect.NewRequest(&protocol.ProxyInfo{
			ProtocolMajorVersion: 0,
			ProtocolMinorVersion: 1,
			ProxyName:            "cloudstate-proxy-core",
			ProxyVersion:         "0.5.1",
			SupportedEntityTypes: []string{crdtEntityType, "cloudstate.function.StatelessFunction"},
		}))
		if err != nil {
			t.Fatalf("discover: %v", err)
		}
		spec := resp.Msg

		wantEntities := []*protocol.Entity{{
			EntityType:    crdtEntityType,
			ServiceName:   friendsService,
			PersistenceId: "Friends",
		}}
		if diff := cmp.Diff(wantEntities, spec.GetEntities(), protocmp.Transform()); diff != "" {
			t.Errorf("entities (-want +got):\n%s", diff)
		}
		info := spec.GetServiceInfo()
		if info.GetServiceName() != "friends-js" || info.GetServiceVersion() != "0.0.0" ||
			info.GetSupportLibraryName() != "cloudstate" ||
			info.GetSupportLibraryVersion() != "0.0.3" ||
			!strings.Contains(info.GetServiceRuntime(), "node v") {
			t.Errorf("service info: got %v", info)
		}

		onDisk, err := os.ReadFile("friends-js/user-function.desc")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(spec.GetProto(), onDisk) {
			t.Errorf("EntitySpec.proto is not user-function.desc verbatim")
		}
		var set descriptorpb.FileDescriptorSet
		if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
			t.Fatalf("parse descriptor set: %v", err)
		}
		files, err := protodesc.NewFiles(&set)
		if err != nil {
			t.Fatalf("build descriptors: %v", err)
		}
		d, err := files.FindDescriptorByName(friendsService)
		if err != nil {
			t.Fatalf("find %s: %v", friendsService, err)
		}
		svc, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			t.Fatalf("%s is a %T, want a service", friendsService, d)
		}
		for _, m := range []struct{ method, in, out string }{
			{"Add", "Friend", "Empty"},
			{"Remove", "Friend", "Empty"},
			{"GetFriends", "User", "FriendsList"},
		} {
			md := svc.Methods().ByName(protoreflect.Name(m.method))
			if md == nil {
				t.Errorf("method %s missing", m.method)
				continue
			}
			in, out := string(md.Input().Name()), string(md.Output().Name())
			if in != m.in || out != m.out {
				t.Errorf("%s: got (%s) returns (%s), want (%s) returns (%s)",
					m.method, in, out, m.in, m.out)
			}
			key := md.Input().Fields().ByName("user")
			if key == nil || !proto.GetExtension(key.Options(), protocol.E_EntityKey).(bool) {
				t.Errorf("%s: input field user is not marked as entity key", m.method)
			}
		}
	})

	t.Run("report error", func(t *testing.T) {
		_, err := c.discovery.ReportError(t.Context(),
			connect.NewRequest(&protocol.UserFunctionError{Message: "test error from the proxy"}))
		if err != nil {
			t.Fatalf("reportError: %v", err)
		}
	})

	t.Run("new entity", func(t *testing.T) {
		s := openStream(t, c)
		s.init("alice", nil)

		out := s.command(1, "Add", &friendspb.Friend{User: "alice", Friend: "bob"})
		wantEmptyReply(t, out, 1, createAction(name("bob")))
		items := out.GetReply().GetStateAction().GetCreate().GetOrset().GetItems()
		if len(items) != 1 || !bytes.Equal(items[0].GetValue(), []byte{0x0a, 0x03, 'b', 'o', 'b'}) {
			t.Fatalf("created items: got %v, want one with value 0a 03 62 6f 62", items)
		}
		if got := s.friends(2, "alice"); !slices.Equal(got, []string{"bob"}) {
			t.Fatalf("friends: got %q, want [bob]", got)
		}

		out = s.command(3, "Add", &friendspb.Friend{User: "alice", Friend: "carol"})
		wantEmptyReply(t, out, 3, added(name("carol")))
		out = s.command(4, "Add", &friendspb.Friend{User: "alice", Friend: "carol"})
		wantEmptyReply(t, out, 4, nil)

		// A change made on another node: bob removed, dave added. The
		// function answers nothing and applies it before the next command.
		s.send(changedMsg(&protocol.ORSetDelta{
			Removed: []*anypb.Any{name("bob")},
			Added:   []*anypb.Any{name("dave")},
		}))
		if got := s.friends(5, "alice"); !slices.Equal(got, []string{"carol", "dave"}) {
			t.Fatalf("friends after delta: got %q, want [carol dave]", got)
		}

		out = s.command(6, "Remove", &friendspb.Friend{User: "alice", Friend: "carol"})
		wantEmptyReply(t, out, 6, removed(name("carol")))
		out = s.command(7, "Remove", &friendspb.Friend{User: "alice", Friend: "nobody"})
		wantEmptyReply(t, out, 7, nil)
		out = s.command(8, "Remove", &friendspb.Friend{User: "alice", Friend: "dave"})
		wantEmptyReply(t, out, 8, updateAction(&protocol.ORSetDelta{Cleared: true}))
		if got := s.friends(9, "alice"); len(got) != 0 {
			t.Fatalf("friends after removing all: got %q, want none", got)
		}

		// A cleared delta followed by additions, as the proxy sends when a
		// diff would be larger than the set.
		s.send(changedMsg(&protocol.ORSetDelta{Added: []*anypb.Any{name("erin")}}))
		s.send(changedMsg(&protocol.ORSetDelta{
			Cleared: true,
			Added:   []*anypb.Any{name("frank"), name("gina")},
		}))
		if got := s.friends(10, "alice"); !slices.Equal(got, []string{"frank", "gina"}) {
			t.Fatalf("friends after cleared delta: got %q, want [frank gina]", got)
		}
	})

	t.Run("init with state", func(t *testing.T) {
		s := openStream(t, c)
		s.init("bob", orsetState(name("alice"), name("carol")))

		if got := s.friends(1, "bob"); !slices.Equal(got, []string{"alice", "carol"}) {
			t.Fatalf("friends: got %q, want [alice carol]", got)
		}
		out := s.command(2, "Add", &friendspb.Friend{User: "bob", Friend: "alice"})
		wantEmptyReply(t, out, 2, nil)
		out = s.command(3, "Add", &friendspb.Friend{User: "bob", Friend: "dave"})
		wantEmptyReply(t, out, 3, added(name("dave")))

		// A full state from the proxy replaces the value.
		s.send(stateMsg(orsetState(name("erin"))))
		if got := s.friends(4, "bob"); !slices.Equal(got, []string{"erin"}) {
			t.Fatalf("friends after state: got %q, want [erin]", got)
		}
	})

	t.Run("read before write", func(t *testing.T) {
		s := openStream(t, c)
		s.init("carol", nil)

		if got := s.friends(1, "carol"); len(got) != 0 {
			t.Fatalf("friends: got %q, want none", got)
		}
		out := s.command(2, "Add", &friendspb.Friend{User: "carol", Friend: "bob"})
		wantEmptyReply(t, out, 2, added(name("bob")))
	})

	t.Run("empty name", func(t *testing.T) {
		s := openStream(t, c)
		s.init("dave", orsetState(name("bob")))

		out := s.command(1, "Add", &friendspb.Friend{User: "dave", Friend: ""})
		empty := &anypb.Any{TypeUrl: "p.cloudstate.io/string", Value: []byte{0x0a, 0x00}}
		wantEmptyReply(t, out, 1, added(empty))
		if got := s.friends(2, "dave"); !slices.Equal(got, []string{"", "bob"}) {
			t.Fatalf("friends: got %q, want [\"\" bob]", got)
		}
	})

	t.Run("failures", func(t *testing.T) {
		undecodable := &anypb.Any{
			TypeUrl: "type.googleapis.com/cloudstate.samples.chat.friends.Friend",
			Value:   []byte{0xff},
		}
		tests := []struct {
			name string
			send []*protocol.CrdtStreamIn
			want *protocol.CrdtStreamOut
			// prefix compares only the start of the description.
			prefix bool
			// ends says whether the library then ends its side.
			ends bool
		}{{
			name: "command before init",
			send: []*protocol.CrdtStreamIn{
				commandMsg(t, 1, "GetFriends", &friendspb.User{User: "x"}),
			},
			want: failureOut(0, "Unknown message received before init"),
			ends: true,
		}, {
			name: "second init",
			send: []*protocol.CrdtStreamIn{
				initMsg(friendsService, "erin", nil),
				initMsg(friendsService, "erin", nil),
			},
			want: failureOut(0, "Init message received twice."),
			ends: true,
		}, {
			name: "unknown service",
			send: []*protocol.CrdtStreamIn{initMsg("chat.Nope", "erin", nil)},
			want: failureOut(0, "CRDT service 'chat.Nope' unknown."),
			ends: true,
		}, {
			name: "delta before any value",
			send: []*protocol.CrdtStreamIn{
				initMsg(friendsService, "erin", nil),
				changedMsg(&protocol.ORSetDelta{Added: []*anypb.Any{name("bob")}}),
			},
			want: failureOut(0, "Fatal error handling message, check user container logs."),
			ends: true,
		}, {
			name: "undecodable payload",
			send: []*protocol.CrdtStreamIn{
				initMsg(friendsService, "erin", nil),
				rawCommand(1, "Add", undecodable),
			},
			want:   failureOut(1, "Error handling command 'Add': "),
			prefix: true,
			ends:   true,
		}, {
			name: "unknown command",
			send: []*protocol.CrdtStreamIn{
				initMsg(friendsService, "erin", nil),
				commandMsg(t, 1, "Frobnicate", &friendspb.User{User: "erin"}),
			},
			want: failureOut(1, "Unknown command named Frobnicate"),
		}}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := openStream(t, c)
				for _, in := range tt.send {
					s.send(in)
				}
				got := s.recv()
				if tt.prefix {
					d := got.GetFailure().GetDescription()
					if !strings.HasPrefix(d, tt.want.GetFailure().GetDescription()) {
						t.Fatalf("description: got %q, want prefix %q",
							d, tt.want.GetFailure().GetDescription())
					}
					got.GetFailure().Description = tt.want.GetFailure().GetDescription()
				}
				if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
					t.Fatalf("failure (-want +got):\n%s", diff)
				}
				if tt.ends {
					s.wantEnd()
					return
				}
				if got := s.friends(2, "erin"); len(got) != 0 {
					t.Fatalf("friends after failure: got %q, want none", got)
				}
			})
		}
	})

	t.Run("half-close", func(t *testing.T) {
		s := openStream(t, c)
		s.init("half-close", nil)
		out := s.command(1, "Add", &friendspb.Friend{User: "half-close", Friend: "bob"})
		wantEmptyReply(t, out, 1, createAction(name("bob")))
		if err := s.call.CloseRequest(); err != nil {
			t.Fatalf("close request: %v", err)
		}

		// Wait until the library has seen the half-close, then give it a
		// moment in which ending its side would arrive. Nothing arrives: the
		// proxy has to cancel the call.
		seen := "[half-close] - Stream terminating"
		for !strings.Contains(f.Output(), seen) {
			select {
			case <-t.Context().Done():
				t.Fatal("test ended before the function saw the half-close")
			case <-time.After(20 * time.Millisecond):
			}
		}
		received := make(chan error, 1)
		go func() {
			_, err := s.call.Receive()
			received <- err
		}()
		select {
		case err := <-received:
			t.Fatalf("receive after half-close returned %v; want it to block", err)
		case <-time.After(time.Second):
		}
		s.cancel()
		if err := <-received; connect.CodeOf(err) != connect.CodeCanceled {
			t.Fatalf("receive after cancel: got %v, want canceled", err)
		}
	})
}

func TestKillAndRestart(t *testing.T) {
	f := jsfixture.Start(t, 0)
	c := newClients(t, f)
	port := f.Port()

	s := openStream(t, c)
	s.init("alice", nil)
	out := s.command(1, "Add", &friendspb.Friend{User: "alice", Friend: "bob"})
	wantEmptyReply(t, out, 1, createAction(name("bob")))

	f.Kill()
	if out, err := s.call.Receive(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("receive from killed function: got %v, %v; want an error", out, err)
	}
	f.Kill()

	f.Restart(t)
	if f.Port() != port {
		t.Fatalf("port after restart: got %d, want %d", f.Port(), port)
	}
	s = openStream(t, c)
	s.init("alice", nil)
	if got := s.friends(1, "alice"); len(got) != 0 {
		t.Fatalf("friends after restart: got %q, want none (state lives in the proxy)", got)
	}
	if !strings.Contains(f.Output(), "gRPC server started on 127.0.0.1:") {
		t.Errorf("output lacks the library's start line:\n%s", f.Output())
	}
}
