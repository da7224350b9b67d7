package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatewayv1 "github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1"
	"github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1/gatewayv1connect"
)

// maxStatusNames is the most names one GetUserStatus call may ask about.
const maxStatusNames = 100

// sessionService implements the gateway's own API.
type sessionService struct {
	gatewayv1connect.UnimplementedSessionServiceHandler
	g *Gateway
}

// SignIn returns a token for any valid name.
//
// TODO: verify who signs in (a password or an identity provider); in local
// mode anyone may act as anyone, which suits a demo on a trusted network only.
func (s *sessionService) SignIn(
	_ context.Context, req *connect.Request[gatewayv1.SignInRequest],
) (*connect.Response[gatewayv1.SignInResponse], error) {
	name := req.Msg.GetName()
	if err := validateField("name", name); err != nil {
		return nil, err
	}
	token, expiry, err := s.g.tokens.issue(name)
	if err != nil {
		s.g.log.Error("issue token", "err", err)
		return nil, connect.NewError(connect.CodeInternal, errors.New("cannot issue a token"))
	}
	return connect.NewResponse(&gatewayv1.SignInResponse{
		Name:       name,
		Token:      token,
		ExpireTime: timestamppb.New(expiry),
	}), nil
}

// OpenSession runs a session until the caller cancels it.
func (s *sessionService) OpenSession(
	ctx context.Context, req *connect.Request[gatewayv1.OpenSessionRequest],
	stream *connect.ServerStream[gatewayv1.OpenSessionResponse],
) error {
	user, err := s.g.tokens.authenticate(req.Header())
	if err != nil {
		return err
	}
	sess, err := s.g.openSession(ctx, user)
	if err != nil {
		return err
	}
	defer s.g.closeSession(sess)
	return sess.pump(ctx, stream.Send)
}

// Watch watches a user in a session of the token's user.
func (s *sessionService) Watch(
	ctx context.Context, req *connect.Request[gatewayv1.WatchRequest],
) (*connect.Response[gatewayv1.WatchResponse], error) {
	sess, name, err := s.action(req.Header(), req.Msg.GetSessionId(), req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	if name == sess.user {
		return nil, connect.NewError(connect.CodeInvalidArgument,
			errors.New("name: a user cannot watch themselves"))
	}
	saved, err := sess.watch(ctx, name)
	if err != nil {
		return nil, sessionError(err)
	}
	return connect.NewResponse(&gatewayv1.WatchResponse{Saved: saved}), nil
}

// Unwatch stops watching a user in a session of the token's user.
func (s *sessionService) Unwatch(
	ctx context.Context, req *connect.Request[gatewayv1.UnwatchRequest],
) (*connect.Response[gatewayv1.UnwatchResponse], error) {
	sess, name, err := s.action(req.Header(), req.Msg.GetSessionId(), req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	saved, err := sess.unwatch(ctx, name)
	if err != nil {
		return nil, sessionError(err)
	}
	return connect.NewResponse(&gatewayv1.UnwatchResponse{Saved: saved}), nil
}

// action checks the token, the session and the name of a Watch or Unwatch.
func (s *sessionService) action(
	header map[string][]string, sessionID, name string,
) (*session, string, error) {
	user, err := s.g.tokens.authenticate(header)
	if err != nil {
		return nil, "", err
	}
	if err := validateField("name", name); err != nil {
		return nil, "", err
	}
	// TODO: share sessions between gateway replicas (or route by session at
	// the load balancer); today a Watch that reaches another replica than
	// the session's stream fails with NOT_FOUND and the client reconnects.
	sess := s.g.findSession(sessionID)
	if sess == nil {
		return nil, "", connect.NewError(connect.CodeNotFound,
			errors.New("session_id: no such session open on this gateway"))
	}
	if sess.user != user {
		return nil, "", connect.NewError(connect.CodePermissionDenied,
			errors.New("session_id: the session belongs to another user"))
	}
	return sess, name, nil
}

func sessionError(err error) error {
	if errors.Is(err, errSessionClosed) {
		return connect.NewError(connect.CodeNotFound, err)
	}
	return err
}

// GetUserStatus looks up users' statuses through the shared monitors,
// waiting a short while for the ones not known yet.
func (s *sessionService) GetUserStatus(
	ctx context.Context, req *connect.Request[gatewayv1.GetUserStatusRequest],
) (*connect.Response[gatewayv1.GetUserStatusResponse], error) {
	names := req.Msg.GetNames()
	if len(names) > maxStatusNames {
		return nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("names: at most %d names, got %d", maxStatusNames, len(names)))
	}
	for i, name := range names {
		if err := validateField(fmt.Sprintf("names[%d]", i), name); err != nil {
			return nil, err
		}
	}

	ctx, cancel := context.WithTimeout(ctx, s.g.cfg.StatusWait)
	defer cancel()
	statuses := make([]*gatewayv1.UserStatusEntry, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			statuses[i] = &gatewayv1.UserStatusEntry{Name: name, Status: s.g.lookUpStatus(ctx, name)}
		})
	}
	wg.Wait()
	return connect.NewResponse(&gatewayv1.GetUserStatusResponse{Statuses: statuses}), nil
}

// lookUpStatus returns name's status once known, or unknown when ctx ends
// first.
func (g *Gateway) lookUpStatus(ctx context.Context, name string) gatewayv1.UserStatus {
	known := make(chan gatewayv1.UserStatus, 1)
	release := g.monitors.hold(name, func(status gatewayv1.UserStatus) {
		if status != gatewayv1.UserStatus_USER_STATUS_UNKNOWN {
			select {
			case known <- status:
			default:
			}
		}
	})
	defer release()
	select {
	case status := <-known:
		return status
	case <-ctx.Done():
		return gatewayv1.UserStatus_USER_STATUS_UNKNOWN
	}
}

// openSession starts a session for user and registers it.
func (g *Gateway) openSession(ctx context.Context, user string) (*session, error) {
	id, err := newSessionID()
	if err != nil {
		g.log.Error("open session", "err", err)
		return nil, connect.NewError(connect.CodeInternal, errors.New("cannot open a session"))
	}
	sessCtx, cancel := context.WithCancel(ctx)
	sess := &session{
		id:             id,
		user:           user,
		g:              g,
		ctx:            sessCtx,
		cancel:         cancel,
		watching:       make(map[string]func()),
		pendingAdds:    make(map[string]bool),
		pendingRemoves: make(map[string]bool),
		wake:           make(chan struct{}, 1),
	}

	g.mu.Lock()
	if len(g.sessions) >= g.cfg.MaxSessions {
		g.mu.Unlock()
		cancel()
		return nil, connect.NewError(connect.CodeResourceExhausted,
			errors.New("too many sessions open on this gateway"))
	}
	g.sessions[id] = sess
	g.mu.Unlock()

	sess.start()
	g.log.Info("session opened", "user", user, "session", id)
	return sess, nil
}

func (g *Gateway) closeSession(sess *session) {
	g.mu.Lock()
	delete(g.sessions, sess.id)
	g.mu.Unlock()
	sess.close()
	g.log.Info("session closed", "user", sess.user, "session", sess.id)
}

func (g *Gateway) findSession(id string) *session {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions[id]
}

// endOfStream is what a long stream returns when its context ends: an
// UNAVAILABLE error while the gateway shuts down, so clients retry
// elsewhere, and nil when the caller went away.
func (g *Gateway) endOfStream() error {
	if g.ctx.Err() != nil {
		return connect.NewError(connect.CodeUnavailable, errors.New("gateway shutting down"))
	}
	return nil
}
