package function_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/cloudstate/function/functiontest"
	"github.com/cloudchat/cloudchat/cloudstate/value"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// The bench turns the chat services into a test bench for the SDK:
// Friends.Add runs the operation its friend field names, Friends.GetFriends
// describes the entity's value, and Presence.Monitor runs the test's own
// streaming handler.

type (
	op          func(ctx *function.CommandContext) error
	monitorFunc func(*function.CommandContext, *presencepb.User,
		*function.Stream[*presencepb.OnlineStatus]) error
)

type bench struct {
	def     func(string) function.CRDT
	ops     map[string]op
	monitor monitorFunc
	connect func(*function.CommandContext, *presencepb.User,
		*function.Stream[*presencepb.Empty]) error
}

// adds counts the Add commands of each entity instance.
var adds = function.NewLocal(func(string) *int { return new(int) })

func (b bench) start(t *testing.T) (*functiontest.Proxy, *function.Server) {
	t.Helper()
	srv, err := function.New(function.Config{})
	if err != nil {
		t.Fatal(err)
	}
	friends := function.NewEntity(friendspbconnect.FriendsName,
		function.EntityOptions{Default: b.def})
	function.Handle(friends, "Add",
		func(ctx *function.CommandContext, req *friendspb.Friend) (*friendspb.Empty, error) {
			*adds.Get(ctx)++
			name, _, _ := strings.Cut(req.GetFriend(), " ")
			f := b.ops[name]
			if f == nil {
				return nil, fmt.Errorf("no op %q", req.GetFriend())
			}
			if err := f(ctx); err != nil {
				return nil, err
			}
			if strings.HasPrefix(name, "forward") {
				return nil, nil
			}
			return &friendspb.Empty{}, nil
		})
	function.Handle(friends, "GetFriends",
		func(ctx *function.CommandContext, _ *friendspb.User) (*friendspb.FriendsList, error) {
			return &friendspb.FriendsList{Friends: []string{
				function.Describe(ctx.State()), fmt.Sprint(*adds.Get(ctx)),
			}}, nil
		})
	presence := function.NewEntity(presencepbconnect.PresenceName,
		function.EntityOptions{Default: b.def})
	if b.monitor != nil {
		function.HandleStream(presence, "Monitor", b.monitor)
	}
	if b.connect != nil {
		function.HandleStream(presence, "Connect", b.connect)
	}
	for _, e := range []*function.Entity{friends, presence} {
		if err := srv.Register(e); err != nil {
			t.Fatal(err)
		}
	}
	return functiontest.NewProxy(t, functiontest.Serve(t, srv)), srv
}

func add(s *functiontest.Stream, op string) int64 {
	return s.Command("Add", &friendspb.Friend{User: "u", Friend: op}, false)
}

func monitor(s *functiontest.Stream) int64 {
	return s.Command("Monitor", &presencepb.User{Name: "u"}, true)
}

// describe asks the function for a description of its value.
func describe(t *testing.T, s *functiontest.Stream) string {
	t.Helper()
	r := s.Reply(s.Command("GetFriends", &friendspb.User{User: "u"}, false))
	return functiontest.ReplyPayload[*friendspb.FriendsList](t, r).GetFriends()[0]
}

// update returns the delta of a reply's update, failing on any other action.
func update(t *testing.T, r *protocol.CrdtReply) *protocol.CrdtDelta {
	t.Helper()
	if r.GetClientAction().GetFailure() != nil {
		t.Fatalf("command failed: %v", r.GetClientAction().GetFailure())
	}
	if r.GetStateAction().GetUpdate() == nil {
		t.Fatalf("got state action %v, want an update", r.GetStateAction())
	}
	return r.GetStateAction().GetUpdate()
}

func failure(t *testing.T, r *protocol.CrdtReply) string {
	t.Helper()
	f := r.GetClientAction().GetFailure()
	if f == nil {
		t.Fatalf("got %v, want a failure", r)
	}
	if f.GetCommandId() != r.GetCommandId() {
		t.Errorf("failure for command %d in the reply to %d", f.GetCommandId(), r.GetCommandId())
	}
	if r.GetStateAction() != nil || len(r.GetSideEffects()) > 0 {
		t.Errorf("a failed command sent %v", r)
	}
	return f.GetDescription()
}

func str(s string) *anypb.Any { return value.EncodeString(s) }

func strs(ss ...string) []*anypb.Any {
	out := make([]*anypb.Any, len(ss))
	for i, s := range ss {
		out[i] = str(s)
	}
	return out
}

func state[T any](t *testing.T, ctx function.EntityContext) T {
	t.Helper()
	v, ok := ctx.State().(T)
	if !ok {
		var zero T
		t.Errorf("value is %T, want %T", ctx.State(), zero)
	}
	return v
}

func TestInitEachType(t *testing.T) {
	t.Parallel()
	gc := func(v uint64) *protocol.CrdtState {
		return &protocol.CrdtState{State: &protocol.CrdtState_Gcounter{
			Gcounter: &protocol.GCounterState{Value: v},
		}}
	}
	tests := []struct {
		name      string
		state     *protocol.CrdtState
		fresh     func() function.CRDT
		op        func(v function.CRDT) error
		want      string // the value from state
		wantDelta *protocol.CrdtDelta
		wantAfter string // after op
		wantFresh string // after op on a fresh value
	}{
		{
			name:  "gcounter",
			state: gc(5),
			fresh: func() function.CRDT { return function.NewGCounter() },
			op:    func(v function.CRDT) error { return v.(*function.GCounter).Increment(3) },
			want:  "gcounter 5",
			wantDelta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{
				Gcounter: &protocol.GCounterDelta{Increment: 3},
			}},
			wantAfter: "gcounter 8",
			wantFresh: "gcounter 3",
		},
		{
			name: "pncounter",
			state: &protocol.CrdtState{State: &protocol.CrdtState_Pncounter{
				Pncounter: &protocol.PNCounterState{Value: -2},
			}},
			fresh: func() function.CRDT { return function.NewPNCounter() },
			op:    func(v function.CRDT) error { return v.(*function.PNCounter).Decrement(4) },
			want:  "pncounter -2",
			wantDelta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{
				Pncounter: &protocol.PNCounterDelta{Change: -4},
			}},
			wantAfter: "pncounter -6",
			wantFresh: "pncounter -4",
		},
		{
			name: "gset",
			state: &protocol.CrdtState{State: &protocol.CrdtState_Gset{
				Gset: &protocol.GSetState{Items: strs("a")},
			}},
			fresh: func() function.CRDT { return function.NewGSet() },
			op: func(v function.CRDT) error {
				v.(*function.GSet).Add(str("b"))
				return nil
			},
			want: "gset [a]",
			wantDelta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{
				Gset: &protocol.GSetDelta{Added: strs("b")},
			}},
			wantAfter: "gset [a b]",
			wantFresh: "gset [b]",
		},
		{
			name: "orset",
			state: &protocol.CrdtState{State: &protocol.CrdtState_Orset{
				Orset: &protocol.ORSetState{Items: strs("a", "b")},
			}},
			fresh: func() function.CRDT { return function.NewORSet() },
			op: func(v function.CRDT) error {
				s := v.(*function.ORSet)
				s.Remove(str("a"))
				s.Add(str("c"))
				return nil
			},
			want: "orset [a b]",
			wantDelta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{
				Orset: &protocol.ORSetDelta{Removed: strs("a"), Added: strs("c")},
			}},
			wantAfter: "orset [b c]",
			wantFresh: "orset [c]",
		},
		{
			name: "lwwregister",
			state: &protocol.CrdtState{State: &protocol.CrdtState_Lwwregister{
				Lwwregister: &protocol.LWWRegisterState{Value: str("x")},
			}},
			fresh: func() function.CRDT { return function.NewLWWRegister(nil) },
			op: func(v function.CRDT) error {
				v.(*function.LWWRegister).SetWithClock(str("y"), function.ClockCustom, 42)
				return nil
			},
			want: "lwwregister [x]",
			wantDelta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{
				Lwwregister: &protocol.LWWRegisterDelta{
					Value: str("y"), Clock: protocol.CrdtClock_CUSTOM, CustomClockValue: 42,
				},
			}},
			wantAfter: "lwwregister [y]",
			wantFresh: "lwwregister [y]",
		},
		{
			name:  "flag",
			state: &protocol.CrdtState{State: &protocol.CrdtState_Flag{Flag: &protocol.FlagState{}}},
			fresh: func() function.CRDT { return function.NewFlag() },
			op: func(v function.CRDT) error {
				v.(*function.Flag).Enable()
				return nil
			},
			want: "flag false",
			wantDelta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{
				Flag: &protocol.FlagDelta{Value: true},
			}},
			wantAfter: "flag true",
			wantFresh: "flag true",
		},
		{
			name: "ormap",
			state: &protocol.CrdtState{State: &protocol.CrdtState_Ormap{
				Ormap: &protocol.ORMapState{Entries: []*protocol.ORMapEntry{
					{Key: str("k"), Value: gc(1)},
				}},
			}},
			fresh: func() function.CRDT { return function.NewORMap() },
			op: func(v function.CRDT) error {
				m := v.(*function.ORMap)
				e, ok := m.Get(str("k"))
				if !ok {
					e = function.NewGCounter()
					if err := m.Set(str("k"), e); err != nil {
						return err
					}
				}
				return e.(*function.GCounter).Increment(2)
			},
			want: "ormap {[k]: gcounter 1}",
			wantDelta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{
				Ormap: &protocol.ORMapDelta{Updated: []*protocol.ORMapEntryDelta{{
					Key: str("k"),
					Delta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{
						Gcounter: &protocol.GCounterDelta{Increment: 2},
					}},
				}}},
			}},
			wantAfter: "ormap {[k]: gcounter 3}",
			wantFresh: "ormap {[k]: gcounter 2}",
		},
		{
			name: "vote",
			state: &protocol.CrdtState{State: &protocol.CrdtState_Vote{
				Vote: &protocol.VoteState{VotesFor: 1, TotalVoters: 3},
			}},
			fresh: func() function.CRDT { return function.NewVote() },
			op: func(v function.CRDT) error {
				v.(*function.Vote).Set(true)
				return nil
			},
			want: "vote self=false 1/3",
			wantDelta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{
				Vote: &protocol.VoteDelta{SelfVote: true},
			}},
			wantAfter: "vote self=true 2/3",
			wantFresh: "vote self=true 1/1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			proxy, _ := bench{ops: map[string]op{
				"op": func(ctx *function.CommandContext) error { return tt.op(ctx.State()) },
				"create": func(ctx *function.CommandContext) error {
					v := tt.fresh()
					if err := ctx.SetState(v); err != nil {
						return err
					}
					return tt.op(v)
				},
			}}.start(t)

			s := proxy.Open(friendspbconnect.FriendsName, "u", tt.state)
			if got := describe(t, s); got != tt.want {
				t.Errorf("from state: got %q, want %q", got, tt.want)
			}
			got := update(t, s.Reply(add(s, "op")))
			if !proto.Equal(got, tt.wantDelta) {
				t.Errorf("delta: got %v, want %v", got, tt.wantDelta)
			}
			if got := describe(t, s); got != tt.wantAfter {
				t.Errorf("after the op: got %q, want %q", got, tt.wantAfter)
			}

			// Without state, a new value is reported as an update, never as
			// a create.
			s = proxy.Open(friendspbconnect.FriendsName, "v", nil)
			if got := describe(t, s); got != "<none>" {
				t.Errorf("without state: got %q, want no value", got)
			}
			r := s.Reply(add(s, "create"))
			update(t, r)
			if r.GetStateAction().GetCreate() != nil {
				t.Errorf("a new value was sent as a create: %v", r.GetStateAction())
			}
			if got := describe(t, s); got != tt.wantFresh {
				t.Errorf("new value: got %q, want %q", got, tt.wantFresh)
			}
		})
	}
}

func TestDefaultValue(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{
		def: func(string) function.CRDT { return function.NewORSet() },
		ops: map[string]op{
			"add": func(ctx *function.CommandContext) error {
				state[*function.ORSet](t, ctx).Add(str("a"))
				return nil
			},
			"nothing": func(*function.CommandContext) error { return nil },
		},
	}.start(t)
	s := proxy.Open(friendspbconnect.FriendsName, "u", nil)
	if r := s.Reply(add(s, "nothing")); r.GetStateAction() != nil {
		t.Errorf("an unchanged default value was sent: %v", r.GetStateAction())
	}
	if got := describe(t, s); got != "orset []" {
		t.Errorf("got %q, want the default", got)
	}
	want := &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{
		Orset: &protocol.ORSetDelta{Added: strs("a")},
	}}
	if got := update(t, s.Reply(add(s, "add"))); !proto.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}

	// A value from the proxy replaces the unchanged default, even of
	// another type.
	s = proxy.Open(friendspbconnect.FriendsName, "w", nil)
	s.Reply(add(s, "nothing"))
	s.Changed(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{
		Gcounter: &protocol.GCounterDelta{Increment: 4},
	}})
	if got := describe(t, s); got != "gcounter 4" {
		t.Errorf("got %q, want the proxy's value", got)
	}
}

func TestStateAndChangedFromProxy(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{def: func(string) function.CRDT { return function.NewORSet() }}.start(t)
	s := proxy.Open(friendspbconnect.FriendsName, "u", nil)
	s.Changed(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{
		Orset: &protocol.ORSetDelta{Added: strs("a", "b")},
	}})
	s.Changed(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{
		Orset: &protocol.ORSetDelta{Cleared: true, Removed: strs("x"), Added: strs("c")},
	}})
	if got, want := describe(t, s), "orset [c]"; got != want {
		t.Errorf("after deltas: got %q, want %q", got, want)
	}
	s.State(&protocol.CrdtState{State: &protocol.CrdtState_Orset{
		Orset: &protocol.ORSetState{Items: strs("d", "e")},
	}})
	if got, want := describe(t, s), "orset [d e]"; got != want {
		t.Errorf("after state: got %q, want %q", got, want)
	}
	s.State(&protocol.CrdtState{State: &protocol.CrdtState_Flag{Flag: &protocol.FlagState{Value: true}}})
	if got, want := describe(t, s), "flag true"; got != want {
		t.Errorf("after a state of another type: got %q, want %q", got, want)
	}

	// A delta that does not fit the value breaks the protocol.
	s.Changed(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{
		Gcounter: &protocol.GCounterDelta{Increment: 1},
	}})
	f := s.Failure()
	if f.GetCommandId() != 0 || !strings.Contains(f.GetDescription(), "got a gcounter delta") {
		t.Errorf("got failure %v", f)
	}
	if err := s.Ended(); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("stream ended with %v, want invalid_argument", err)
	}
}

func TestPipelinedCommands(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{
		def: func(string) function.CRDT { return function.NewGCounter() },
		connect: func(ctx *function.CommandContext, _ *presencepb.User,
			s *function.Stream[*presencepb.Empty]) error {
			if err := state[*function.GCounter](t, ctx).Increment(1); err != nil {
				return err
			}
			return s.Send(&presencepb.Empty{})
		},
		monitor: func(ctx *function.CommandContext, _ *presencepb.User,
			s *function.Stream[*presencepb.OnlineStatus]) error {
			s.OnChange(func(*function.ChangeContext) error {
				return s.Send(&presencepb.OnlineStatus{Online: true})
			})
			return nil
		},
	}.start(t)
	s := proxy.Open(presencepbconnect.PresenceName, "u", nil)

	// The proxy sends commands without waiting for replies; ids need only
	// grow. Every command is answered once by its own id, and the monitor
	// hears of every change in between.
	m := int64(3)
	s.CommandWithID(m, "Monitor", &presencepb.User{Name: "u"}, true)
	var ids []int64
	for i := range 50 {
		id := int64(10 + 2*i)
		s.CommandWithID(id, "Connect", &presencepb.User{Name: "u"}, true)
		ids = append(ids, id)
	}
	replies := map[int64]int{}
	ends := map[int64]int{}
	var notified int
	for len(replies) < len(ids)+1 || len(ends) < len(ids) || notified < len(ids) {
		msg := s.Next()
		switch sm := msg.GetStreamedMessage(); {
		case msg.GetReply() != nil:
			r := msg.GetReply()
			replies[r.GetCommandId()]++
			if !r.GetStreamed() {
				t.Errorf("reply %d is not streamed", r.GetCommandId())
			}
			if r.GetCommandId() != m {
				if d := update(t, r); d.GetGcounter().GetIncrement() != 1 {
					t.Errorf("reply %d: delta %v", r.GetCommandId(), d)
				}
			}
		case sm.GetCommandId() == m && !sm.GetEndStream():
			notified++
		case sm.GetEndStream():
			if replies[sm.GetCommandId()] != 1 {
				t.Errorf("call %d ended before its reply", sm.GetCommandId())
			}
			ends[sm.GetCommandId()]++
		default:
			t.Fatalf("unexpected %v", msg)
		}
	}
	for _, id := range ids {
		if replies[id] != 1 || ends[id] != 1 {
			t.Errorf("command %d: %d replies, %d ends", id, replies[id], ends[id])
		}
	}
	if replies[m] != 1 || notified != len(ids) {
		t.Errorf("monitor: %d replies, %d messages", replies[m], notified)
	}
	s.Cancel(m)
	s.CancelResponse(m)
}

func TestFailureUndoesChanges(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{
		def: func(string) function.CRDT { return function.NewORMap() },
		ops: map[string]op{
			"add": func(ctx *function.CommandContext) error {
				m := state[*function.ORMap](t, ctx)
				s := function.NewORSet()
				s.Add(str("a"))
				return m.Set(str("k"), s)
			},
			"nested-then-fail": func(ctx *function.CommandContext) error {
				m := state[*function.ORMap](t, ctx)
				e, _ := m.Get(str("k"))
				e.(*function.ORSet).Add(str("x"))
				if err := m.Set(str("j"), function.NewFlag()); err != nil {
					return err
				}
				return ctx.Fail("refused %s", "x")
			},
			"delete-then-fail": func(ctx *function.CommandContext) error {
				ctx.Delete()
				return errors.New("not deleted")
			},
			"add-b": func(ctx *function.CommandContext) error {
				m := state[*function.ORMap](t, ctx)
				e, _ := m.Get(str("k"))
				e.(*function.ORSet).Add(str("b"))
				return nil
			},
		},
	}.start(t)
	s := proxy.Open(friendspbconnect.FriendsName, "u", nil)
	update(t, s.Reply(add(s, "add")))

	if got := failure(t, s.Reply(add(s, "nested-then-fail"))); got != "refused x" {
		t.Errorf("description: got %q, want %q", got, "refused x")
	}
	if got, want := describe(t, s), "ormap {[k]: orset [a]}"; got != want {
		t.Errorf("after a failed command: got %q, want %q", got, want)
	}
	failure(t, s.Reply(add(s, "delete-then-fail")))

	// The next change carries only its own delta.
	want := &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: &protocol.ORMapDelta{
		Updated: []*protocol.ORMapEntryDelta{{Key: str("k"), Delta: &protocol.CrdtDelta{
			Delta: &protocol.CrdtDelta_Orset{Orset: &protocol.ORSetDelta{Added: strs("b")}},
		}}},
	}}}
	if got := update(t, s.Reply(add(s, "add-b"))); !proto.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}

	// A value created by a failed command is dropped.
	proxy2, _ := bench{ops: map[string]op{"create-then-fail": func(ctx *function.CommandContext) error {
		c := function.NewGCounter()
		if err := ctx.SetState(c); err != nil {
			return err
		}
		if err := c.Increment(1); err != nil {
			return err
		}
		return errors.New("no")
	}}}.start(t)
	s = proxy2.Open(friendspbconnect.FriendsName, "u", nil)
	failure(t, s.Reply(add(s, "create-then-fail")))
	if got := describe(t, s); got != "<none>" {
		t.Errorf("got %q, want no value", got)
	}
}

func TestPanicFailsOnlyTheCommand(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{
		def: func(string) function.CRDT { return function.NewGCounter() },
		ops: map[string]op{"panic": func(ctx *function.CommandContext) error {
			if err := state[*function.GCounter](t, ctx).Increment(7); err != nil {
				return err
			}
			var m map[string]int
			m["boom"]++
			return nil
		}},
	}.start(t)
	s := proxy.Open(friendspbconnect.FriendsName, "u", nil)
	id := add(s, "panic")
	f := s.Failure()
	if f.GetCommandId() != id || !strings.Contains(f.GetDescription(), "internal error") {
		t.Errorf("got failure %v, want an internal error for command %d", f, id)
	}
	if got := describe(t, s); got != "gcounter 0" {
		t.Errorf("after the panic: got %q, want the value unchanged", got)
	}
}

func TestCommandErrors(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{}.start(t)
	s := proxy.Open(friendspbconnect.FriendsName, "u", nil)
	tests := []struct {
		name string
		send func() int64
		want string
	}{
		{"unknown command", func() int64 {
			return s.Command("Nope", &friendspb.User{}, false)
		}, `unknown command "Nope" of service cloudstate.samples.chat.friends.Friends`},
		{"no handler", func() int64 {
			return s.Command("Remove", &friendspb.Friend{}, false)
		}, "command Remove of service cloudstate.samples.chat.friends.Friends has no handler"},
		{"wrong payload", func() int64 {
			return s.Command("Add", &friendspb.User{}, false)
		}, "type mismatch"},
		{"streamed unary", func() int64 {
			return s.Command("Add", &friendspb.Friend{}, true)
		}, "does not stream responses"},
	}
	for _, tt := range tests {
		id := tt.send()
		f := s.Failure()
		if f.GetCommandId() != id || !strings.Contains(f.GetDescription(), tt.want) {
			t.Errorf("%s: got %v, want command %d failed with %q", tt.name, f, id, tt.want)
		}
	}

	s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Command{Command: &protocol.Command{
		Id: 100, EntityId: "other", Name: "GetFriends", Payload: mustAny(t, &friendspb.User{}),
	}}})
	if f := s.Failure(); f.GetCommandId() != 100 || !strings.Contains(f.GetDescription(), `"other"`) {
		t.Errorf("command for another entity: got %v", f)
	}

	// A reused id is refused without running the command.
	s.CommandWithID(100, "GetFriends", &friendspb.User{}, false)
	if f := s.Failure(); f.GetCommandId() != 0 || !strings.Contains(f.GetDescription(), "100") {
		t.Errorf("reused id: got %v", f)
	}
	s.CommandWithID(101, "GetFriends", &friendspb.User{}, false)
	s.Reply(101)
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := value.EncodeMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestStreamOpeningErrors(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{}.start(t)
	tests := []struct {
		name  string
		first *protocol.CrdtStreamIn
		then  *protocol.CrdtStreamIn
		want  string
	}{
		{"unknown service", &protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Init{
			Init: &protocol.CrdtInit{ServiceName: "no.Such", EntityId: "u"},
		}}, nil, `unknown service "no.Such"`},
		{"command first", &protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Command{
			Command: &protocol.Command{Id: 1, Name: "GetFriends"},
		}}, nil, "the first message must be init"},
		{"init twice", &protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Init{
			Init: &protocol.CrdtInit{ServiceName: friendspbconnect.FriendsName, EntityId: "u"},
		}}, &protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Init{
			Init: &protocol.CrdtInit{ServiceName: friendspbconnect.FriendsName, EntityId: "u"},
		}}, "init received twice"},
		{"empty message", &protocol.CrdtStreamIn{}, nil, "must be init"},
		{"bad state", &protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Init{
			Init: &protocol.CrdtInit{
				ServiceName: friendspbconnect.FriendsName, EntityId: "u",
				State: &protocol.CrdtState{},
			},
		}}, nil, "no CRDT type set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := proxy.OpenRaw()
			s.Send(tt.first)
			if tt.then != nil {
				s.Send(tt.then)
			}
			f := s.Failure()
			if f.GetCommandId() != 0 || !strings.Contains(f.GetDescription(), tt.want) {
				t.Errorf("got %v, want a failure containing %q", f, tt.want)
			}
			if err := s.Ended(); connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("stream ended with %v, want invalid_argument", err)
			}
		})
	}
}

func TestDefaultPanics(t *testing.T) {
	t.Parallel()
	proxy, _ := bench{
		def: func(id string) function.CRDT {
			if id == "bad" {
				panic("no default for bad")
			}
			return function.NewFlag()
		},
		ops: map[string]op{"nothing": func(*function.CommandContext) error { return nil }},
	}.start(t)
	s := proxy.Open(friendspbconnect.FriendsName, "bad", nil)
	id := add(s, "nothing")
	if f := s.Failure(); f.GetCommandId() != id || !strings.Contains(f.GetDescription(), "default") {
		t.Errorf("got %v, want command %d failed in the default value", f, id)
	}
	s = proxy.Open(friendspbconnect.FriendsName, "good", nil)
	if got := describe(t, s); got != "flag false" {
		t.Errorf("another entity: got %q", got)
	}
}
