package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/cloudchat/cloudchat/gateway/internal/fakeupstream"
	gatewayv1 "github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1"
	"github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1/gatewayv1connect"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// waitTimeout bounds every wait for something to converge.
const waitTimeout = 10 * time.Second

// env is a gateway in front of fake presence and friends services, all on
// loopback, with clients that reach it as browsers and tools do.
type env struct {
	t           *testing.T
	presence    *fakeupstream.Presence
	friends     *fakeupstream.Friends
	presenceSrv *server
	friendsSrv  *server
	clock       *clock
	g           *Gateway
	url         string
	// sessions speaks the Connect protocol over HTTP/1.1, as a browser.
	sessions gatewayv1connect.SessionServiceClient
	// presenceRelay and friendsRelay speak gRPC, as grpcurl.
	presenceRelay presencepbconnect.PresenceClient
	friendsRelay  friendspbconnect.FriendsClient
}

func newEnv(t *testing.T, configure ...func(*Config)) *env {
	t.Helper()
	logger := testLogger(t)
	e := &env{
		t:        t,
		presence: fakeupstream.NewPresence(),
		friends:  fakeupstream.NewFriends(),
		clock:    &clock{},
	}
	pattern, handler := presencepbconnect.NewPresenceHandler(e.presence)
	e.presenceSrv = startServer(t, pattern, handler)
	pattern, handler = friendspbconnect.NewFriendsHandler(e.friends)
	e.friendsSrv = startServer(t, pattern, handler)

	cfg := Config{
		Presence:          []string{e.presenceSrv.addr},
		Friends:           []string{e.friendsSrv.addr},
		BackoffMin:        10 * time.Millisecond,
		BackoffMax:        100 * time.Millisecond,
		CallTimeout:       2 * time.Second,
		HeartbeatInterval: time.Minute,
		Logger:            logger,
		Now:               e.clock.now,
	}
	for _, c := range configure {
		c(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go func() { _ = g.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	e.g = g
	e.url = "http://" + ln.Addr().String()

	browser := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(browser.CloseIdleConnections)
	e.sessions = gatewayv1connect.NewSessionServiceClient(browser, e.url)
	h2c := newH2CClient()
	t.Cleanup(h2c.CloseIdleConnections)
	e.presenceRelay = presencepbconnect.NewPresenceClient(h2c, e.url, connect.WithGRPC())
	e.friendsRelay = friendspbconnect.NewFriendsClient(h2c, e.url, connect.WithGRPC())
	return e
}

// clock is a settable clock for tokens; zero offset is the real time.
type clock struct {
	mu sync.Mutex
	// offset is guarded by mu.
	offset time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// testLogger logs to the test's output until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	t  *testing.T
	mu sync.Mutex
	// done is guarded by mu.
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// eventually polls cond until it holds or the wait times out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// signIn returns a token for name.
func (e *env) signIn(name string) string {
	e.t.Helper()
	res, err := e.sessions.SignIn(context.Background(),
		connect.NewRequest(&gatewayv1.SignInRequest{Name: name}))
	if err != nil {
		e.t.Fatalf("SignIn(%q): %v", name, err)
	}
	return res.Msg.GetToken()
}

func withToken[T any](msg *T, token string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if token != "" {
		req.Header().Set("Authorization", "Bearer "+token)
	}
	return req
}

// sessionStream is an open OpenSession call whose events are read in the
// background.
type sessionStream struct {
	t      *testing.T
	id     string
	token  string
	cancel context.CancelFunc
	events chan *gatewayv1.OpenSessionResponse
	// ended receives the stream's error, nil for a clean end, once it ends.
	ended chan error
}

// open opens a session with token and waits for SessionOpened.
func (e *env) open(token string) *sessionStream {
	e.t.Helper()
	s := e.start(token)
	ev := s.next()
	if ev.GetSessionOpened() == nil {
		e.t.Fatalf("first event = %v, want session_opened", ev)
	}
	s.id = ev.GetSessionOpened().GetSessionId()
	return s
}

// start opens a session with token without reading any event.
func (e *env) start(token string) *sessionStream {
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	s := &sessionStream{
		t:      e.t,
		token:  token,
		cancel: cancel,
		events: make(chan *gatewayv1.OpenSessionResponse, 1024),
		ended:  make(chan error, 1),
	}
	go func() {
		stream, err := e.sessions.OpenSession(ctx,
			withToken(&gatewayv1.OpenSessionRequest{}, token))
		if err != nil {
			s.ended <- err
			close(s.events)
			return
		}
		for stream.Receive() {
			s.events <- proto.CloneOf(stream.Msg())
		}
		s.ended <- stream.Err()
		close(s.events)
	}()
	return s
}

// next returns the next event, failing the test when none comes in time.
func (s *sessionStream) next() *gatewayv1.OpenSessionResponse {
	s.t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			s.t.Fatalf("session ended: %v", <-s.ended)
		}
		return ev
	case <-time.After(waitTimeout):
		s.t.Fatalf("timed out waiting for a session event")
		return nil
	}
}

// await skips events until one matches, and returns it.
func (s *sessionStream) await(
	what string, match func(*gatewayv1.OpenSessionResponse) bool,
) *gatewayv1.OpenSessionResponse {
	s.t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				s.t.Fatalf("session ended waiting for %s: %v", what, <-s.ended)
			}
			if match(ev) {
				return ev
			}
		case <-deadline:
			s.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// awaitStatus skips events until name has status.
func (s *sessionStream) awaitStatus(name string, status gatewayv1.UserStatus) {
	s.t.Helper()
	s.await(name+" "+status.String(), func(ev *gatewayv1.OpenSessionResponse) bool {
		c := ev.GetUserStatusChanged()
		return c.GetName() == name && c.GetStatus() == status
	})
}

// nextStatus skips events until one about name's status and returns it.
func (s *sessionStream) nextStatus(name string) gatewayv1.UserStatus {
	s.t.Helper()
	ev := s.await("a status of "+name, func(ev *gatewayv1.OpenSessionResponse) bool {
		return ev.GetUserStatusChanged().GetName() == name
	})
	return ev.GetUserStatusChanged().GetStatus()
}

// awaitService skips events until a degraded (or recovered) event for svc.
func (s *sessionStream) awaitService(svc gatewayv1.Service, degraded bool) {
	s.t.Helper()
	s.await(svc.String()+" state", func(ev *gatewayv1.OpenSessionResponse) bool {
		if degraded {
			return ev.GetServiceDegraded().GetService() == svc
		}
		return ev.GetServiceRecovered().GetService() == svc
	})
}

// close cancels the session and waits for its stream to end.
func (s *sessionStream) close() {
	s.t.Helper()
	s.cancel()
	for range s.events {
	}
}

// watch calls Watch in the session and returns whether it was saved.
func (e *env) watch(s *sessionStream, name string) bool {
	e.t.Helper()
	res, err := e.sessions.Watch(context.Background(),
		withToken(&gatewayv1.WatchRequest{SessionId: s.id, Name: name}, s.token))
	if err != nil {
		e.t.Fatalf("Watch(%q): %v", name, err)
	}
	return res.Msg.GetSaved()
}

// unwatch calls Unwatch in the session and returns whether it was saved.
func (e *env) unwatch(s *sessionStream, name string) bool {
	e.t.Helper()
	res, err := e.sessions.Unwatch(context.Background(),
		withToken(&gatewayv1.UnwatchRequest{SessionId: s.id, Name: name}, s.token))
	if err != nil {
		e.t.Fatalf("Unwatch(%q): %v", name, err)
	}
	return res.Msg.GetSaved()
}

// sessionGone waits until the gateway has closed the session with id.
func (e *env) sessionGone(id string) {
	e.t.Helper()
	eventually(e.t, "session "+id+" closed", func() bool { return e.g.findSession(id) == nil })
}

func codeOf(err error) connect.Code {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return connect.CodeOf(err)
}
