package presence_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/cloudstate/function/functiontest"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
	"github.com/cloudchat/cloudchat/services/presence"
)

func start(t *testing.T) *functiontest.Proxy {
	t.Helper()
	srv, err := function.New(function.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Register(presence.NewEntity(presence.Config{})); err != nil {
		t.Fatal(err)
	}
	return functiontest.NewProxy(t, functiontest.Serve(t, srv))
}

// user is the stream of one user's entity, with helpers for the calls.
type user struct {
	t *testing.T
	*functiontest.Stream
	name string
}

func open(t *testing.T, p *functiontest.Proxy, name string, state *protocol.CrdtState) *user {
	return &user{t: t, Stream: p.Open(presencepbconnect.PresenceName, name, state), name: name}
}

func (u *user) call(method string, streamed bool) int64 {
	return u.Command(method, &presencepb.User{Name: u.name}, streamed)
}

// status reads the status a reply or streamed message sends.
func (u *user) status(m interface {
	GetClientAction() *protocol.ClientAction
}) bool {
	u.t.Helper()
	return functiontest.ReplyPayload[*presencepb.OnlineStatus](u.t, m).GetOnline()
}

// settle checks that nothing was sent since the last message read: the
// function handles messages in order, so the reply to a plain Monitor call
// comes after anything the earlier messages caused. It returns the status.
func (u *user) settle() bool {
	u.t.Helper()
	id := u.call("Monitor", false)
	msg := u.Next()
	if msg.GetReply().GetCommandId() != id {
		u.t.Fatalf("got %v, want nothing before the reply to %d", msg, id)
	}
	return u.status(msg.GetReply())
}

// selfVote returns the vote a state action sends, failing without one.
func selfVote(t *testing.T, a *protocol.CrdtStateAction) bool {
	t.Helper()
	v := a.GetUpdate().GetVote()
	if v == nil {
		t.Fatalf("got state action %v, want a vote", a)
	}
	return v.GetSelfVote()
}

func voteDelta(votesFor, total int32) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{
		Vote: &protocol.VoteDelta{VotesFor: votesFor, TotalVoters: total, SelfVote: false},
	}}
}

func TestConnectAndMonitor(t *testing.T) {
	t.Parallel()
	u := open(t, start(t), "alice", nil)

	m := u.call("Monitor", true)
	r := u.Reply(m)
	if !r.GetStreamed() || u.status(r) || r.GetStateAction() != nil {
		t.Fatalf("monitor reply: %v, want streamed, offline, no change", r)
	}

	// The first Connect votes for and sends one Empty at once.
	c1 := u.call("Connect", true)
	r = u.Reply(c1)
	if !r.GetStreamed() || !selfVote(t, r.GetStateAction()) {
		t.Errorf("first connect: %v", r)
	}
	functiontest.ReplyPayload[*presencepb.Empty](t, r)
	if !u.status(u.Streamed(m)) {
		t.Error("monitor after the first connect: offline")
	}

	// A second Connect changes nothing.
	c2 := u.call("Connect", true)
	if r := u.Reply(c2); r.GetStateAction() != nil || !r.GetStreamed() {
		t.Errorf("second connect: %v", r)
	}
	if !u.settle() {
		t.Error("status after two connects: offline")
	}

	// The first cancel keeps the user online, the last votes against.
	u.Cancel(c1)
	if r := u.CancelResponse(c1); r.GetStateAction() != nil {
		t.Errorf("first cancel: %v", r)
	}
	if !u.settle() {
		t.Error("status after one cancel: offline")
	}
	u.Cancel(c2)
	if r := u.CancelResponse(c2); selfVote(t, r.GetStateAction()) {
		t.Errorf("last cancel: %v, want a vote against", r)
	}
	if u.status(u.Streamed(m)) {
		t.Error("monitor after the last cancel: online")
	}
	if u.settle() {
		t.Error("status after the last cancel: online")
	}

	// Votes of other nodes: a message per flip, none for the same status.
	u.Changed(voteDelta(1, 3))
	if !u.status(u.Streamed(m)) {
		t.Error("monitor after a remote vote: offline")
	}
	u.Changed(voteDelta(2, 3))
	if !u.settle() {
		t.Error("status after a second remote vote: offline")
	}
	u.Changed(voteDelta(0, 3))
	if u.status(u.Streamed(m)) {
		t.Error("monitor after the remote votes went: online")
	}
	u.settle()

	// A cancelled monitor is answered and hears no more.
	u.Cancel(m)
	u.CancelResponse(m)
	u.Changed(voteDelta(1, 3))
	if !u.settle() {
		t.Error("status after a remote vote: offline")
	}
}

func TestConnectReconnect(t *testing.T) {
	t.Parallel()
	u := open(t, start(t), "bob", nil)
	m := u.call("Monitor", true)
	u.Reply(m)
	for i := range 3 {
		c := u.call("Connect", true)
		if r := u.Reply(c); !selfVote(t, r.GetStateAction()) {
			t.Errorf("connect %d: %v", i, r)
		}
		if !u.status(u.Streamed(m)) {
			t.Errorf("connect %d: monitor says offline", i)
		}
		u.Cancel(c)
		if r := u.CancelResponse(c); selfVote(t, r.GetStateAction()) {
			t.Errorf("cancel %d: %v", i, r)
		}
		if u.status(u.Streamed(m)) {
			t.Errorf("cancel %d: monitor says online", i)
		}
	}
}

func TestBadCalls(t *testing.T) {
	t.Parallel()
	p := start(t)
	u := open(t, p, "carol", nil)
	id := u.call("Connect", false)
	r := u.Reply(id)
	if f := r.GetClientAction().GetFailure(); !strings.Contains(f.GetDescription(), "streaming call") {
		t.Errorf("plain Connect: got %v, want a failure", r)
	}
	if r.GetStateAction() != nil {
		t.Errorf("plain Connect changed the vote: %v", r.GetStateAction())
	}
	if u.settle() {
		t.Error("online after a plain Connect")
	}

	empty := &user{t: t, Stream: p.Open(presencepbconnect.PresenceName, "", nil)}
	for _, method := range []string{"Connect", "Monitor"} {
		r := empty.Reply(empty.call(method, true))
		f := r.GetClientAction().GetFailure()
		if f.GetDescription() != "user name must not be empty" {
			t.Errorf("%s without a name: got %v", method, r)
		}
	}
}

func TestStaleVoteWithdrawn(t *testing.T) {
	t.Parallel()
	// The proxy still holds this node's vote from before a restart, but no
	// Connect call is open here any more.
	u := open(t, start(t), "dave", &protocol.CrdtState{State: &protocol.CrdtState_Vote{
		Vote: &protocol.VoteState{VotesFor: 1, TotalVoters: 2, SelfVote: true},
	}})
	r := u.Reply(u.call("Monitor", true))
	if u.status(r) {
		t.Error("monitor: online on a stale vote alone")
	}
	want := &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{
		Update: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{}}},
	}}
	if !proto.Equal(r.GetStateAction(), want) {
		t.Errorf("got %v, want the stale vote withdrawn", r.GetStateAction())
	}
	if u.settle() {
		t.Error("online after the stale vote was withdrawn")
	}
}
