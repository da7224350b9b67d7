package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1"
	"github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1/gatewayv1connect"
)

// Session is one open OpenSession stream and what it has heard. A
// goroutine reads the stream until Close or until the stream ends.
type Session struct {
	// User is the session's user and ID its session_id.
	User, ID string
	token    string
	// client makes the session's unary calls.
	client gatewayv1connect.SessionServiceClient
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// statuses, degraded, err and changed are guarded by mu.
	statuses map[string]gatewayv1.UserStatus
	degraded int
	err      error
	// changed has room for one signal that statuses changed.
	changed chan struct{}
}

// OpenSession opens a session stream with token and returns once its
// SessionOpened event arrived. The stream stays open until Close is called
// or parent is done.
func (c *Client) OpenSession(parent context.Context, token string) (*Session, error) {
	i := c.pick()
	client := c.streams[i]
	ctx, cancel := context.WithCancel(parent)
	req := connect.NewRequest(&gatewayv1.OpenSessionRequest{})
	Authorize(req.Header(), token)

	timer := time.AfterFunc(c.cfg.OpenTimeout, cancel)
	stream, err := client.OpenSession(ctx, req)
	if err != nil {
		timer.Stop()
		cancel()
		return nil, fmt.Errorf("open session: %w", err)
	}
	if !stream.Receive() {
		timer.Stop()
		err := stream.Err()
		cancel()
		_ = stream.Close()
		if err == nil {
			err = errors.New("stream ended")
		}
		return nil, fmt.Errorf("open session: %w", err)
	}
	timer.Stop()
	opened := stream.Msg().GetSessionOpened()
	if opened == nil || opened.GetSessionId() == "" {
		cancel()
		_ = stream.Close()
		return nil, fmt.Errorf("open session: %w", errNoOpened)
	}

	s := &Session{
		User:     opened.GetName(),
		ID:       opened.GetSessionId(),
		token:    token,
		client:   c.sessions[i],
		cancel:   cancel,
		done:     make(chan struct{}),
		statuses: make(map[string]gatewayv1.UserStatus),
		changed:  make(chan struct{}, 1),
	}
	go s.read(stream)
	return s, nil
}

// read records the stream's events until it ends.
func (s *Session) read(stream *connect.ServerStreamForClient[gatewayv1.OpenSessionResponse]) {
	defer close(s.done)
	for stream.Receive() {
		msg := stream.Msg()
		switch {
		case msg.GetUserStatusChanged() != nil:
			ev := msg.GetUserStatusChanged()
			s.mu.Lock()
			s.statuses[ev.GetName()] = ev.GetStatus()
			s.mu.Unlock()
			s.signal()
		case msg.GetServiceDegraded() != nil:
			s.mu.Lock()
			s.degraded++
			s.mu.Unlock()
		}
	}
	err := stream.Err()
	if err == nil {
		err = errors.New("stream ended")
	}
	_ = stream.Close()
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	s.signal()
}

func (s *Session) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Watch watches name in the session and fails unless the gateway saved it
// to the friends list.
func (s *Session) Watch(ctx context.Context, name string) error {
	req := connect.NewRequest(&gatewayv1.WatchRequest{SessionId: s.ID, Name: name})
	Authorize(req.Header(), s.token)
	res, err := s.client.Watch(ctx, req)
	if err != nil {
		return fmt.Errorf("watch %s: %w", name, err)
	}
	if !res.Msg.GetSaved() {
		return fmt.Errorf("watch %s: not saved, friends service unavailable", name)
	}
	return nil
}

// Status returns the last status heard for name.
func (s *Session) Status(name string) gatewayv1.UserStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statuses[name]
}

// Err returns why the stream ended, or nil while it is open.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Degraded returns how many ServiceDegraded events the session heard.
func (s *Session) Degraded() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.degraded
}

// WaitKnown waits until the session knows whether each of names is online
// or offline, the stream ends, or ctx is done.
func (s *Session) WaitKnown(ctx context.Context, names []string) error {
	for {
		s.mu.Lock()
		err := s.err
		missing := ""
		for _, n := range names {
			st := s.statuses[n]
			if st != gatewayv1.UserStatus_USER_STATUS_ONLINE &&
				st != gatewayv1.UserStatus_USER_STATUS_OFFLINE {
				missing = n
				break
			}
		}
		s.mu.Unlock()
		switch {
		case err != nil:
			return fmt.Errorf("session stream: %w", err)
		case missing == "":
			return nil
		}
		select {
		case <-s.changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for the status of %s: %w", missing, ctx.Err())
		}
	}
}

// Close ends the session stream and waits for its reader to stop.
func (s *Session) Close() {
	s.cancel()
	<-s.done
}
