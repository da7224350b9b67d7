package function_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/cloudstate/function/functiontest"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

func newVote(string) function.CRDT { return function.NewVote() }

func voteDelta(votesFor, total int32) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{
		Vote: &protocol.VoteDelta{VotesFor: votesFor, TotalVoters: total},
	}}
}

// online reads the status a streamed message or reply sends.
func online(t *testing.T, m interface {
	GetClientAction() *protocol.ClientAction
}) bool {
	t.Helper()
	return functiontest.ReplyPayload[*presencepb.OnlineStatus](t, m).GetOnline()
}

// voteOn is a Connect handler that votes for while its call is open.
func voteOn(ctx *function.CommandContext, _ *presencepb.User,
	s *function.Stream[*presencepb.Empty]) error {
	v, err := function.StateAs[*function.Vote](ctx)
	if err != nil {
		return err
	}
	v.Set(true)
	s.OnCancel(func(cc *function.CancelContext) error {
		v, err := function.StateAs[*function.Vote](cc)
		if err != nil {
			return err
		}
		v.Set(false)
		return nil
	})
	return s.Send(&presencepb.Empty{})
}

func TestStreamedCall(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{
		def: newVote,
		monitor: func(ctx *function.CommandContext, _ *presencepb.User,
			s *function.Stream[*presencepb.OnlineStatus]) error {
			v, err := function.StateAs[*function.Vote](ctx)
			if err != nil {
				return err
			}
			s.OnChange(func(cc *function.ChangeContext) error {
				v, err := function.StateAs[*function.Vote](cc)
				if err != nil {
					return err
				}
				return s.Send(&presencepb.OnlineStatus{Online: v.AtLeastOne()})
			})
			return s.Send(&presencepb.OnlineStatus{Online: v.AtLeastOne()})
		},
		connect: voteOn,
	}.start(t)
	s := proxy.Open(presencepbconnect.PresenceName, "u", nil)

	m := monitor(s)
	r := s.Reply(m)
	if !r.GetStreamed() || online(t, r) {
		t.Fatalf("monitor reply: %v, want streamed and offline", r)
	}

	// A local change: the command's reply, then the monitor's message.
	c := s.Command("Connect", &presencepb.User{Name: "u"}, true)
	r = s.Reply(c)
	if !r.GetStreamed() || !update(t, r).GetVote().GetSelfVote() {
		t.Errorf("connect reply: %v", r)
	}
	if !online(t, s.Streamed(m)) {
		t.Error("monitor after connect: offline")
	}

	// Remote changes.
	s.Changed(voteDelta(2, 2))
	if !online(t, s.Streamed(m)) {
		t.Error("monitor after a remote vote: offline")
	}
	s.Changed(voteDelta(0, 2))
	if online(t, s.Streamed(m)) {
		t.Error("monitor after remote votes against: online")
	}
	s.State(&protocol.CrdtState{State: &protocol.CrdtState_Vote{
		Vote: &protocol.VoteState{VotesFor: 1, TotalVoters: 2, SelfVote: true},
	}})
	if !online(t, s.Streamed(m)) {
		t.Error("monitor after a full state: offline")
	}

	// The client of Connect goes away: its callback votes against, and the
	// change is sent with the answer, then told to the monitor.
	s.Cancel(c)
	resp := s.CancelResponse(c)
	want := &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{
		Update: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{}}},
	}}
	if !proto.Equal(resp.GetStateAction(), want) {
		t.Errorf("cancel response: got %v, want %v", resp.GetStateAction(), want)
	}
	if online(t, s.Streamed(m)) {
		t.Error("monitor after the cancel: online")
	}

	// Cancels of calls that are not open are answered all the same.
	for _, id := range []int64{c, 999} {
		s.Cancel(id)
		if r := s.CancelResponse(id); r.GetStateAction() != nil || len(r.GetSideEffects()) > 0 {
			t.Errorf("answer to the cancel of %d: %v", id, r)
		}
	}

	// A cancelled call hears of no more changes.
	s.Cancel(m)
	s.CancelResponse(m)
	s.Changed(voteDelta(1, 2))
	next := s.Command("Connect", &presencepb.User{Name: "u"}, true)
	if r := s.Reply(next); r.GetCommandId() != next {
		t.Errorf("got %v", r)
	}
}

func TestStreamEnd(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{
		def: newVote,
		monitor: func(ctx *function.CommandContext, req *presencepb.User,
			s *function.Stream[*presencepb.OnlineStatus]) error {
			switch req.GetName() {
			case "until-online":
				// End with the message that says online.
				s.OnChange(func(cc *function.ChangeContext) error {
					if state[*function.Vote](t, cc).AtLeastOne() {
						if err := s.Send(&presencepb.OnlineStatus{Online: true}); err != nil {
							return err
						}
						s.End()
					}
					return nil
				})
				s.OnCancel(func(*function.CancelContext) error {
					t.Error("cancel callback ran after End")
					return nil
				})
			case "once":
				// No subscription: the call ends after the reply.
				return s.Send(&presencepb.OnlineStatus{})
			case "twice-and-end":
				for range 2 {
					if err := s.Send(&presencepb.OnlineStatus{Online: true}); err != nil {
						return err
					}
				}
				s.End()
				if err := s.Send(&presencepb.OnlineStatus{}); !errors.Is(err, function.ErrStreamEnded) {
					t.Errorf("send after End: got %v, want ErrStreamEnded", err)
				}
			case "end-only":
				s.End()
			}
			return nil
		},
	}.start(t)
	s := proxy.Open(presencepbconnect.PresenceName, "u", nil)

	id := s.Command("Monitor", &presencepb.User{Name: "once"}, true)
	if r := s.Reply(id); !r.GetStreamed() || online(t, r) {
		t.Errorf("reply: %v", r)
	}
	if m := s.Streamed(id); !m.GetEndStream() || m.GetClientAction() != nil {
		t.Errorf("got %v, want an empty end of stream", m)
	}

	id = s.Command("Monitor", &presencepb.User{Name: "twice-and-end"}, true)
	if r := s.Reply(id); !r.GetStreamed() || !online(t, r) {
		t.Errorf("reply: %v", r)
	}
	if m := s.Streamed(id); !m.GetEndStream() || !online(t, m) {
		t.Errorf("got %v, want the second message ending the stream", m)
	}

	id = s.Command("Monitor", &presencepb.User{Name: "end-only"}, true)
	if r := s.Reply(id); !r.GetStreamed() || r.GetClientAction() != nil {
		t.Errorf("reply: %v", r)
	}
	if m := s.Streamed(id); !m.GetEndStream() {
		t.Errorf("got %v, want the end of stream", m)
	}

	id = s.Command("Monitor", &presencepb.User{Name: "until-online"}, true)
	if r := s.Reply(id); !r.GetStreamed() || r.GetClientAction() != nil {
		t.Errorf("reply: %v", r)
	}
	s.Changed(voteDelta(0, 2))
	s.Changed(voteDelta(1, 2))
	if m := s.Streamed(id); !m.GetEndStream() || !online(t, m) {
		t.Errorf("got %v, want online ending the stream", m)
	}
	s.Changed(voteDelta(2, 2))
	s.Cancel(id)
	s.CancelResponse(id)
}

func TestStreamCallbackErrors(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{
		def: newVote,
		monitor: func(ctx *function.CommandContext, req *presencepb.User,
			s *function.Stream[*presencepb.OnlineStatus]) error {
			switch req.GetName() {
			case "writer":
				s.OnChange(func(cc *function.ChangeContext) error {
					state[*function.Vote](t, cc).Set(true)
					return nil
				})
			case "failer":
				s.OnChange(func(*function.ChangeContext) error { return errors.New("gave up") })
			case "panicker":
				s.OnChange(func(*function.ChangeContext) error { panic("boom") })
			case "bad-cancel":
				s.OnCancel(func(cc *function.CancelContext) error {
					state[*function.Vote](t, cc).Set(true)
					return errors.New("no")
				})
			case "send-then-fail":
				if err := s.Send(&presencepb.OnlineStatus{}); err != nil {
					return err
				}
				if err := s.Send(&presencepb.OnlineStatus{Online: true}); err != nil {
					return err
				}
				return ctx.Fail("failed after sending")
			}
			return nil
		},
	}.start(t)
	s := proxy.Open(presencepbconnect.PresenceName, "u", nil)
	open := func(name string) int64 {
		id := s.Command("Monitor", &presencepb.User{Name: name}, true)
		s.Reply(id)
		return id
	}
	writer, failer, panicker := open("writer"), open("failer"), open("panicker")
	s.Changed(voteDelta(1, 1))
	for _, tt := range []struct {
		id   int64
		want string
	}{
		{writer, "changed the entity's value"},
		{failer, "gave up"},
		{panicker, "internal error"},
	} {
		m := s.Streamed(tt.id)
		f := m.GetClientAction().GetFailure()
		if !m.GetEndStream() || f.GetCommandId() != tt.id ||
			!strings.Contains(f.GetDescription(), tt.want) {
			t.Errorf("call %d: got %v, want a failure with %q that ends it", tt.id, m, tt.want)
		}
	}

	// The value is as the proxy said: the writer's change was undone.
	s.Changed(voteDelta(0, 1))
	id := s.Command("Monitor", &presencepb.User{Name: "bad-cancel"}, true)
	s.Reply(id)
	s.Cancel(id)
	if r := s.CancelResponse(id); r.GetStateAction() != nil {
		t.Errorf("a failed cancel callback sent %v", r.GetStateAction())
	}

	// A failed handler sends none of its messages.
	id = s.Command("Monitor", &presencepb.User{Name: "send-then-fail"}, true)
	if got := failure(t, s.Reply(id)); got != "failed after sending" {
		t.Errorf("got %q", got)
	}
	s.Cancel(id)
	s.CancelResponse(id)
}

func TestNotStreamed(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{
		def: newVote,
		monitor: func(ctx *function.CommandContext, req *presencepb.User,
			s *function.Stream[*presencepb.OnlineStatus]) error {
			if ctx.Streamed() != s.Streamed() {
				t.Error("the context and the stream disagree")
			}
			switch req.GetName() {
			case "subscribe":
				s.OnChange(func(*function.ChangeContext) error { return nil })
			case "send-twice":
				if err := s.Send(&presencepb.OnlineStatus{}); err != nil {
					return err
				}
				return s.Send(&presencepb.OnlineStatus{})
			}
			return s.Send(&presencepb.OnlineStatus{Online: true})
		},
	}.start(t)
	s := proxy.Open(presencepbconnect.PresenceName, "u", nil)
	id := s.Command("Monitor", &presencepb.User{Name: "plain"}, false)
	if r := s.Reply(id); r.GetStreamed() || !online(t, r) {
		t.Errorf("got %v, want one message, not streamed", r)
	}
	id = s.Command("Monitor", &presencepb.User{Name: "subscribe"}, false)
	if got := failure(t, s.Reply(id)); !strings.Contains(got, "not streamed") {
		t.Errorf("subscribe: got %q", got)
	}
	id = s.Command("Monitor", &presencepb.User{Name: "send-twice"}, false)
	if got := failure(t, s.Reply(id)); !strings.Contains(got, "not streamed") {
		t.Errorf("send twice: got %q", got)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{
		def: newVote,
		ops: map[string]op{"delete": func(ctx *function.CommandContext) error {
			ctx.SetWriteConsistency(function.WriteMajority)
			ctx.Delete()
			return nil
		}},
		monitor: func(ctx *function.CommandContext, _ *presencepb.User,
			s *function.Stream[*presencepb.OnlineStatus]) error {
			s.OnChange(func(*function.ChangeContext) error { return nil })
			return nil
		},
	}.start(t)

	// Deleted by a command of this node.
	s := proxy.Open(friendspbconnect.FriendsName, "u", nil)
	r := s.Reply(add(s, "delete"))
	want := &protocol.CrdtStateAction{
		Action:           &protocol.CrdtStateAction_Delete{Delete: &protocol.CrdtDelete{}},
		WriteConsistency: protocol.CrdtWriteConsistency_MAJORITY,
	}
	if !proto.Equal(r.GetStateAction(), want) {
		t.Errorf("got %v, want %v", r.GetStateAction(), want)
	}
	id := add(s, "delete")
	if f := s.Failure(); f.GetCommandId() != id || f.GetDescription() != "entity deleted" {
		t.Errorf("command after delete: got %v", f)
	}
	s.CloseSend()
	if err := s.Ended(); err != nil {
		t.Errorf("stream ended with %v", err)
	}

	// Deleted on another node: open calls end.
	s = proxy.Open(presencepbconnect.PresenceName, "u", nil)
	m := monitor(s)
	s.Reply(m)
	s.Deleted()
	if msg := s.Streamed(m); !msg.GetEndStream() {
		t.Errorf("got %v, want the end of the call", msg)
	}
	id = monitor(s)
	if f := s.Failure(); f.GetCommandId() != id || f.GetDescription() != "entity deleted" {
		t.Errorf("command after delete: got %v", f)
	}
	s.Cancel(m)
	s.CancelResponse(m)
	s.CloseSend()
	if err := s.Ended(); err != nil {
		t.Errorf("stream ended with %v", err)
	}

	// Deleted before the stream opened: no init.
	s = proxy.OpenRaw()
	s.Deleted()
	id = add(s, "delete")
	if f := s.Failure(); f.GetCommandId() != id || f.GetDescription() != "entity deleted" {
		t.Errorf("command on a deleted stream: got %v", f)
	}
	s.CloseSend()
	if err := s.Ended(); err != nil {
		t.Errorf("stream ended with %v", err)
	}
}

func TestActions(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{
		def: func(string) function.CRDT { return function.NewGCounter() },
		ops: map[string]op{
			"effects": func(ctx *function.CommandContext) error {
				if err := state[*function.GCounter](t, ctx).Increment(1); err != nil {
					return err
				}
				ctx.SetWriteConsistency(function.WriteAll)
				return ctx.SideEffect(friendspbconnect.FriendsName, "Remove",
					&friendspb.Friend{User: "u", Friend: "x"}, true)
			},
			"forward": func(ctx *function.CommandContext) error {
				return ctx.Forward(friendspbconnect.FriendsName, "GetFriends",
					&friendspb.User{User: "u"})
			},
			"forward-bad": func(ctx *function.CommandContext) error {
				return ctx.Forward(friendspbconnect.FriendsName, "GetFriends",
					&friendspb.Friend{})
			},
			"effect-unknown": func(ctx *function.CommandContext) error {
				return ctx.SideEffect("no.Such", "X", &friendspb.User{}, false)
			},
			"reply-and-forward": func(ctx *function.CommandContext) error {
				return ctx.Forward(friendspbconnect.FriendsName, "Add", &friendspb.Friend{})
			},
		},
	}.start(t)
	s := proxy.Open(friendspbconnect.FriendsName, "u", nil)

	r := s.Reply(add(s, "effects"))
	if got := r.GetStateAction().GetWriteConsistency(); got != protocol.CrdtWriteConsistency_ALL {
		t.Errorf("write consistency: got %v", got)
	}
	if len(r.GetSideEffects()) != 1 {
		t.Fatalf("side effects: %v", r.GetSideEffects())
	}
	se := r.GetSideEffects()[0]
	if se.GetServiceName() != friendspbconnect.FriendsName || se.GetCommandName() != "Remove" ||
		!se.GetSynchronous() ||
		functiontest.Decode[*friendspb.Friend](t, se.GetPayload()).GetFriend() != "x" {
		t.Errorf("side effect: %v", se)
	}

	r = s.Reply(add(s, "forward"))
	fw := r.GetClientAction().GetForward()
	if fw.GetServiceName() != friendspbconnect.FriendsName || fw.GetCommandName() != "GetFriends" ||
		fw.GetPayload().GetTypeUrl() != "type.googleapis.com/cloudstate.samples.chat.friends.User" {
		t.Errorf("forward: %v", r)
	}
	if got := failure(t, s.Reply(add(s, "forward-bad"))); !strings.Contains(got, "takes") {
		t.Errorf("forward with the wrong payload: got %q", got)
	}
	if got := failure(t, s.Reply(add(s, "effect-unknown"))); !strings.Contains(got, "no.Such") {
		t.Errorf("side effect to an unknown service: got %q", got)
	}
	if got := failure(t, s.Reply(add(s, "reply-and-forward"))); !strings.Contains(got, "both") {
		t.Errorf("forward and reply: got %q", got)
	}
}

func TestLocalPerInstance(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{ops: map[string]op{"nothing": func(*function.CommandContext) error {
		return nil
	}}}.start(t)
	count := func(s *functiontest.Stream) string {
		r := s.Reply(s.Command("GetFriends", &friendspb.User{User: "u"}, false))
		return functiontest.ReplyPayload[*friendspb.FriendsList](t, r).GetFriends()[1]
	}
	a := proxy.Open(friendspbconnect.FriendsName, "u", nil)
	b := proxy.Open(friendspbconnect.FriendsName, "u", nil)
	for range 3 {
		a.Reply(add(a, "nothing"))
	}
	b.Reply(add(b, "nothing"))
	if got := count(a); got != "3" {
		t.Errorf("first instance: got %s, want 3", got)
	}
	if got := count(b); got != "1" {
		t.Errorf("second instance: got %s, want 1", got)
	}
}

func TestLargeState(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{}.start(t)
	items := make([]string, 600)
	for i := range items {
		items[i] = strings.Repeat(string(rune('a'+i%26)), 10000) + string(rune('0'+i/26))
	}
	st := &protocol.CrdtState{State: &protocol.CrdtState_Orset{
		Orset: &protocol.ORSetState{Items: strs(items...)},
	}}
	if n := proto.Size(st); n < 5<<20 {
		t.Fatalf("state of %d bytes is not large", n)
	}
	s := proxy.Open(friendspbconnect.FriendsName, "u", st)
	if got := describe(t, s); len(got) < 6000000 {
		t.Errorf("description of %d bytes, want the whole set", len(got))
	}
}

func TestShutdownEndsStreams(t *testing.T) {
	t.Parallel()
	proxy, srv := bench{}.start(t)
	s := proxy.Open(friendspbconnect.FriendsName, "u", nil)
	describe(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), functiontest.Timeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	s.Ended()
}
