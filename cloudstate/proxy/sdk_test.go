package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	sdk "github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/services/friends"
	"github.com/cloudchat/cloudchat/services/presence"
)

// serveSDK serves the chat's friends and presence functions, written with
// the Go SDK, on addr until stop is called or the test ends. It returns the
// address it listens on.
func serveSDK(t *testing.T, addr string) (string, func()) {
	t.Helper()
	srv, err := sdk.New(sdk.Config{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*sdk.Entity{
		friends.NewEntity(friends.Config{}),
		presence.NewEntity(presence.Config{}),
	} {
		if err := srv.Register(e); err != nil {
			t.Fatal(err)
		}
	}
	var ln net.Listener
	eventually(t, "listen", func() error {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// TestGoSDKFunctions runs the proxy in front of the chat's functions
// written with the Go SDK.
func TestGoSDKFunctions(t *testing.T) {
	t.Parallel()
	addr, stop := serveSDK(t, "127.0.0.1:0")
	h := &harness{t: t, fnAddr: addr, fn: newFakeFn(nil)}
	h.start(Config{
		Logger:             testLogger(),
		HTTPAddr:           "127.0.0.1:0",
		MetricsAddr:        "127.0.0.1:0",
		FunctionAddr:       addr,
		NodeName:           "node-1",
		RetryMin:           20 * time.Millisecond,
		RetryMax:           200 * time.Millisecond,
		PassivationTimeout: 200 * time.Millisecond,
	})
	h.waitReady()
	ctx := context.Background()

	addFriends(t, h, "alice", "bob", "carol")
	if _, err := h.friends(connect.WithGRPCWeb()).Remove(ctx,
		connect.NewRequest(&friendspb.Friend{User: "alice", Friend: "bob"})); err != nil {
		t.Fatal(err)
	}
	wantFriends(t, h, "alice", "carol")

	// Across passivation the list comes back from the proxy.
	eventually(t, "passivation", func() error {
		if n := h.p.ents.count(); n != 0 {
			return fmt.Errorf("%d entities active", n)
		}
		return nil
	})
	wantFriends(t, h, "alice", "carol")

	// And across a restart of the function.
	stop()
	serveSDK(t, addr)
	wantFriends(t, h, "alice", "carol")

	monitor, err := h.presence().Monitor(ctx, connect.NewRequest(&presencepb.User{Name: "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	var seen []bool
	next := func() bool {
		t.Helper()
		if !monitor.Receive() {
			t.Fatalf("monitor ended: %v", monitor.Err())
		}
		seen = append(seen, monitor.Msg().GetOnline())
		return monitor.Msg().GetOnline()
	}
	if next() {
		t.Fatal("online before any connection")
	}
	connCtx, disconnect := context.WithCancel(ctx)
	conn, err := h.presence(connect.WithProtoJSON()).Connect(connCtx,
		connect.NewRequest(&presencepb.User{Name: "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	if !conn.Receive() {
		t.Fatal(conn.Err())
	}
	if !next() {
		t.Fatalf("statuses %v, want online after connect", seen)
	}
	disconnect()
	if next() {
		t.Fatalf("statuses %v, want offline after disconnect", seen)
	}
	if !slices.Equal(seen, []bool{false, true, false}) {
		t.Errorf("statuses %v", seen)
	}
}
