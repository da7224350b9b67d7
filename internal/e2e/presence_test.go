package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/presencepb"
)

// TestPresenceAcrossReplicas checks that a user connected through one
// presence replica is seen online through another, offline once the
// connection ends, and offline once the replica holding it crashes, which
// only the cluster's failure detection can tell.
func TestPresenceAcrossReplicas(t *testing.T) {
	t.Parallel()
	rs := StartService(t, binaries(t), "presence", 3)
	const user = "alice"

	m3 := monitor(t, rs[2], user)
	m3.await(t, false)
	conn := connectUser(t, rs[0], user)
	m3.await(t, true)
	conn()
	m3.await(t, false)

	connectUser(t, rs[0], user)
	m3.await(t, true)
	m2 := monitor(t, rs[1], user)
	m2.await(t, true)
	rs[0].Proxy.Kill()
	rs[0].Function.Kill()
	m3.await(t, false)
	m2.await(t, false)
}

// watcher follows a Monitor stream.
type watcher struct {
	name    string
	updates chan bool
	// err is how the stream ended; read after updates is closed.
	err  error
	last *bool
}

// monitor opens a Monitor stream for user through r and follows it until
// the test ends.
func monitor(t *testing.T, r *Replica, user string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := presenceClient(r).Monitor(ctx, connect.NewRequest(&presencepb.User{Name: user}))
	if err != nil {
		cancel()
		t.Fatalf("Monitor through %s: %v", r.Name, err)
	}
	w := &watcher{
		name:    fmt.Sprintf("Monitor(%s) through %s", user, r.Name),
		updates: make(chan bool, 16),
	}
	go func() {
		defer close(w.updates)
		for stream.Receive() {
			w.updates <- stream.Msg().GetOnline()
		}
		w.err = stream.Err()
	}()
	t.Cleanup(func() {
		cancel()
		for range w.updates {
		}
		_ = stream.Close()
	})
	return w
}

// await waits until the latest status the stream sent is online.
func (w *watcher) await(t *testing.T, online bool) {
	t.Helper()
	timeout := time.NewTimer(deadline)
	defer timeout.Stop()
	for w.last == nil || *w.last != online {
		select {
		case v, ok := <-w.updates:
			if !ok {
				t.Fatalf("%s ended before reporting online=%v: %v", w.name, online, w.err)
			}
			w.last = &v
		case <-timeout.C:
			t.Fatalf("%s: no online=%v after %v", w.name, online, deadline)
		}
	}
}

// connectUser opens a Connect stream for user through r, waits for its
// first message, and holds it open until the returned function or the end
// of the test closes it.
func connectUser(t *testing.T, r *Replica, user string) (closeConn func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := presenceClient(r).Connect(ctx, connect.NewRequest(&presencepb.User{Name: user}))
	if err != nil {
		cancel()
		t.Fatalf("Connect through %s: %v", r.Name, err)
	}
	if !stream.Receive() {
		cancel()
		t.Fatalf("Connect through %s ended at once: %v", r.Name, stream.Err())
	}
	closeConn = func() {
		cancel()
		_ = stream.Close()
	}
	t.Cleanup(closeConn)
	return closeConn
}
