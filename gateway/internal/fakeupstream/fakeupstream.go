// Package fakeupstream holds in-process presence and friends services with
// the real services' semantics, for the gateway's tests and for running the
// gateway and its frontend before the real services are built. They keep
// everything in memory and count the streams they serve.
package fakeupstream

import (
	"context"
	"errors"
	"sync"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// Presence is an in-process presence service with the real semantics:
// a user is online while at least one Connect stream for them is open, and
// Monitor sends the status at once and then on every change. It counts the
// streams it serves and can drop them all.
type Presence struct {
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

// NewPresence returns a presence service where nobody is online.
func NewPresence() *Presence {
	return &Presence{
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
func (f *Presence) changeLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Drop ends every open stream with UNAVAILABLE, as an upstream restart does.
func (f *Presence) Drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.dropped)
	f.dropped = make(chan struct{})
}

// Counts is what a Presence saw of one user's streams.
type Counts struct {
	// Connects is the Connect streams open now, ConnectOpens those ever
	// opened and MaxConnects the most open at once.
	Connects, ConnectOpens, MaxConnects int
	// Monitors, MonitorOpens and MaxMonitors are the same for Monitor.
	Monitors, MonitorOpens, MaxMonitors int
}

// Counts returns what the service saw of user's streams.
func (f *Presence) Counts(user string) Counts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Counts{
		Connects: f.connects[user], ConnectOpens: f.connectOpens[user],
		MaxConnects: f.maxConnects[user], Monitors: f.monitors[user],
		MonitorOpens: f.monitorOpens[user], MaxMonitors: f.maxMonitors[user],
	}
}

var errDropped = connect.NewError(connect.CodeUnavailable, errors.New("stream dropped"))

// Connect holds the user online until the caller cancels or Drop is
// called. It sends one Empty at once.
func (f *Presence) Connect(
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

// Monitor sends the user's status at once and then on every change.
func (f *Presence) Monitor(
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

// Friends is an in-process friends service keeping each user's list.
type Friends struct {
	friendspbconnect.UnimplementedFriendsHandler

	mu sync.Mutex
	// lists is guarded by mu.
	lists map[string]map[string]bool
}

// NewFriends returns a friends service where every list is empty.
func NewFriends() *Friends {
	return &Friends{lists: make(map[string]map[string]bool)}
}

// Add puts a friend on the owner's list.
func (f *Friends) Add(
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

// Remove takes a friend off the owner's list.
func (f *Friends) Remove(
	_ context.Context, req *connect.Request[friendspb.Friend],
) (*connect.Response[friendspb.Empty], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.lists[req.Msg.GetUser()], req.Msg.GetFriend())
	return connect.NewResponse(&friendspb.Empty{}), nil
}

// GetFriends returns the owner's list in no particular order.
func (f *Friends) GetFriends(
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

// Has reports whether friend is on user's list.
func (f *Friends) Has(user, friend string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists[user][friend]
}
