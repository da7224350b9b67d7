package loadgen_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
	"github.com/cloudchat/cloudchat/internal/loadgen"
	"github.com/cloudchat/cloudchat/internal/loadgen/chattest"
)

// startChat runs the whole chat in this process for one test.
func startChat(t *testing.T) *chattest.Chat {
	t.Helper()
	chat, err := chattest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(chat.Close)
	return chat
}

func newClient(t *testing.T, url string, codec loadgen.Codec) *loadgen.Client {
	t.Helper()
	c, err := loadgen.New(loadgen.Config{BaseURL: url, Transports: 3, Codec: codec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  loadgen.Config
		want string
	}{
		{"no url", loadgen.Config{}, "base url"},
		{"https", loadgen.Config{BaseURL: "https://x:1"}, "cleartext"},
		{"negative transports", loadgen.Config{BaseURL: "http://x:1", Transports: -1}, "transports"},
		{"bad codec", loadgen.Config{BaseURL: "http://x:1", Codec: "xml"}, "codec"},
		{"negative timeout", loadgen.Config{BaseURL: "http://x:1", OpenTimeout: -1}, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := loadgen.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// TestAgainstTheGateway drives an in-process chat the way the benchmark
// does: sessions that watch each other, friends calls and presence flips.
func TestAgainstTheGateway(t *testing.T) {
	chat := startChat(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("fleet", func(t *testing.T) {
		client := newClient(t, chat.GatewayURL, loadgen.CodecJSON)
		fleet, err := loadgen.NewFleet(loadgen.FleetConfig{
			Client: client, Prefix: "fleet-", Watches: 2, Parallel: 4,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer fleet.Close()
		if err := fleet.Grow(ctx, 6); err != nil {
			t.Fatal(err)
		}
		if err := fleet.Grow(ctx, 10); err != nil {
			t.Fatal(err)
		}
		if got := fleet.Ready(); got != 10 {
			t.Errorf("%d sessions ready, want 10", got)
		}
		if got := fleet.Failed() + fleet.Lost(); got != 0 {
			t.Errorf("%d sessions failed or lost, want none", got)
		}
		// Transports share connections between calls: at most one per
		// transport for each opener racing to dial, far below the 40 calls.
		if n := client.Dials(); n < 1 || n > 3*4 {
			t.Errorf("%d connections dialed, want 1 to 12", n)
		}
	})

	t.Run("session sees a watched user come online", func(t *testing.T) {
		client := newClient(t, chat.GatewayURL, loadgen.CodecJSON)
		open := func(name string) *loadgen.Session {
			t.Helper()
			token, err := client.SignIn(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			s, err := client.OpenSession(ctx, token)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		alice := open("watch-alice")
		defer alice.Close()
		if alice.User != "watch-alice" || alice.ID == "" {
			t.Errorf("session of %q with id %q, want watch-alice and an id", alice.User, alice.ID)
		}
		if err := alice.Watch(ctx, "watch-bob"); err != nil {
			t.Fatal(err)
		}
		if err := alice.WaitKnown(ctx, []string{"watch-bob"}); err != nil {
			t.Fatal(err)
		}
		if got := alice.Status("watch-bob"); got != gatewayv1.UserStatus_USER_STATUS_OFFLINE {
			t.Errorf("bob is %v before he connects, want offline", got)
		}
		bob := open("watch-bob")
		defer bob.Close()
		waitFor(ctx, t, func() bool {
			return alice.Status("watch-bob") == gatewayv1.UserStatus_USER_STATUS_ONLINE
		})
		if err := alice.Watch(ctx, "watch-alice"); err == nil {
			t.Error("watching oneself succeeded, want an error")
		}
		if alice.Err() != nil || alice.Degraded() != 0 {
			t.Errorf("stream err %v, %d degraded events; want none", alice.Err(), alice.Degraded())
		}
	})

	t.Run("friends load", func(t *testing.T) {
		client := newClient(t, chat.GatewayURL, loadgen.CodecJSON)
		token, err := client.SignIn(ctx, "load-owner")
		if err != nil {
			t.Fatal(err)
		}
		res := loadgen.Load(ctx, 2, 200*time.Millisecond, func(ctx context.Context, _, call int) error {
			req := connect.NewRequest(&friendspb.Friend{User: "load-owner",
				Friend: fmt.Sprint("f", call%3)})
			loadgen.Authorize(req.Header(), token)
			_, err := client.Friends().Add(ctx, req)
			return err
		})
		if res.Calls == 0 || res.Errors != 0 {
			t.Fatalf("%d calls, %d errors (%v); want calls and no errors",
				res.Calls, res.Errors, res.FirstErr)
		}
		got, err := client.Friends().GetFriends(ctx,
			connect.NewRequest(&friendspb.User{User: "load-owner"}))
		if err != nil {
			t.Fatal(err)
		}
		list := got.Msg.GetFriends()
		slices.Sort(list)
		if !slices.Equal(list, []string{"f0", "f1", "f2"}) {
			t.Errorf("friends %q, want f0 f1 f2", list)
		}
	})

	t.Run("flips", func(t *testing.T) {
		client := newClient(t, chat.PresenceURL, loadgen.CodecGRPC)
		var done []int
		f, err := loadgen.MeasureFlips(ctx, loadgen.FlipConfig{
			Users:   []string{"flip-a", "flip-b"},
			Connect: func(int) presencepbconnect.PresenceClient { return client.Presence() },
			Monitor: func(int) presencepbconnect.PresenceClient { return client.Presence() },
			Flips:   7,
			Done:    func(n int) { done = append(done, n) },
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Online) != 4 || len(f.Offline) != 3 {
			t.Errorf("%d online and %d offline flips, want 4 and 3", len(f.Online), len(f.Offline))
		}
		if !slices.Equal(done, []int{2, 4, 6, 7}) {
			t.Errorf("progress %v, want 2 4 6 7", done)
		}
		for _, d := range slices.Concat(f.Online, f.Offline) {
			if d <= 0 {
				t.Errorf("flip took %v, want a positive time", d)
			}
		}
	})
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met before the deadline")
		case <-time.After(10 * time.Millisecond):
		}
	}
}
