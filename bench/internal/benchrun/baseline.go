package benchrun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// The baseline is the least a server can do for each measured call, with
// the same contracts, so that the same clients measure it: a Friends
// service that answers from a map in memory, and a Presence service that
// relays a user's Connect to that user's Monitor streams in one hop.

// bareFriends answers Friends calls from memory.
type bareFriends struct {
	friendspbconnect.UnimplementedFriendsHandler

	mu sync.Mutex
	// lists is guarded by mu.
	lists map[string]map[string]bool
}

// GetFriends echoes the user's list.
func (b *bareFriends) GetFriends(
	_ context.Context, req *connect.Request[friendspb.User],
) (*connect.Response[friendspb.FriendsList], error) {
	if req.Msg.GetUser() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("user: empty"))
	}
	b.mu.Lock()
	list := make([]string, 0, len(b.lists[req.Msg.GetUser()]))
	for f := range b.lists[req.Msg.GetUser()] {
		list = append(list, f)
	}
	b.mu.Unlock()
	return connect.NewResponse(&friendspb.FriendsList{Friends: list}), nil
}

// Add puts a friend on the user's list.
func (b *bareFriends) Add(
	_ context.Context, req *connect.Request[friendspb.Friend],
) (*connect.Response[friendspb.Empty], error) {
	user, friend := req.Msg.GetUser(), req.Msg.GetFriend()
	if user == "" || friend == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("user or friend: empty"))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lists[user] == nil {
		b.lists[user] = make(map[string]bool)
	}
	b.lists[user][friend] = true
	return connect.NewResponse(&friendspb.Empty{}), nil
}

// barePresence relays each user's online status to its monitors.
type barePresence struct {
	presencepbconnect.UnimplementedPresenceHandler

	mu sync.Mutex
	// online and monitors are guarded by mu.
	online   map[string]int
	monitors map[string]map[chan bool]bool
}

// setOnline counts a Connect of user in or out and tells the user's
// monitors when the status flips.
func (p *barePresence) setOnline(user string, delta int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.online[user] > 0
	p.online[user] += delta
	now := p.online[user] > 0
	if p.online[user] == 0 {
		delete(p.online, user)
	}
	if was == now {
		return
	}
	for ch := range p.monitors[user] {
		// Each monitor keeps only the latest status.
		select {
		case <-ch:
		default:
		}
		ch <- now
	}
}

// Connect holds the user online while the call stays open.
func (p *barePresence) Connect(
	ctx context.Context, req *connect.Request[presencepb.User],
	stream *connect.ServerStream[presencepb.Empty],
) error {
	user := req.Msg.GetName()
	if user == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("name: empty"))
	}
	if err := stream.Send(&presencepb.Empty{}); err != nil {
		return err
	}
	p.setOnline(user, 1)
	defer p.setOnline(user, -1)
	<-ctx.Done()
	return nil
}

// Monitor sends the user's status at once and on every flip.
func (p *barePresence) Monitor(
	ctx context.Context, req *connect.Request[presencepb.User],
	stream *connect.ServerStream[presencepb.OnlineStatus],
) error {
	user := req.Msg.GetName()
	if user == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("name: empty"))
	}
	ch := make(chan bool, 1)
	p.mu.Lock()
	if p.monitors[user] == nil {
		p.monitors[user] = make(map[chan bool]bool)
	}
	p.monitors[user][ch] = true
	ch <- p.online[user] > 0
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.monitors[user], ch)
		if len(p.monitors[user]) == 0 {
			delete(p.monitors, user)
		}
		p.mu.Unlock()
	}()
	for {
		select {
		case online := <-ch:
			if err := stream.Send(&presencepb.OnlineStatus{Online: online}); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// BaselineHandler returns the handler of the bare baseline server.
func BaselineHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(friendspbconnect.NewFriendsHandler(
		&bareFriends{lists: make(map[string]map[string]bool)}))
	mux.Handle(presencepbconnect.NewPresenceHandler(&barePresence{
		online:   make(map[string]int),
		monitors: make(map[string]map[chan bool]bool),
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// ServeBaseline serves the bare baseline server on addr, over HTTP/1.1 and
// cleartext HTTP/2 like the gateway, until ctx is done.
func ServeBaseline(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: BaselineHandler(), ReadHeaderTimeout: 10 * time.Second}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
