package proxy

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/presencepb"
)

// stashed counts the commands a stashing hook holds.
func stashed(h *harness, n int) func() error {
	return func() error {
		got := 0
		for _, c := range h.fn.snapshotCommands() {
			if c.GetName() == "GetFriends" {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d commands reached the function, want %d", got, n)
		}
		return nil
	}
}

func TestPipelinedCommandsAnsweredOutOfOrder(t *testing.T) {
	t.Parallel()
	fn := newFakeFn(chatSpec(t))
	fn.hook = func(s *fnStream, cmd *protocol.Command) bool {
		if cmd.GetName() != "GetFriends" {
			return false
		}
		s.stash = append(s.stash, cmd)
		if len(s.stash) < 3 {
			return true
		}
		for _, i := range []int{2, 0, 1} {
			c := s.stash[i]
			s.reply(c.GetId(), &friendspb.FriendsList{
				Friends: []string{strconv.FormatInt(c.GetId(), 10)}}, nil, false)
		}
		s.stash = nil
		return true
	}
	h := newHarness(t, fn, nil)
	h.waitReady()

	// Each call reaches the function before the next starts, so the i-th
	// call is command i+1 of the stream.
	results := make([]chan string, 3)
	for i := range results {
		results[i] = make(chan string, 1)
		go func() {
			res, err := h.friends().GetFriends(context.Background(),
				connect.NewRequest(&friendspb.User{User: "alice"}))
			if err != nil {
				results[i] <- err.Error()
				return
			}
			results[i] <- res.Msg.GetFriends()[0]
		}()
		if i < 2 {
			eventually(t, "command reaches function", stashed(h, i+1))
		}
	}
	for i, ch := range results {
		if got, want := <-ch, strconv.Itoa(i+1); got != want {
			t.Errorf("call %d got %q, want the reply to command %s", i, got, want)
		}
	}
	if n := len(h.initsFor("alice")); n != 1 {
		t.Errorf("%d streams opened, want 1", n)
	}
}

func TestFunctionFailuresReachClient(t *testing.T) {
	t.Parallel()
	fn := newFakeFn(chatSpec(t))
	fn.hook = func(s *fnStream, cmd *protocol.Command) bool {
		switch cmd.GetName() {
		case "GetFriends":
			s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{
				Reply: &protocol.CrdtReply{CommandId: cmd.GetId(), ClientAction: &protocol.ClientAction{
					Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{
						CommandId: cmd.GetId(), Description: "alice may not look"}}}}}})
		case "Monitor":
			s.fail(cmd.GetId(), "monitor exploded")
		default:
			return false
		}
		return true
	}
	h := newHarness(t, fn, nil)
	h.waitReady()
	ctx := context.Background()
	_, err := h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{User: "alice"}))
	wantCode(t, err, connect.CodeFailedPrecondition, "alice may not look")

	_, err = h.friends().Remove(ctx, connect.NewRequest(&friendspb.Friend{User: "alice"}))
	if err != nil {
		t.Fatalf("after a refused command the entity serves on: %v", err)
	}

	stream, err := h.presence().Monitor(ctx, connect.NewRequest(&presencepb.User{Name: "bob"}))
	if err != nil {
		t.Fatal(err)
	}
	for stream.Receive() {
		t.Errorf("unexpected message %v", stream.Msg())
	}
	wantCode(t, stream.Err(), connect.CodeUnknown, "monitor exploded")
}

func TestProtocolViolationsRestartEntity(t *testing.T) {
	t.Parallel()
	unknownField := func(m proto.Message) {
		m.ProtoReflect().SetUnknown(protowire.AppendVarint(
			protowire.AppendTag(nil, 99, protowire.VarintType), 1))
	}
	tests := []struct {
		name string
		// setup runs before the first call.
		setup func(t *testing.T, h *harness)
		bad   func(s *fnStream, cmd *protocol.Command)
		want  string
	}{
		{
			name: "reply for unknown id",
			bad: func(s *fnStream, cmd *protocol.Command) {
				s.reply(cmd.GetId()+100, &friendspb.FriendsList{}, nil, false)
			},
			want: fmt.Sprintf("reply for unknown command id %d", 101),
		},
		{
			name: "streamed reply to unary command",
			bad: func(s *fnStream, cmd *protocol.Command) {
				s.reply(cmd.GetId(), &friendspb.FriendsList{}, nil, true)
			},
			want: "reply with streamed=true to command 1, which is not streamed",
		},
		{
			name: "unknown message kind",
			bad: func(s *fnStream, _ *protocol.Command) {
				out := &protocol.CrdtStreamOut{}
				unknownField(out)
				s.send(out)
			},
			want: "message of no known kind",
		},
		{
			name: "unknown client action",
			bad: func(s *fnStream, cmd *protocol.Command) {
				ca := &protocol.ClientAction{}
				unknownField(ca)
				s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{
					Reply: &protocol.CrdtReply{CommandId: cmd.GetId(), ClientAction: ca}}})
			},
			want: "client action of an unknown kind",
		},
		{
			name: "unknown state action",
			bad: func(s *fnStream, cmd *protocol.Command) {
				sa := &protocol.CrdtStateAction{}
				unknownField(sa)
				s.reply(cmd.GetId(), &friendspb.FriendsList{}, sa, false)
			},
			want: "state action of an unknown kind",
		},
		{
			name: "empty delta",
			bad: func(s *fnStream, cmd *protocol.Command) {
				s.reply(cmd.GetId(), &friendspb.FriendsList{}, &protocol.CrdtStateAction{
					Action: &protocol.CrdtStateAction_Update{Update: &protocol.CrdtDelta{}},
				}, false)
			},
			want: "reply to command 1",
		},
		{
			name: "delta of the wrong kind",
			setup: func(t *testing.T, h *harness) {
				delta := remoteDelta(t, "node-2", setDelta(&protocol.ORSetDelta{
					Added: []*anypb.Any{str("x")}}))
				if err := h.p.Replicas().Merge("Friends-al", delta); err != nil {
					t.Fatal(err)
				}
			},
			bad: func(s *fnStream, cmd *protocol.Command) {
				s.reply(cmd.GetId(), &friendspb.FriendsList{}, voteDelta(true), false)
			},
			want: "reply to command 1: apply state action",
		},
		{
			name: "failure for unknown id",
			bad: func(s *fnStream, cmd *protocol.Command) {
				s.fail(cmd.GetId()+100, "nope")
			},
			want: "failure for unknown command id 101",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var misbehaved atomic.Bool
			fn := newFakeFn(chatSpec(t))
			fn.hook = func(s *fnStream, cmd *protocol.Command) bool {
				if cmd.GetName() != "GetFriends" || misbehaved.Swap(true) {
					return false
				}
				tt.bad(s, cmd)
				return true
			}
			h := newHarness(t, fn, nil)
			h.waitReady()
			if tt.setup != nil {
				tt.setup(t, h)
			}
			ctx := context.Background()
			_, err := h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{User: "al"}))
			wantCode(t, err, connect.CodeInternal, "invalid message")
			h.waitReport(tt.want)

			eventually(t, "entity restarted", func() error {
				_, err := h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{User: "al"}))
				return err
			})
			if n := len(h.initsFor("al")); n != 2 {
				t.Errorf("%d inits, want 2: the entity restarts on a new stream", n)
			}
		})
	}
}

func TestForwardsAndSideEffects(t *testing.T) {
	t.Parallel()
	friendsPayload := func(user string) *anypb.Any {
		return mustAny(&friendspb.User{User: user})
	}
	fn := newFakeFn(chatSpec(t))
	fn.hook = func(s *fnStream, cmd *protocol.Command) bool {
		if cmd.GetName() != "GetFriends" {
			return false
		}
		forward := func(f *protocol.Forward) {
			s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{
				Reply: &protocol.CrdtReply{CommandId: cmd.GetId(), ClientAction: &protocol.ClientAction{
					Action: &protocol.ClientAction_Forward{Forward: f}}}}})
		}
		switch cmd.GetEntityId() {
		case "alias":
			forward(&protocol.Forward{ServiceName: friendsService, CommandName: "GetFriends",
				Payload: friendsPayload("target")})
		case "loop":
			forward(&protocol.Forward{ServiceName: friendsService, CommandName: "GetFriends",
				Payload: friendsPayload("loop")})
		case "typo":
			s.reply(cmd.GetId(), &presencepb.OnlineStatus{Online: true}, nil, false)
		case "silent":
			s.reply(cmd.GetId(), nil, nil, false)
		case "lost":
			forward(&protocol.Forward{ServiceName: friendsService, CommandName: "Nope",
				Payload: friendsPayload("x")})
		case "effects":
			s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{
				Reply: &protocol.CrdtReply{
					CommandId:    cmd.GetId(),
					ClientAction: replyAction(&friendspb.FriendsList{Friends: []string{"done"}}),
					SideEffects: []*protocol.SideEffect{
						{ServiceName: friendsService, CommandName: "GetFriends",
							Payload: friendsPayload("sync-target"), Synchronous: true},
						{ServiceName: friendsService, CommandName: "GetFriends",
							Payload: friendsPayload("async-target")},
					},
				}}})
		default:
			s.reply(cmd.GetId(), &friendspb.FriendsList{Friends: []string{"of " + cmd.GetEntityId()}},
				nil, false)
		}
		return true
	}
	h := newHarness(t, fn, nil)
	h.waitReady()
	ctx := context.Background()
	get := func(user string) (*connect.Response[friendspb.FriendsList], error) {
		return h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{User: user}))
	}

	res, err := get("alias")
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Msg.GetFriends(); !slices.Equal(got, []string{"of target"}) {
		t.Errorf("forward answered %q, want the target's reply", got)
	}

	_, err = get("loop")
	wantCode(t, err, connect.CodeInternal, "chain of forwards")

	_, err = get("lost")
	wantCode(t, err, connect.CodeInternal, "unknown method")
	h.waitReport("unknown method " + friendsService + "/Nope")

	// A reply of the wrong type is reported and decoded all the same.
	if _, err := get("typo"); err != nil {
		t.Fatal(err)
	}
	h.waitReport("Warning: reply to " + friendsService + "/GetFriends has type")

	// A reply without a client action answers an empty message.
	res, err = get("silent")
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Msg.GetFriends(); len(got) != 0 {
		t.Errorf("silent reply answered %q", got)
	}

	res, err = get("effects")
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Msg.GetFriends(); !slices.Equal(got, []string{"done"}) {
		t.Errorf("got %q", got)
	}
	sawTarget := func(entity string) bool {
		for _, c := range h.fn.snapshotCommands() {
			if c.GetEntityId() == entity {
				return true
			}
		}
		return false
	}
	if !sawTarget("sync-target") {
		t.Error("the synchronous side effect ran after the reply")
	}
	eventually(t, "asynchronous side effect", func() error {
		if !sawTarget("async-target") {
			return fmt.Errorf("not run")
		}
		return nil
	})
}

func TestOverloadAnswersResourceExhausted(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var held []func()
	fn := newFakeFn(chatSpec(t))
	fn.hook = func(s *fnStream, cmd *protocol.Command) bool {
		switch cmd.GetName() {
		case "GetFriends":
			mu.Lock()
			held = append(held, func() { s.reply(cmd.GetId(), &friendspb.FriendsList{}, nil, false) })
			mu.Unlock()
			return true
		case "Remove":
			mu.Lock()
			for _, f := range held {
				f()
			}
			held = nil
			mu.Unlock()
		case "Monitor":
			s.reply(cmd.GetId(), &presencepb.OnlineStatus{}, nil, true)
			return true
		}
		return false
	}
	h := newHarness(t, fn, func(c *Config) {
		c.EntityQueueSize = 2
		c.MaxStreams = 1
	})
	h.waitReady()
	ctx := context.Background()
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{User: "busy"}))
			errs <- err
		}()
	}
	eventually(t, "two commands in flight", stashed(h, 2))
	_, err := h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{User: "busy"}))
	wantCode(t, err, connect.CodeResourceExhausted, "too many commands")

	// The held commands still complete once the function answers.
	release := connect.NewRequest(&friendspb.Friend{User: "other"})
	if _, err := h.friends().Remove(ctx, release); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("held command: %v", err)
		}
	}

	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	first, err := h.presence().Monitor(streamCtx, connect.NewRequest(&presencepb.User{Name: "a"}))
	if err != nil {
		t.Fatal(err)
	}
	if !first.Receive() {
		t.Fatalf("first stream: %v", first.Err())
	}
	second, err := h.presence().Monitor(ctx, connect.NewRequest(&presencepb.User{Name: "b"}))
	if err == nil {
		for second.Receive() {
		}
		err = second.Err()
	}
	wantCode(t, err, connect.CodeResourceExhausted, "too many open streams")
}

func TestClientCancelTellsFunction(t *testing.T) {
	t.Parallel()
	fn := newFakeFn(chatSpec(t))
	fn.hook = func(s *fnStream, cmd *protocol.Command) bool {
		if cmd.GetName() != "Monitor" {
			return false
		}
		s.reply(cmd.GetId(), &presencepb.OnlineStatus{}, nil, true)
		return true
	}
	h := newHarness(t, fn, func(c *Config) { c.PassivationTimeout = 50 * time.Millisecond })
	h.waitReady()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := h.presence().Monitor(ctx, connect.NewRequest(&presencepb.User{Name: "carl"}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatal(stream.Err())
	}
	cancel()
	eventually(t, "stream_cancelled", func() error {
		for _, in := range h.fn.snapshotReceived() {
			sc := in.GetStreamCancelled()
			if sc != nil && sc.GetId() == 1 && sc.GetEntityId() == "carl" {
				return nil
			}
		}
		return fmt.Errorf("function not told")
	})
	// With the stream gone the entity passivates.
	eventually(t, "passivation", func() error {
		if h.fn.endedStreams() == 0 {
			return fmt.Errorf("entity still active")
		}
		return nil
	})
}

func TestShutdownEndsOpenStreams(t *testing.T) {
	t.Parallel()
	fn := newFakeFn(chatSpec(t))
	fn.hook = func(s *fnStream, cmd *protocol.Command) bool {
		if cmd.GetName() != "Monitor" {
			return false
		}
		s.reply(cmd.GetId(), &presencepb.OnlineStatus{}, nil, true)
		return true
	}
	h := newHarness(t, fn, nil)
	h.waitReady()
	stream, err := h.presence().Monitor(context.Background(),
		connect.NewRequest(&presencepb.User{Name: "dora"}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatal(stream.Err())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for stream.Receive() {
	}
	wantCode(t, stream.Err(), connect.CodeUnavailable, "shutting down")
}

func TestFunctionRestartFailsInFlightAndRecovers(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	fn := newFakeFn(chatSpec(t))
	fn.hook = func(s *fnStream, cmd *protocol.Command) bool {
		if cmd.GetName() != "GetFriends" || cmd.GetEntityId() != "stuck" {
			return false
		}
		<-release
		return true
	}
	h := newHarness(t, fn, nil)
	h.waitReady()
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() {
		_, err := h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{User: "stuck"}))
		errc <- err
	}()
	eventually(t, "command in flight", stashed(h, 1))
	h.fn.kill()
	close(release)
	wantCode(t, <-errc, connect.CodeUnavailable, "")

	_, err := h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{User: "alice"}))
	wantCode(t, err, connect.CodeUnavailable, "")

	h.fn.start(t, h.fnAddr)
	eventually(t, "function back", func() error {
		_, err := h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{User: "alice"}))
		return err
	})
	h.waitReady()
}

func TestSlowStreamClientEndsWithResourceExhausted(t *testing.T) {
	t.Parallel()
	cfg := &Config{Logger: testLogger(), EntityQueueSize: 2}
	es := &entities{cfg: cfg, log: cfg.Logger}
	e := newEntity(es, "k", &service{name: friendsService, persistenceID: "Friends"}, "ann")
	call := newStreamCall(cfg.EntityQueueSize)
	s := &openStream{call: call}
	e.streams[1] = s
	for range 5 {
		e.emit(1, s, outcome{reply: &anypb.Any{}})
	}
	var got []outcome
	for len(call.out) > 0 {
		got = append(got, <-call.out)
	}
	if len(got) != 3 || got[0].reply == nil || got[1].reply == nil || !got[2].end {
		t.Fatalf("got %+v, want two messages and the end", got)
	}
	wantCode(t, got[2].err, connect.CodeResourceExhausted, "not reading")
	if _, open := e.streams[1]; open {
		t.Error("call still open")
	}
}
