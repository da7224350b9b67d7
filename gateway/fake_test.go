package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// fakePresence is an in-process presence service with the real semantics:
// a user is online while at least one Connect stream for them is open, and
// Monitor sends the status at once and then on every change. It counts the
// streams it serves and can drop them all.
type fakePresence struct {
	presencepbconnect.UnimplementedPresenceHandler

	mu sync.Mutex
	// Every field below is guarded by mu.
	connects     map[string]int // open Connect streams per user
	connectOpens map[string]int // Connect streams ever opened per user
	maxConnects  map[string]int // most Connect streams open at once per user
	monitors     map[string]int // open Monitor streams per user
	monitorOpens map[string]int // Monitor streams ever opened per user
	maxMonitors  map[string]int // most Monitor streams open at once per user
	changed      chan struct{}  // closed and replaced on every change
	dropped      chan struct{}  // closed and replaced by drop
}

func newFakePresence() *fakePresence {
	return &fakePresence{
		connects:     make(map[string]int),
		connectOpens: make(map[string]int),
		maxConnects:  make(map[string]int),
		monitors:     make(map[string]int),
		monitorOpens: make(map[string]int),
		maxMonitors:  make(map[string]int),
		changed:      make(chan struct{}),
		dropped:      make(chan struct{}),
	}
}

// changeLocked wakes every Monitor stream.
func (f *fakePresence) changeLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// drop ends every open stream with UNAVAILABLE, as an upstream restart does.
func (f *fakePresence) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.dropped)
	f.dropped = make(chan struct{})
}

// counts returns the open, ever opened and most open at once Connect and
// Monitor streams for user.
func (f *fakePresence) counts(user string) (conn, connOpens, maxConn, mon, monOpens, maxMon int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connects[user], f.connectOpens[user], f.maxConnects[user],
		f.monitors[user], f.monitorOpens[user], f.maxMonitors[user]
}

var errDropped = connect.NewError(connect.CodeUnavailable, errors.New("stream dropped"))

func (f *fakePresence) Connect(
	ctx context.Context, req *connect.Request[presencepb.User],
	stream *connect.ServerStream[presencepb.Empty],
) error {
	name := req.Msg.GetName()
	f.mu.Lock()
	f.connects[name]++
	f.connectOpens[name]++
	f.maxConnects[name] = max(f.maxConnects[name], f.connects[name])
	dropped := f.dropped
	f.changeLocked()
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.connects[name]--
		f.changeLocked()
		f.mu.Unlock()
	}()

	if err := stream.Send(&presencepb.Empty{}); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case <-dropped:
		return errDropped
	}
}

func (f *fakePresence) Monitor(
	ctx context.Context, req *connect.Request[presencepb.User],
	stream *connect.ServerStream[presencepb.OnlineStatus],
) error {
	name := req.Msg.GetName()
	f.mu.Lock()
	f.monitors[name]++
	f.monitorOpens[name]++
	f.maxMonitors[name] = max(f.maxMonitors[name], f.monitors[name])
	dropped := f.dropped
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.monitors[name]--
		f.mu.Unlock()
	}()

	first := true
	var last bool
	for {
		f.mu.Lock()
		online := f.connects[name] > 0
		changed := f.changed
		f.mu.Unlock()
		if first || online != last {
			if err := stream.Send(&presencepb.OnlineStatus{Online: online}); err != nil {
				return err
			}
			first, last = false, online
		}
		select {
		case <-ctx.Done():
			return nil
		case <-dropped:
			return errDropped
		case <-changed:
		}
	}
}

// fakeFriends is an in-process friends service keeping each user's list.
type fakeFriends struct {
	friendspbconnect.UnimplementedFriendsHandler

	mu sync.Mutex
	// lists is guarded by mu.
	lists map[string]map[string]bool
}

func newFakeFriends() *fakeFriends {
	return &fakeFriends{lists: make(map[string]map[string]bool)}
}

func (f *fakeFriends) Add(
	_ context.Context, req *connect.Request[friendspb.Friend],
) (*connect.Response[friendspb.Empty], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lists[req.Msg.GetUser()] == nil {
		f.lists[req.Msg.GetUser()] = make(map[string]bool)
	}
	f.lists[req.Msg.GetUser()][req.Msg.GetFriend()] = true
	return connect.NewResponse(&friendspb.Empty{}), nil
}

func (f *fakeFriends) Remove(
	_ context.Context, req *connect.Request[friendspb.Friend],
) (*connect.Response[friendspb.Empty], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.lists[req.Msg.GetUser()], req.Msg.GetFriend())
	return connect.NewResponse(&friendspb.Empty{}), nil
}

func (f *fakeFriends) GetFriends(
	_ context.Context, req *connect.Request[friendspb.User],
) (*connect.Response[friendspb.FriendsList], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	list := &friendspb.FriendsList{}
	for name := range f.lists[req.Msg.GetUser()] {
		list.Friends = append(list.Friends, name)
	}
	return connect.NewResponse(list), nil
}

// has reports whether friend is on user's list.
func (f *fakeFriends) has(user, friend string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists[user][friend]
}

// server is an HTTP server on a loopback port that speaks HTTP/1.1 and
// cleartext HTTP/2, and can be stopped and started again on the same port.
type server struct {
	t       *testing.T
	handler http.Handler
	addr    string

	mu sync.Mutex
	// srv is guarded by mu; nil while stopped.
	srv *http.Server
}

func startServer(t *testing.T, pattern string, handler http.Handler) *server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(pattern, handler)
	s := &server{t: t, handler: mux, addr: "127.0.0.1:0"}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// start serves on the server's address, the same one after a stop.
func (s *server) start() {
	s.t.Helper()
	var ln net.Listener
	var err error
	// The port of a server just stopped can stay busy for a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err = net.Listen("tcp", s.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("listen on %s: %v", s.addr, err)
	}
	s.addr = ln.Addr().String()
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// stop closes the listener and every connection at once, as a crash does.
func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}
