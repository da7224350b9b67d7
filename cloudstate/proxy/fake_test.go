package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol/protocolconnect"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/presencepb"
)

const (
	friendsService  = "cloudstate.samples.chat.friends.Friends"
	presenceService = "cloudstate.samples.chat.presence.Presence"
)

// fileSet returns a self-contained descriptor set: the files and all their
// imports, each once, imports first.
func fileSet(files ...protoreflect.FileDescriptor) *descriptorpb.FileDescriptorSet {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	for _, fd := range files {
		add(fd)
	}
	return set
}

// chatSet is the descriptor set of the friends and presence services.
func chatSet() *descriptorpb.FileDescriptorSet {
	return fileSet(friendspb.File_cloudstate_samples_chat_friends_friends_proto,
		presencepb.File_cloudstate_samples_chat_presence_presence_proto)
}

// chatSpec is the spec of a function serving friends and presence.
func chatSpec(t testing.TB) *protocol.EntitySpec {
	return specOf(t, chatSet(), friendsService, presenceService)
}

// specOf builds a spec of CRDT entities from a descriptor set.
func specOf(t testing.TB, set *descriptorpb.FileDescriptorSet, services ...string) *protocol.EntitySpec {
	t.Helper()
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatalf("marshal descriptor set: %v", err)
	}
	spec := &protocol.EntitySpec{
		Proto:       b,
		ServiceInfo: &protocol.ServiceInfo{ServiceName: "fake", SupportLibraryName: "test"},
	}
	for _, s := range services {
		spec.Entities = append(spec.Entities, &protocol.Entity{
			EntityType:    crdtEntityType,
			ServiceName:   s,
			PersistenceId: s[strings.LastIndex(s, ".")+1:],
		})
	}
	return spec
}

// str encodes a string element as the Cloudstate libraries do.
func str(s string) *anypb.Any {
	return &anypb.Any{
		TypeUrl: "p.cloudstate.io/string",
		Value:   protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), s),
	}
}

// unstr decodes an element written by str.
func unstr(a *anypb.Any) string {
	b := a.GetValue()
	_, _, n := protowire.ConsumeTag(b)
	if n < 0 {
		return ""
	}
	s, m := protowire.ConsumeString(b[n:])
	if m < 0 {
		return ""
	}
	return s
}

// mustAny wraps a message in an Any; the test messages always encode.
func mustAny(m proto.Message) *anypb.Any {
	a, _ := anypb.New(m)
	return a
}

// fakeFn is a scripted user function: friends over an ORSet and presence
// over a Vote, written straight against the protocol. Hooks let a test take
// over commands to misbehave.
type fakeFn struct {
	// hook, when set, sees every command first and returns true when it
	// handled it. It runs on the stream's goroutine.
	hook func(s *fnStream, cmd *protocol.Command) bool
	// keepOpen makes streams stay open after the proxy half-closes, as the
	// JavaScript library does.
	keepOpen bool
	// ignoreCancels leaves stream_cancelled unanswered, as the JavaScript
	// library does when the handler registered no cancel callback.
	ignoreCancels bool

	mu       sync.Mutex
	spec     *protocol.EntitySpec
	infos    []*protocol.ProxyInfo
	reports  []string
	inits    []*protocol.CrdtInit
	commands []*protocol.Command
	received []*protocol.CrdtStreamIn
	ended    int
	srv      *http.Server
}

func newFakeFn(spec *protocol.EntitySpec) *fakeFn {
	return &fakeFn{spec: spec}
}

func (f *fakeFn) Discover(_ context.Context, req *connect.Request[protocol.ProxyInfo]) (
	*connect.Response[protocol.EntitySpec], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.infos = append(f.infos, req.Msg)
	return connect.NewResponse(f.spec), nil
}

func (f *fakeFn) ReportError(_ context.Context, req *connect.Request[protocol.UserFunctionError]) (
	*connect.Response[emptypb.Empty], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, req.Msg.GetMessage())
	return connect.NewResponse(&emptypb.Empty{}), nil
}

func (f *fakeFn) setSpec(spec *protocol.EntitySpec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.spec = spec
}

func (f *fakeFn) snapshotReports() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reports)
}

func (f *fakeFn) snapshotInits() []*protocol.CrdtInit {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.inits)
}

func (f *fakeFn) snapshotCommands() []*protocol.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.commands)
}

func (f *fakeFn) snapshotReceived() []*protocol.CrdtStreamIn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.received)
}

func (f *fakeFn) endedStreams() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ended
}

// start serves the function on addr ("127.0.0.1:0" for a free port) and
// returns the address it listens on.
func (f *fakeFn) start(t testing.TB, addr string) string {
	t.Helper()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle(protocolconnect.NewEntityDiscoveryHandler(f))
	mux.Handle(protocolconnect.NewCrdtHandler(f))
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: protocols, ReadHeaderTimeout: time.Second}
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// kill stops the function at once, breaking every connection.
func (f *fakeFn) kill() {
	f.mu.Lock()
	srv := f.srv
	f.mu.Unlock()
	_ = srv.Close()
}

// fnStream is one handle stream as the fake function sees it.
type fnStream struct {
	f       *fakeFn
	ctx     context.Context
	stream  *connect.BidiStream[protocol.CrdtStreamIn, protocol.CrdtStreamOut]
	service string
	entity  string
	// friends
	set map[string]bool
	// presence
	votesFor, voters int32
	self             bool
	conns            map[int64]bool
	monitors         map[int64]bool
	// stash holds commands a hook keeps for later.
	stash []*protocol.Command
}

func (f *fakeFn) Handle(ctx context.Context,
	stream *connect.BidiStream[protocol.CrdtStreamIn, protocol.CrdtStreamOut]) error {
	s := &fnStream{f: f, ctx: ctx, stream: stream, set: map[string]bool{},
		conns: map[int64]bool{}, monitors: map[int64]bool{}}
	defer func() {
		f.mu.Lock()
		f.ended++
		f.mu.Unlock()
	}()
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) && f.keepOpen {
			<-ctx.Done()
			return nil
		}
		if err != nil {
			return nil
		}
		f.mu.Lock()
		f.received = append(f.received, msg)
		f.mu.Unlock()
		switch m := msg.GetMessage().(type) {
		case *protocol.CrdtStreamIn_Init:
			f.mu.Lock()
			f.inits = append(f.inits, m.Init)
			f.mu.Unlock()
			s.service, s.entity = m.Init.GetServiceName(), m.Init.GetEntityId()
			s.replace(m.Init.GetState())
		case *protocol.CrdtStreamIn_State:
			s.replace(m.State)
			s.notify()
		case *protocol.CrdtStreamIn_Changed:
			s.change(m.Changed)
			s.notify()
		case *protocol.CrdtStreamIn_Command:
			f.mu.Lock()
			f.commands = append(f.commands, m.Command)
			hook := f.hook
			f.mu.Unlock()
			if hook != nil && hook(s, m.Command) {
				continue
			}
			s.command(m.Command)
		case *protocol.CrdtStreamIn_StreamCancelled:
			if !f.ignoreCancels {
				s.cancelled(m.StreamCancelled.GetId())
			}
		}
	}
}

func (s *fnStream) send(msg *protocol.CrdtStreamOut) {
	_ = s.stream.Send(msg)
}

func (s *fnStream) replace(st *protocol.CrdtState) {
	clear(s.set)
	for _, it := range st.GetOrset().GetItems() {
		s.set[unstr(it)] = true
	}
	if v := st.GetVote(); v != nil {
		s.votesFor, s.voters, s.self = int32(v.GetVotesFor()), int32(v.GetTotalVoters()), v.GetSelfVote()
	}
}

func (s *fnStream) change(d *protocol.CrdtDelta) {
	if o := d.GetOrset(); o != nil {
		if o.GetCleared() {
			clear(s.set)
		}
		for _, it := range o.GetRemoved() {
			delete(s.set, unstr(it))
		}
		for _, it := range o.GetAdded() {
			s.set[unstr(it)] = true
		}
	}
	if v := d.GetVote(); v != nil {
		s.votesFor, s.voters = v.GetVotesFor(), v.GetTotalVoters()
	}
}

// reply sends a reply with a message payload.
func (s *fnStream) reply(id int64, msg proto.Message, sa *protocol.CrdtStateAction, streamed bool) {
	s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{Reply: &protocol.CrdtReply{
		CommandId:    id,
		ClientAction: replyAction(msg),
		StateAction:  sa,
		Streamed:     streamed,
	}}})
}

func replyAction(msg proto.Message) *protocol.ClientAction {
	if msg == nil {
		return nil
	}
	return &protocol.ClientAction{Action: &protocol.ClientAction_Reply{
		Reply: &protocol.Reply{Payload: mustAny(msg)}}}
}

func setDelta(d *protocol.ORSetDelta) *protocol.CrdtStateAction {
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{
		Update: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: d}}}}
}

func voteDelta(self bool) *protocol.CrdtStateAction {
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{
		Update: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{
			Vote: &protocol.VoteDelta{SelfVote: self}}}}}
}

func (s *fnStream) command(cmd *protocol.Command) {
	id := cmd.GetId()
	switch cmd.GetName() {
	case "Add", "Remove":
		var req friendspb.Friend
		if err := proto.Unmarshal(cmd.GetPayload().GetValue(), &req); err != nil {
			s.fail(id, err.Error())
			return
		}
		var sa *protocol.CrdtStateAction
		switch {
		case cmd.GetName() == "Add" && !s.set[req.GetFriend()]:
			s.set[req.GetFriend()] = true
			sa = setDelta(&protocol.ORSetDelta{Added: []*anypb.Any{str(req.GetFriend())}})
		case cmd.GetName() == "Remove" && s.set[req.GetFriend()]:
			delete(s.set, req.GetFriend())
			sa = setDelta(&protocol.ORSetDelta{Removed: []*anypb.Any{str(req.GetFriend())}})
		}
		s.reply(id, &friendspb.Empty{}, sa, false)
	case "GetFriends":
		s.reply(id, &friendspb.FriendsList{Friends: s.friends()}, nil, false)
	case "Connect":
		s.conns[id] = true
		var sa *protocol.CrdtStateAction
		if !s.self {
			s.self = true
			s.votesFor++
			sa = voteDelta(true)
		}
		s.reply(id, &presencepb.Empty{}, sa, true)
		s.notify()
	case "Monitor":
		s.monitors[id] = s.online()
		s.reply(id, &presencepb.OnlineStatus{Online: s.online()}, nil, true)
	default:
		s.fail(id, "Unknown command named "+cmd.GetName())
	}
}

func (s *fnStream) fail(id int64, desc string) {
	s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Failure{
		Failure: &protocol.Failure{CommandId: id, Description: desc}}})
}

func (s *fnStream) friends() []string {
	out := make([]string, 0, len(s.set))
	for f := range s.set {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

func (s *fnStream) online() bool { return s.votesFor > 0 }

// notify tells each monitor of a changed status.
func (s *fnStream) notify() {
	for id, last := range s.monitors {
		if s.online() == last {
			continue
		}
		s.monitors[id] = s.online()
		s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamedMessage{
			StreamedMessage: &protocol.CrdtStreamedMessage{
				CommandId:    id,
				ClientAction: replyAction(&presencepb.OnlineStatus{Online: s.online()}),
			}}})
	}
}

func (s *fnStream) cancelled(id int64) {
	res := &protocol.CrdtStreamCancelledResponse{CommandId: id}
	if s.conns[id] {
		delete(s.conns, id)
		if len(s.conns) == 0 && s.self {
			s.self = false
			s.votesFor--
			res.StateAction = voteDelta(false)
		}
	}
	delete(s.monitors, id)
	s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamCancelledResponse{
		StreamCancelledResponse: res}})
	s.notify()
}

// testLogger logs to stderr when PROXY_TEST_LOG is set, else nowhere.
func testLogger() *slog.Logger {
	if os.Getenv("PROXY_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
