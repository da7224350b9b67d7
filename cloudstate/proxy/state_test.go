package proxy

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/cloudstate/crdt"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/presencepb"
)

// addFriends adds each friend to user's list.
func addFriends(t *testing.T, h *harness, user string, friends ...string) {
	t.Helper()
	for _, f := range friends {
		_, err := h.friends().Add(context.Background(),
			connect.NewRequest(&friendspb.Friend{User: user, Friend: f}))
		if err != nil {
			t.Fatalf("add %s: %v", f, err)
		}
	}
}

// wantFriends polls until user's list is want.
func wantFriends(t *testing.T, h *harness, user string, want ...string) {
	t.Helper()
	eventually(t, "friends of "+user, func() error {
		res, err := h.friends().GetFriends(context.Background(),
			connect.NewRequest(&friendspb.User{User: user}))
		if err != nil {
			return err
		}
		got := slices.Sorted(slices.Values(res.Msg.GetFriends()))
		if !slices.Equal(got, want) {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	})
}

// setItems returns the elements of an ORSet state, sorted.
func setItems(st *protocol.CrdtState) []string {
	var out []string
	for _, it := range st.GetOrset().GetItems() {
		out = append(out, unstr(it))
	}
	slices.Sort(out)
	return out
}

func TestStateSurvivesFunctionRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, nil)
	h.waitReady()
	addFriends(t, h, "alice", "bob", "carol")
	wantFriends(t, h, "alice", "bob", "carol")

	h.fn.kill()
	_, err := h.friends().GetFriends(context.Background(),
		connect.NewRequest(&friendspb.User{User: "alice"}))
	wantCode(t, err, connect.CodeUnavailable, "")
	h.fn.start(t, h.fnAddr)

	// The restarted function holds nothing; init brings the list back.
	wantFriends(t, h, "alice", "bob", "carol")
	inits := h.initsFor("alice")
	last := inits[len(inits)-1]
	if got := setItems(last.GetState()); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Errorf("init after restart carried %q", got)
	}
	if last.GetServiceName() != friendsService {
		t.Errorf("init service %q", last.GetServiceName())
	}
}

func TestPassivationReopensWithState(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, func(c *Config) { c.PassivationTimeout = 100 * time.Millisecond })
	h.waitReady()
	addFriends(t, h, "alice", "bob")
	eventually(t, "passivation", func() error {
		if h.fn.endedStreams() == 0 {
			return fmt.Errorf("entity still active")
		}
		return nil
	})
	wantFriends(t, h, "alice", "bob")
	inits := h.initsFor("alice")
	if len(inits) != 2 {
		t.Fatalf("%d inits, want 2", len(inits))
	}
	if inits[0].GetState() != nil {
		t.Errorf("first init carried state %v", inits[0].GetState())
	}
	if got := setItems(inits[1].GetState()); !slices.Equal(got, []string{"bob"}) {
		t.Errorf("second init carried %q", got)
	}
}

func TestPresenceVotesOverStreams(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, nil)
	h.waitReady()
	ctx := context.Background()

	monitor, err := h.presence().Monitor(ctx, connect.NewRequest(&presencepb.User{Name: "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	next := func(want bool) {
		t.Helper()
		if !monitor.Receive() {
			t.Fatalf("monitor ended: %v", monitor.Err())
		}
		if got := monitor.Msg().GetOnline(); got != want {
			t.Fatalf("online = %v, want %v", got, want)
		}
	}
	next(false)

	connCtx, disconnect := context.WithCancel(ctx)
	conn, err := h.presence(connect.WithGRPCWeb()).Connect(connCtx,
		connect.NewRequest(&presencepb.User{Name: "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	if !conn.Receive() {
		t.Fatalf("connect: %v", conn.Err())
	}
	next(true)
	disconnect()
	next(false)
	view, _ := h.p.Replicas().view("Presence-alice")
	if v := view.GetVote(); v.GetSelfVote() || v.GetVotesFor() != 0 || v.GetTotalVoters() != 1 {
		t.Errorf("replica after disconnect: %v", view)
	}
}

// remoteDelta is a change made by another node, as a cluster layer would
// deliver it.
func remoteDelta(t *testing.T, node crdt.NodeID, action *protocol.CrdtStateAction) crdt.CRDT {
	t.Helper()
	applied, err := crdt.Apply(nil, node, time.Now().UnixMilli(), action)
	if err != nil {
		t.Fatal(err)
	}
	return applied.Delta
}

func TestRemoteChangesReachFunctionWhenIdle(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	fn := newFakeFn(chatSpec(t))
	fn.hook = func(s *fnStream, cmd *protocol.Command) bool {
		if cmd.GetName() == "Remove" && cmd.GetEntityId() == "alice" {
			<-release
		}
		return false
	}
	h := newHarness(t, fn, nil)
	h.waitReady()
	addFriends(t, h, "alice", "bob")

	// While a command is outstanding, changes from elsewhere wait.
	errc := make(chan error, 1)
	go func() {
		_, err := h.friends().Remove(context.Background(),
			connect.NewRequest(&friendspb.Friend{User: "alice", Friend: "nobody"}))
		errc <- err
	}()
	eventually(t, "remove in flight", func() error {
		for _, c := range h.fn.snapshotCommands() {
			if c.GetName() == "Remove" {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	delta := remoteDelta(t, "node-2", setDelta(&protocol.ORSetDelta{
		Added: []*anypb.Any{str("dave")}}))
	if err := h.p.Replicas().Merge("Friends-alice", delta); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // give a wrong early push the chance to show
	for _, in := range h.fn.snapshotReceived() {
		if in.GetChanged() != nil || in.GetState() != nil {
			t.Fatalf("function told of a change while a command was outstanding: %v", in)
		}
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	wantFriends(t, h, "alice", "bob", "dave")
	var changed *protocol.CrdtDelta
	for _, in := range h.fn.snapshotReceived() {
		if in.GetChanged() != nil {
			changed = in.GetChanged()
		}
	}
	if got := changed.GetOrset().GetAdded(); len(got) != 1 || unstr(got[0]) != "dave" {
		t.Errorf("changed = %v, want dave added", changed)
	}
}

func TestLocalChangesReachChangeHook(t *testing.T) {
	t.Parallel()
	replicas := NewReplicas("node-1")
	var mu sync.Mutex
	var changes []Change
	replicas.OnChange(func(c Change) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, c)
	})
	h := newHarness(t, nil, func(c *Config) { c.Replicas = replicas })
	h.waitReady()
	addFriends(t, h, "alice", "bob")

	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 1 || changes[0].Key != "Friends-alice" || changes[0].Deleted {
		t.Fatalf("changes %+v, want one for Friends-alice", changes)
	}
	b, err := crdt.Marshal(changes[0].Delta)
	if err != nil {
		t.Fatal(err)
	}
	delta, err := crdt.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	other := NewReplicas("node-2")
	if err := other.Merge("Friends-alice", delta); err != nil {
		t.Fatal(err)
	}
	view, _ := other.view("Friends-alice")
	if got := setItems(view); !slices.Equal(got, []string{"bob"}) {
		t.Errorf("other node sees %q", got)
	}
	snap := other.Snapshot()
	if len(snap) != 1 || snap[0].Key != "Friends-alice" || snap[0].Value == nil {
		t.Errorf("snapshot %+v", snap)
	}
}

func TestMembershipChangeUpdatesVotes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, nil)
	h.waitReady()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := h.presence().Connect(ctx, connect.NewRequest(&presencepb.User{Name: "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	if !conn.Receive() {
		t.Fatal(conn.Err())
	}
	h.p.Replicas().SetMembership(crdt.Membership{Alive: []crdt.NodeID{"node-1", "node-2"}})
	eventually(t, "vote total pushed", func() error {
		for _, in := range h.fn.snapshotReceived() {
			if v := in.GetChanged().GetVote(); v.GetTotalVoters() == 2 && v.GetVotesFor() == 1 {
				return nil
			}
		}
		return fmt.Errorf("no changed vote with 2 voters")
	})

	// Another node votes; the function hears of it.
	delta := remoteDelta(t, "node-2", voteDelta(true))
	if err := h.p.Replicas().Merge("Presence-alice", delta); err != nil {
		t.Fatal(err)
	}
	eventually(t, "remote vote pushed", func() error {
		for _, in := range h.fn.snapshotReceived() {
			if v := in.GetChanged().GetVote(); v.GetTotalVoters() == 2 && v.GetVotesFor() == 2 {
				return nil
			}
		}
		return fmt.Errorf("no changed vote with 2 votes")
	})
}

func TestDeletion(t *testing.T) {
	t.Parallel()
	fn := newFakeFn(chatSpec(t))
	fn.keepOpen = true
	fn.hook = func(s *fnStream, cmd *protocol.Command) bool {
		if cmd.GetName() != "Remove" || cmd.GetEntityId() != "doomed" {
			return false
		}
		s.reply(cmd.GetId(), &friendspb.Empty{}, &protocol.CrdtStateAction{
			Action: &protocol.CrdtStateAction_Delete{Delete: &protocol.CrdtDelete{}}}, false)
		return true
	}
	h := newHarness(t, fn, nil)
	h.waitReady()
	ctx := context.Background()
	addFriends(t, h, "doomed", "bob")
	remove := connect.NewRequest(&friendspb.Friend{User: "doomed"})
	if _, err := h.friends().Remove(ctx, remove); err != nil {
		t.Fatal(err)
	}
	_, err := h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{User: "doomed"}))
	wantCode(t, err, connect.CodeNotFound, "entity deleted")

	// The function keeps its side open, as the JavaScript library does; the
	// proxy cancels it after the grace period.
	eventually(t, "stream cancelled", func() error {
		if h.fn.endedStreams() == 0 {
			return fmt.Errorf("stream still open")
		}
		return nil
	})
	if _, deleted := h.p.Replicas().view("Friends-doomed"); !deleted {
		t.Error("replica not a tombstone")
	}

	// A deletion from elsewhere reaches an active entity as deleted.
	addFriends(t, h, "victim", "bob")
	h.p.Replicas().Delete("Friends-victim")
	eventually(t, "deleted pushed", func() error {
		for _, in := range h.fn.snapshotReceived() {
			if in.GetDeleted() != nil {
				return nil
			}
		}
		return fmt.Errorf("function not told")
	})
	_, err = h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{User: "victim"}))
	wantCode(t, err, connect.CodeNotFound, "entity deleted")
}

func TestUnansweredCancelStopsHoldingChanges(t *testing.T) {
	t.Parallel()
	fn := newFakeFn(chatSpec(t))
	fn.ignoreCancels = true
	h := newHarness(t, fn, nil)
	h.waitReady()
	ctx, cancel := context.WithCancel(context.Background())
	monitor, err := h.presence().Monitor(ctx, connect.NewRequest(&presencepb.User{Name: "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	if !monitor.Receive() {
		t.Fatal(monitor.Err())
	}
	cancel()
	eventually(t, "stream_cancelled sent", func() error {
		for _, in := range h.fn.snapshotReceived() {
			if in.GetStreamCancelled() != nil {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	delta := remoteDelta(t, "node-1", voteDelta(true))
	if err := h.p.Replicas().Merge("Presence-alice", delta); err != nil {
		t.Fatal(err)
	}
	eventually(t, "change pushed after the grace period", func() error {
		for _, in := range h.fn.snapshotReceived() {
			if in.GetState().GetVote().GetVotesFor() == 1 {
				return nil
			}
		}
		return fmt.Errorf("change still held back")
	})
}
