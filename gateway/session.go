package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	gatewayv1 "github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1"
)

// session is one open OpenSession stream: the user it holds online, the
// users it watches, the friends-list changes it still has to save and the
// events waiting to be sent.
type session struct {
	id     string
	user   string
	g      *Gateway
	ctx    context.Context
	cancel context.CancelFunc
	// releaseOnline lets go of the user's online hold.
	releaseOnline func()

	// ops serialises the session's actions: watch, unwatch, friends sync
	// and close. Hub callbacks never take it, so hub methods may be called
	// with it held.
	ops sync.Mutex
	// closed, watching, pendingAdds, pendingRemoves, friendsDown and
	// syncing are guarded by ops.
	closed bool
	// watching maps each watched user to the release of their monitor.
	watching map[string]func()
	// pendingAdds and pendingRemoves are friends-list changes not saved yet
	// because the friends service failed.
	pendingAdds    map[string]bool
	pendingRemoves map[string]bool
	// friendsDown is set while the friends service fails for this session;
	// watch and unwatch then queue their changes without calling it.
	friendsDown bool
	// syncing is set while syncFriends runs.
	syncing bool

	mu sync.Mutex
	// events, overflow and presenceDown are guarded by mu.
	events       []*gatewayv1.OpenSessionResponse
	overflow     bool
	presenceDown bool
	// wake has room for one signal that events were queued.
	wake chan struct{}
}

// errSessionClosed is returned for actions on a session that has ended.
var errSessionClosed = errors.New("session closed")

func newSessionID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read session id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// start queues SessionOpened, holds the user online and starts restoring
// their friends.
func (s *session) start() {
	s.push(&gatewayv1.OpenSessionResponse{Event: &gatewayv1.OpenSessionResponse_SessionOpened{
		SessionOpened: &gatewayv1.SessionOpened{
			SessionId:         s.id,
			Name:              s.user,
			HeartbeatInterval: durationpb.New(s.g.cfg.HeartbeatInterval),
		},
	}})
	s.releaseOnline = s.g.online.hold(s.user, s.observeLink)

	s.ops.Lock()
	s.syncing = true
	s.ops.Unlock()
	go s.syncFriends()
}

// close stops every watch, lets go of the user and ends the friends sync.
func (s *session) close() {
	s.cancel()
	s.ops.Lock()
	s.closed = true
	for _, release := range s.watching {
		release()
	}
	s.watching = nil
	s.ops.Unlock()
	s.releaseOnline()
}

// push queues an event; past the queue's limit it marks the session as
// fallen behind instead. It never blocks.
func (s *session) push(ev *gatewayv1.OpenSessionResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pushLocked(ev)
}

func (s *session) pushLocked(ev *gatewayv1.OpenSessionResponse) {
	if len(s.events) >= s.g.cfg.maxQueuedEvents() {
		s.overflow = true
	} else {
		s.events = append(s.events, ev)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take returns the queued events and whether any were lost.
func (s *session) take() ([]*gatewayv1.OpenSessionResponse, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	events := s.events
	s.events = nil
	return events, s.overflow
}

// pump sends the session's events with send until ctx is done or send
// fails, and a heartbeat whenever the interval passes.
func (s *session) pump(ctx context.Context, send func(*gatewayv1.OpenSessionResponse) error) error {
	tick := time.NewTicker(s.g.cfg.HeartbeatInterval)
	defer tick.Stop()
	heartbeat := &gatewayv1.OpenSessionResponse{Event: &gatewayv1.OpenSessionResponse_Heartbeat{
		Heartbeat: &gatewayv1.Heartbeat{},
	}}
	for {
		events, overflow := s.take()
		if overflow {
			return connect.NewError(connect.CodeResourceExhausted,
				errors.New("session fell behind its events; open it again"))
		}
		for _, ev := range events {
			if err := send(ev); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return s.g.endOfStream()
		case <-s.wake:
		case <-tick.C:
			if err := send(heartbeat); err != nil {
				return err
			}
		}
	}
}

// observeLink turns the state of the user's Presence.Connect stream into
// ServiceDegraded and ServiceRecovered events. Called by the online hub.
func (s *session) observeLink(state linkState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case state == linkDown && !s.presenceDown:
		s.presenceDown = true
		s.pushLocked(degraded(gatewayv1.Service_SERVICE_PRESENCE,
			"presence service unavailable; retrying"))
	case state == linkUp && s.presenceDown:
		s.presenceDown = false
		s.pushLocked(recovered(gatewayv1.Service_SERVICE_PRESENCE))
	}
}

// watch starts watching name, if not watched yet, and saves it to the
// friends list. It reports whether the friends list was saved.
func (s *session) watch(ctx context.Context, name string) (bool, error) {
	s.ops.Lock()
	defer s.ops.Unlock()
	if s.closed {
		return false, errSessionClosed
	}
	if _, ok := s.watching[name]; !ok {
		if len(s.watching) >= s.g.cfg.MaxWatches {
			return false, connect.NewError(connect.CodeResourceExhausted,
				fmt.Errorf("a session watches at most %d users", s.g.cfg.MaxWatches))
		}
		s.startWatchingLocked(name)
	}

	delete(s.pendingRemoves, name)
	if s.friendsDown {
		s.pendingAdds[name] = true
		return false, nil
	}
	// The change is saved even if the caller stops waiting for it.
	if err := s.g.addFriend(context.WithoutCancel(ctx), s.user, name); err != nil {
		s.pendingAdds[name] = true
		s.friendsFailedLocked(err)
		return false, nil
	}
	delete(s.pendingAdds, name)
	return true, nil
}

// unwatch stops watching name and removes it from the friends list. It
// reports whether the friends list was saved.
func (s *session) unwatch(ctx context.Context, name string) (bool, error) {
	s.ops.Lock()
	defer s.ops.Unlock()
	if s.closed {
		return false, errSessionClosed
	}
	if release, ok := s.watching[name]; ok {
		release()
		delete(s.watching, name)
	}

	delete(s.pendingAdds, name)
	if s.friendsDown {
		s.pendingRemoves[name] = true
		return false, nil
	}
	if err := s.g.removeFriend(context.WithoutCancel(ctx), s.user, name); err != nil {
		s.pendingRemoves[name] = true
		s.friendsFailedLocked(err)
		return false, nil
	}
	delete(s.pendingRemoves, name)
	return true, nil
}

// startWatchingLocked monitors name and queues each of its statuses.
func (s *session) startWatchingLocked(name string) {
	s.watching[name] = s.g.monitors.hold(name, func(status gatewayv1.UserStatus) {
		s.push(&gatewayv1.OpenSessionResponse{Event: &gatewayv1.OpenSessionResponse_UserStatusChanged{
			UserStatusChanged: &gatewayv1.UserStatusChanged{Name: name, Status: status},
		}})
	})
}

// friendsFailedLocked tells the client, once, that the friends service
// failed, and makes sure a sync will save the pending changes. A failure
// because the session is closing is no news.
func (s *session) friendsFailedLocked(err error) {
	if s.ctx.Err() != nil {
		return
	}
	if !s.friendsDown {
		s.friendsDown = true
		s.g.log.Warn("friends service failed", "user", s.user, "session", s.id, "err", err)
		s.push(degraded(gatewayv1.Service_SERVICE_FRIENDS, "friends service unavailable; retrying"))
	}
	if !s.syncing {
		s.syncing = true
		go s.syncFriends()
	}
}

// syncFriends saves the pending friends-list changes and then restores the
// list: it sends a FriendRestored for each friend and watches those not
// watched yet. It retries with backoff until it succeeds or the session
// ends.
func (s *session) syncFriends() {
	b := backoff{min: s.g.cfg.BackoffMin, max: s.g.cfg.BackoffMax}
	for {
		err := s.trySyncFriends()
		if err == nil || s.ctx.Err() != nil {
			return
		}
		s.g.log.Debug("sync friends", "user", s.user, "session", s.id, "err", err)
		if !sleep(s.ctx, b.next()) {
			return
		}
	}
}

func (s *session) trySyncFriends() error {
	s.ops.Lock()
	defer s.ops.Unlock()
	if s.closed {
		return nil
	}

	for name := range s.pendingRemoves {
		if err := s.g.removeFriend(s.ctx, s.user, name); err != nil {
			s.friendsFailedLocked(err)
			return err
		}
		delete(s.pendingRemoves, name)
	}
	for name := range s.pendingAdds {
		if err := s.g.addFriend(s.ctx, s.user, name); err != nil {
			s.friendsFailedLocked(err)
			return err
		}
		delete(s.pendingAdds, name)
	}
	friends, err := s.g.getFriends(s.ctx, s.user)
	if err != nil {
		s.friendsFailedLocked(err)
		return err
	}

	for _, name := range friends {
		if err := ValidateName(name); err != nil || name == s.user {
			s.g.log.Warn("friends list holds a bad name", "user", s.user, "friend", name)
			continue
		}
		s.push(&gatewayv1.OpenSessionResponse{Event: &gatewayv1.OpenSessionResponse_FriendRestored{
			FriendRestored: &gatewayv1.FriendRestored{Name: name},
		}})
		if _, ok := s.watching[name]; !ok {
			if len(s.watching) >= s.g.cfg.MaxWatches {
				s.g.log.Warn("friends list longer than a session may watch",
					"user", s.user, "max_watches", s.g.cfg.MaxWatches)
				break
			}
			s.startWatchingLocked(name)
		}
	}
	if s.friendsDown {
		s.friendsDown = false
		s.g.log.Info("friends service recovered", "user", s.user, "session", s.id)
		s.push(recovered(gatewayv1.Service_SERVICE_FRIENDS))
	}
	s.syncing = false
	return nil
}

func degraded(svc gatewayv1.Service, msg string) *gatewayv1.OpenSessionResponse {
	return &gatewayv1.OpenSessionResponse{Event: &gatewayv1.OpenSessionResponse_ServiceDegraded{
		ServiceDegraded: &gatewayv1.ServiceDegraded{Service: svc, Message: msg},
	}}
}

func recovered(svc gatewayv1.Service) *gatewayv1.OpenSessionResponse {
	return &gatewayv1.OpenSessionResponse{Event: &gatewayv1.OpenSessionResponse_ServiceRecovered{
		ServiceRecovered: &gatewayv1.ServiceRecovered{Service: svc},
	}}
}
