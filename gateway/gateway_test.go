package gateway

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cloudchat/cloudchat/gateway/internal/fakeupstream"
	gatewayv1 "github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1"
	"github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1/gatewayv1connect"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

const (
	unknown = gatewayv1.UserStatus_USER_STATUS_UNKNOWN
	online  = gatewayv1.UserStatus_USER_STATUS_ONLINE
	offline = gatewayv1.UserStatus_USER_STATUS_OFFLINE
)

// TestConnectRefcounted checks that sessions and callers holding one user
// online share a single upstream Connect, cancelled at the last release.
func TestConnectRefcounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	token := e.signIn("alice")
	first := e.open(token)
	second := e.open(token)
	ctx, cancelRelay := context.WithCancel(context.Background())
	defer cancelRelay()
	relay, err := e.presenceRelay.Connect(ctx, withToken(&presencepb.User{Name: "alice"}, token))
	if err != nil {
		t.Fatalf("Presence.Connect: %v", err)
	}
	if !relay.Receive() {
		t.Fatalf("Presence.Connect sent nothing: %v", relay.Err())
	}
	eventually(t, "one upstream connect for alice", func() bool {
		return e.presence.Counts("alice").Connects == 1
	})

	first.close()
	e.sessionGone(first.id)
	cancelRelay()
	relay.Close()
	if c := e.presence.Counts("alice"); c.Connects != 1 || c.ConnectOpens != 1 {
		t.Errorf("with one session left: %d connects open, %d opened; want 1, 1",
			c.Connects, c.ConnectOpens)
	}

	second.close()
	eventually(t, "alice's upstream connect cancelled", func() bool {
		return e.presence.Counts("alice").Connects == 0
	})
	if c := e.presence.Counts("alice"); c.ConnectOpens != 1 || c.MaxConnects != 1 {
		t.Errorf("connects opened = %d, most at once = %d; want 1, 1",
			c.ConnectOpens, c.MaxConnects)
	}
}

// TestOneStreamPerUser opens and closes sessions of one user in quick
// succession from four callers and checks that the upstream never sees more
// Connects at once than the one open and the one ending.
func TestOneStreamPerUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	token := e.signIn("alice")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				s := e.start(token)
				for ev := range s.events {
					if ev.GetSessionOpened() != nil {
						break
					}
				}
				s.close()
			}
		})
	}
	wg.Wait()
	last := e.open(token)
	eventually(t, "alice connected upstream", func() bool {
		return e.presence.Counts("alice").Connects == 1
	})
	last.close()
	eventually(t, "alice's upstream connect cancelled", func() bool {
		return e.presence.Counts("alice").Connects == 0
	})
	// The gateway opens a user's next Connect only after its previous one
	// has ended on the gateway's side; the upstream learns of that end a
	// moment later, so it may briefly see the old stream beside the new one,
	// never more.
	if most := e.presence.Counts("alice").MaxConnects; most > 2 {
		t.Errorf("most upstream connects at once = %d, want at most 2", most)
	}
}

// TestMonitorFannedOut checks that every watcher of a user shares one
// upstream Monitor and that a late watcher gets the cached status at once.
func TestMonitorFannedOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.open(e.signIn("alice"))
	bob := e.open(e.signIn("bob"))
	carol := e.open(e.signIn("carol"))
	e.watch(bob, "alice")
	e.watch(carol, "alice")
	bob.awaitStatus("alice", online)
	carol.awaitStatus("alice", online)

	dave := e.open(e.signIn("dave"))
	e.watch(dave, "alice")
	if got := dave.nextStatus("alice"); got != online {
		t.Errorf("late watcher's first status = %v, want %v", got, online)
	}
	if c := e.presence.Counts("alice"); c.Monitors != 1 || c.MonitorOpens != 1 {
		t.Errorf("monitors of alice: %d open, %d opened; want 1, 1", c.Monitors, c.MonitorOpens)
	}

	alice.close()
	for _, s := range []*sessionStream{bob, carol, dave} {
		s.awaitStatus("alice", offline)
	}

	for _, s := range []*sessionStream{bob, carol, dave} {
		e.unwatch(s, "alice")
	}
	eventually(t, "alice's upstream monitor cancelled", func() bool {
		return e.presence.Counts("alice").Monitors == 0
	})
}

// TestUpstreamReopened drops every upstream stream and checks that the
// gateway opens them again, one per user, and that sessions see the gap.
func TestUpstreamReopened(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.open(e.signIn("alice"))
	bob := e.open(e.signIn("bob"))
	e.watch(bob, "alice")
	bob.awaitStatus("alice", online)
	eventually(t, "alice connected upstream", func() bool {
		return e.presence.Counts("alice").Connects == 1
	})

	e.presence.Drop()
	alice.awaitService(gatewayv1.Service_SERVICE_PRESENCE, true)
	alice.awaitService(gatewayv1.Service_SERVICE_PRESENCE, false)
	bob.awaitStatus("alice", unknown)
	bob.awaitStatus("alice", online)
	eventually(t, "streams re-opened", func() bool {
		c := e.presence.Counts("alice")
		return c.Connects == 1 && c.ConnectOpens == 2 && c.Monitors == 1 && c.MonitorOpens == 2
	})
	if c := e.presence.Counts("alice"); c.MaxConnects != 1 || c.MaxMonitors != 1 {
		t.Errorf("most streams at once: %d connects, %d monitors; want 1, 1",
			c.MaxConnects, c.MaxMonitors)
	}
}

// TestPresenceRestart stops the presence server outright and starts it
// again on the same port: statuses turn unknown, then come back.
func TestPresenceRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.open(e.signIn("alice"))
	bob := e.open(e.signIn("bob"))
	e.watch(bob, "alice")
	bob.awaitStatus("alice", online)

	e.presenceSrv.stop()
	bob.awaitStatus("alice", unknown)
	alice.awaitService(gatewayv1.Service_SERVICE_PRESENCE, true)
	e.presenceSrv.start()
	alice.awaitService(gatewayv1.Service_SERVICE_PRESENCE, false)
	bob.awaitStatus("alice", online)
}

// TestRestoreOnReconnect checks that a new session gets the user's friends
// back, each with its status.
func TestRestoreOnReconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.open(e.signIn("alice"))
	token := e.signIn("bob")
	// Names the gateway would refuse, put on the list behind its back.
	for _, bad := range []string{"bob", "a/b", ""} {
		if _, err := e.friends.Add(context.Background(),
			connect.NewRequest(&friendspb.Friend{User: "bob", Friend: bad})); err != nil {
			t.Fatalf("add %q to the fake: %v", bad, err)
		}
	}
	bob := e.open(token)
	for _, name := range []string{"alice", "carol"} {
		if !e.watch(bob, name) {
			t.Errorf("Watch(%q) not saved", name)
		}
	}
	bob.close()

	bob = e.open(token)
	restored := map[string]bool{}
	statuses := map[string]gatewayv1.UserStatus{}
	known := func() bool {
		return statuses["alice"] > unknown && statuses["carol"] > unknown
	}
	for len(restored) < 2 || !known() {
		ev := bob.next()
		if f := ev.GetFriendRestored(); f != nil {
			if f.GetName() != "alice" && f.GetName() != "carol" {
				t.Errorf("restored %q, which is not a valid friend of bob", f.GetName())
			}
			restored[f.GetName()] = true
		}
		if s := ev.GetUserStatusChanged(); s != nil {
			if !restored[s.GetName()] {
				t.Errorf("status of %q before it was restored", s.GetName())
			}
			statuses[s.GetName()] = s.GetStatus()
		}
	}
	want := map[string]gatewayv1.UserStatus{"alice": online, "carol": offline}
	if diff := cmp.Diff(want, statuses); diff != "" {
		t.Errorf("restored statuses (-want +got):\n%s", diff)
	}
}

// TestWatchRules checks Watch's refusals and that watching twice and
// unwatching work as promised.
func TestWatchRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	token := e.signIn("bob")
	bob := e.open(token)
	ctx := context.Background()

	tests := []struct {
		name    string
		session string
		watch   string
		want    connect.Code
	}{
		{name: "self", session: bob.id, watch: "bob", want: connect.CodeInvalidArgument},
		{name: "bad name", session: bob.id, watch: "a/b", want: connect.CodeInvalidArgument},
		{name: "empty name", session: bob.id, watch: "", want: connect.CodeInvalidArgument},
		{name: "unknown session", session: "nope", watch: "alice", want: connect.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.sessions.Watch(ctx, withToken(
				&gatewayv1.WatchRequest{SessionId: tt.session, Name: tt.watch}, token))
			if got := codeOf(err); got != tt.want {
				t.Errorf("code = %v, want %v", got, tt.want)
			}
		})
	}

	e.watch(bob, "alice")
	e.watch(bob, "alice")
	bob.awaitStatus("alice", offline)
	if c := e.presence.Counts("alice"); c.Monitors != 1 || c.MonitorOpens != 1 {
		t.Errorf("monitors after watching twice: %d open, %d opened; want 1, 1",
			c.Monitors, c.MonitorOpens)
	}
	if !e.unwatch(bob, "alice") {
		t.Errorf("Unwatch not saved")
	}
	if e.friends.Has("bob", "alice") {
		t.Errorf("alice still on bob's list after Unwatch")
	}
	eventually(t, "monitor of alice cancelled", func() bool {
		return e.presence.Counts("alice").Monitors == 0
	})
	if !e.unwatch(bob, "nobody") {
		t.Errorf("Unwatch of a user not watched not saved")
	}
}

// TestWatchLimit checks that a session watches at most MaxWatches users.
func TestWatchLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxWatches = 2 })
	token := e.signIn("bob")
	bob := e.open(token)
	e.watch(bob, "a")
	e.watch(bob, "b")
	_, err := e.sessions.Watch(context.Background(),
		withToken(&gatewayv1.WatchRequest{SessionId: bob.id, Name: "c"}, token))
	if got := codeOf(err); got != connect.CodeResourceExhausted {
		t.Errorf("third watch code = %v, want %v", got, connect.CodeResourceExhausted)
	}
}

// TestFriendsDown checks that presence keeps working while the friends
// service is down, and that friends recovers without a restart: the watch
// made during the outage is saved, and a new session restores it.
func TestFriendsDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.open(e.signIn("alice"))
	token := e.signIn("bob")
	first := e.open(token)
	e.watch(first, "carol")
	first.close()

	e.friendsSrv.stop()
	bob := e.open(token)
	bob.awaitService(gatewayv1.Service_SERVICE_FRIENDS, true)
	if e.watch(bob, "alice") {
		t.Errorf("Watch saved while friends is down")
	}
	bob.awaitStatus("alice", online)
	if e.unwatch(bob, "carol") {
		t.Errorf("Unwatch saved while friends is down")
	}
	_, err := e.friendsRelay.GetFriends(context.Background(),
		connect.NewRequest(&friendspb.User{User: "bob"}))
	if got := codeOf(err); got != connect.CodeUnavailable {
		t.Errorf("relayed GetFriends code = %v, want %v", got, connect.CodeUnavailable)
	}
	if strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("relayed error names an internal address: %v", err)
	}

	e.friendsSrv.start()
	bob.awaitService(gatewayv1.Service_SERVICE_FRIENDS, false)
	if !e.friends.Has("bob", "alice") || e.friends.Has("bob", "carol") {
		t.Errorf("after recovery: alice on list %v, carol on list %v; want true, false",
			e.friends.Has("bob", "alice"), e.friends.Has("bob", "carol"))
	}
	if !e.watch(bob, "dave") {
		t.Errorf("Watch not saved after friends recovered")
	}

	again := e.open(token)
	restored := map[string]bool{}
	for len(restored) < 2 {
		if f := again.next().GetFriendRestored(); f != nil {
			restored[f.GetName()] = true
		}
	}
	if diff := cmp.Diff(map[string]bool{"alice": true, "dave": true}, restored); diff != "" {
		t.Errorf("restored (-want +got):\n%s", diff)
	}
}

// TestRelayedPresence drives the original Presence service through the
// gateway over gRPC, as grpcurl does.
func TestRelayedPresence(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	monitor, err := e.presenceRelay.Monitor(ctx, connect.NewRequest(&presencepb.User{Name: "alice"}))
	if err != nil {
		t.Fatalf("Monitor: %v", err)
	}
	defer monitor.Close()
	nextOnline := func() bool {
		t.Helper()
		if !monitor.Receive() {
			t.Fatalf("Monitor ended: %v", monitor.Err())
		}
		return monitor.Msg().GetOnline()
	}
	if nextOnline() {
		t.Fatalf("first status online, want offline")
	}

	connCtx, disconnect := context.WithCancel(ctx)
	conn, err := e.presenceRelay.Connect(connCtx,
		withToken(&presencepb.User{Name: "alice"}, e.signIn("alice")))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if !conn.Receive() {
		t.Fatalf("Connect sent no first message: %v", conn.Err())
	}
	if !nextOnline() {
		t.Errorf("status after Connect offline, want online")
	}
	disconnect()
	conn.Close()
	if nextOnline() {
		t.Errorf("status after disconnect online, want offline")
	}
}

// TestRelayedFriends drives the original Friends service through the
// gateway over gRPC.
func TestRelayedFriends(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	token := e.signIn("alice")
	for _, f := range []string{"bob", "carol"} {
		if _, err := e.friendsRelay.Add(ctx,
			withToken(&friendspb.Friend{User: "alice", Friend: f}, token)); err != nil {
			t.Fatalf("Add(%q): %v", f, err)
		}
	}
	if _, err := e.friendsRelay.Remove(ctx,
		withToken(&friendspb.Friend{User: "alice", Friend: "bob"}, token)); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	res, err := e.friendsRelay.GetFriends(ctx, connect.NewRequest(&friendspb.User{User: "alice"}))
	if err != nil {
		t.Fatalf("GetFriends: %v", err)
	}
	if diff := cmp.Diff([]string{"carol"}, res.Msg.GetFriends()); diff != "" {
		t.Errorf("friends (-want +got):\n%s", diff)
	}
	_, err = e.friendsRelay.Add(ctx, withToken(&friendspb.Friend{User: "alice", Friend: ""}, token))
	if got := codeOf(err); got != connect.CodeInvalidArgument {
		t.Errorf("Add of an empty friend code = %v, want %v", got, connect.CodeInvalidArgument)
	}
}

// TestGetUserStatus checks the read-only lookup, over HTTP GET as browsers
// may send it.
func TestGetUserStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.open(e.signIn("alice"))
	eventually(t, "alice connected upstream", func() bool {
		return e.presence.Counts("alice").Connects == 1
	})
	client := gatewayv1connect.NewSessionServiceClient(http.DefaultClient, e.url,
		connect.WithHTTPGet())
	res, err := client.GetUserStatus(context.Background(), connect.NewRequest(
		&gatewayv1.GetUserStatusRequest{Names: []string{"alice", "nobody"}}))
	if err != nil {
		t.Fatalf("GetUserStatus: %v", err)
	}
	want := []*gatewayv1.UserStatusEntry{
		{Name: "alice", Status: online},
		{Name: "nobody", Status: offline},
	}
	if diff := cmp.Diff(want, res.Msg.GetStatuses(), cmpopts.IgnoreUnexported(
		gatewayv1.UserStatusEntry{})); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}

	_, err = client.GetUserStatus(context.Background(), connect.NewRequest(
		&gatewayv1.GetUserStatusRequest{Names: make([]string, maxStatusNames+1)}))
	if got := codeOf(err); got != connect.CodeInvalidArgument {
		t.Errorf("too many names code = %v, want %v", got, connect.CodeInvalidArgument)
	}
}

// TestHeartbeat checks that an idle session stream gets heartbeats.
func TestHeartbeat(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.HeartbeatInterval = 20 * time.Millisecond })
	s := e.open(e.signIn("alice"))
	s.await("a heartbeat", func(ev *gatewayv1.OpenSessionResponse) bool {
		return ev.GetHeartbeat() != nil
	})
}

// TestShutdownEndsSessions checks that Shutdown ends open session streams
// with UNAVAILABLE, so that clients reconnect.
func TestShutdownEndsSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.open(e.signIn("alice"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.g.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for range s.events {
	}
	if got := codeOf(<-s.ended); got != connect.CodeUnavailable {
		t.Errorf("stream end code = %v, want %v", got, connect.CodeUnavailable)
	}
}

// TestReflection checks that grpc reflection lists the gateway's services.
func TestReflection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	client := grpcreflect.NewClient(newH2CClient(), e.url)
	stream := client.NewStream(context.Background())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("ListServices: %v", err)
	}
	got := map[string]bool{}
	for _, n := range names {
		got[string(n)] = true
	}
	for _, want := range []string{
		"cloudchat.gateway.v1.SessionService",
		"cloudstate.samples.chat.presence.Presence",
		"cloudstate.samples.chat.friends.Friends",
	} {
		if !got[want] {
			t.Errorf("reflection lacks %s; lists %v", want, names)
		}
	}
}

// TestServeStopsWithContext checks that cancelling Serve's context ends the
// sessions and Serve itself.
func TestServeStopsWithContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g, err := New(Config{
		Presence: []string{e.presenceSrv.addr},
		Friends:  []string{e.friendsSrv.addr},
		Logger:   testLogger(t),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	url := "http://" + ln.Addr().String()
	e.sessions = gatewayv1connect.NewSessionServiceClient(http.DefaultClient, url)
	s := e.open(e.signIn("alice"))

	cancel()
	for range s.events {
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Serve still running after its context ended")
	}
}

// TestReplicaFailover checks that a user's streams move to another presence
// replica when theirs goes away.
func TestReplicaFailover(t *testing.T) {
	t.Parallel()
	second := fakeupstream.NewPresence()
	pattern, handler := presencepbconnect.NewPresenceHandler(second)
	secondSrv := startServer(t, pattern, handler)
	e := newEnv(t, func(c *Config) { c.Presence = append(c.Presence, secondSrv.addr) })
	fakes := map[string]*fakeupstream.Presence{e.presenceSrv.addr: e.presence, secondSrv.addr: second}
	servers := map[string]*server{e.presenceSrv.addr: e.presenceSrv, secondSrv.addr: secondSrv}
	_, home := e.g.presence.pick("alice", 0)
	_, next := e.g.presence.pick("alice", 1)
	if home == next {
		t.Fatalf("both attempts pick %s", home)
	}

	e.open(e.signIn("alice"))
	eventually(t, "alice connected at "+home, func() bool {
		return fakes[home].Counts("alice").Connects == 1
	})
	servers[home].stop()
	eventually(t, "alice connected at "+next, func() bool {
		return fakes[next].Counts("alice").Connects == 1
	})
}
