package gateway

import (
	"context"
	"fmt"
	"sync"

	"connectrpc.com/connect"

	gatewayv1 "github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// presenceRelay serves the original Presence service from the gateway's
// shared upstream streams: Connect takes a hold on the user's single
// upstream Connect, and Monitor follows the user's single upstream Monitor.
type presenceRelay struct {
	presencepbconnect.UnimplementedPresenceHandler
	g *Gateway
}

// Connect holds the user online until the caller cancels. It needs a token
// for that user.
func (r *presenceRelay) Connect(
	ctx context.Context, req *connect.Request[presencepb.User],
	stream *connect.ServerStream[presencepb.Empty],
) error {
	name := req.Msg.GetName()
	if err := validateField("name", name); err != nil {
		return err
	}
	if err := r.g.tokens.authorize(req.Header(), name); err != nil {
		return err
	}

	release := r.g.online.hold(name, nil)
	defer release()
	if err := stream.Send(&presencepb.Empty{}); err != nil {
		return err
	}
	<-ctx.Done()
	return r.g.endOfStream()
}

// Monitor sends the user's status once known, then on every change. It needs
// no token. While presence is unreachable it sends nothing.
func (r *presenceRelay) Monitor(
	ctx context.Context, req *connect.Request[presencepb.User],
	stream *connect.ServerStream[presencepb.OnlineStatus],
) error {
	name := req.Msg.GetName()
	if err := validateField("name", name); err != nil {
		return err
	}

	// TODO: limit the upstream monitors one caller may cause; anyone may
	// ask about any name without a token, and each new name opens a stream.
	var latest latestStatus
	release := r.g.monitors.hold(name, latest.set)
	defer release()
	sent := gatewayv1.UserStatus_USER_STATUS_UNSPECIFIED
	for {
		status := latest.get()
		known := status == gatewayv1.UserStatus_USER_STATUS_ONLINE ||
			status == gatewayv1.UserStatus_USER_STATUS_OFFLINE
		if known && status != sent {
			online := status == gatewayv1.UserStatus_USER_STATUS_ONLINE
			if err := stream.Send(&presencepb.OnlineStatus{Online: online}); err != nil {
				return err
			}
			sent = status
		}
		select {
		case <-ctx.Done():
			return r.g.endOfStream()
		case <-latest.changed():
		}
	}
}

// latestStatus keeps the last status a hub reported and signals each change.
type latestStatus struct {
	mu sync.Mutex
	// status and wake are guarded by mu.
	status gatewayv1.UserStatus
	wake   chan struct{}
}

func (l *latestStatus) set(s gatewayv1.UserStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status = s
	if l.wake == nil {
		l.wake = make(chan struct{}, 1)
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *latestStatus) get() gatewayv1.UserStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

func (l *latestStatus) changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wake == nil {
		l.wake = make(chan struct{}, 1)
	}
	return l.wake
}

// friendsRelay passes calls to the original Friends service through to the
// upstream. Add and Remove need a token for the list's owner; GetFriends
// needs none.
type friendsRelay struct {
	friendspbconnect.UnimplementedFriendsHandler
	g *Gateway
}

// Add puts a friend on the owner's list.
func (r *friendsRelay) Add(
	ctx context.Context, req *connect.Request[friendspb.Friend],
) (*connect.Response[friendspb.Empty], error) {
	if err := r.checkChange(req); err != nil {
		return nil, err
	}
	if err := r.g.addFriend(ctx, req.Msg.GetUser(), req.Msg.GetFriend()); err != nil {
		return nil, publicError("friends", err)
	}
	return connect.NewResponse(&friendspb.Empty{}), nil
}

// Remove takes a friend off the owner's list.
func (r *friendsRelay) Remove(
	ctx context.Context, req *connect.Request[friendspb.Friend],
) (*connect.Response[friendspb.Empty], error) {
	if err := r.checkChange(req); err != nil {
		return nil, err
	}
	if err := r.g.removeFriend(ctx, req.Msg.GetUser(), req.Msg.GetFriend()); err != nil {
		return nil, publicError("friends", err)
	}
	return connect.NewResponse(&friendspb.Empty{}), nil
}

// GetFriends returns the owner's list.
func (r *friendsRelay) GetFriends(
	ctx context.Context, req *connect.Request[friendspb.User],
) (*connect.Response[friendspb.FriendsList], error) {
	if err := validateField("user", req.Msg.GetUser()); err != nil {
		return nil, err
	}
	friends, err := r.g.getFriends(ctx, req.Msg.GetUser())
	if err != nil {
		return nil, publicError("friends", err)
	}
	return connect.NewResponse(&friendspb.FriendsList{Friends: friends}), nil
}

func (r *friendsRelay) checkChange(req *connect.Request[friendspb.Friend]) error {
	if err := validateField("user", req.Msg.GetUser()); err != nil {
		return err
	}
	if err := validateField("friend", req.Msg.GetFriend()); err != nil {
		return err
	}
	return r.g.tokens.authorize(req.Header(), req.Msg.GetUser())
}

// validateField checks a user name given in a request field and returns an
// INVALID_ARGUMENT error naming the field.
func validateField(field, name string) error {
	if err := ValidateName(name); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %w", field, err))
	}
	return nil
}
