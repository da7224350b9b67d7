package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb"
)

func TestValidateName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		input string
		ok    bool
	}{
		{name: "plain", input: "alice", ok: true},
		{name: "unicode", input: "zoë 🦊", ok: true},
		{name: "longest", input: strings.Repeat("a", MaxNameLen), ok: true},
		{name: "empty", input: ""},
		{name: "too long", input: strings.Repeat("a", MaxNameLen+1)},
		{name: "slash", input: "a/b"},
		{name: "newline", input: "a\nb"},
		{name: "nul", input: "a\x00"},
		{name: "c1 control", input: "a\u0085"},
		{name: "invalid utf8", input: "a\xff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.input)
			if (err == nil) != tt.ok {
				t.Errorf("ValidateName(%q) = %v, want ok %v", tt.input, err, tt.ok)
			}
		})
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	tk := &tokens{
		secret: []byte(strings.Repeat("s", MinSecretLen)),
		ttl:    time.Hour,
		now:    func() time.Time { return now },
	}
	token, expiry, err := tk.issue("alice")
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if want := now.Add(time.Hour); !expiry.Equal(want) {
		t.Errorf("expiry = %v, want %v", expiry, want)
	}
	other, _, err := tk.issue("alice")
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if other == token {
		t.Errorf("two tokens for the same user and time are equal; the nonce is missing")
	}
	if user, err := tk.verify(token); err != nil || user != "alice" {
		t.Errorf("verify = %q, %v; want alice, nil", user, err)
	}

	payload, mac, _ := strings.Cut(token, ".")
	otherSecret := &tokens{secret: []byte(strings.Repeat("t", MinSecretLen)), ttl: time.Hour,
		now: tk.now}
	forged, _, _ := otherSecret.issue("alice")
	flipped := []byte(payload)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{name: "empty", token: "", want: errTokenInvalid},
		{name: "no mac", token: payload, want: errTokenInvalid},
		{name: "bad base64", token: "!!." + mac, want: errTokenInvalid},
		{name: "altered payload", token: string(flipped) + "." + mac, want: errTokenInvalid},
		{name: "other secret", token: forged, want: errTokenInvalid},
		{name: "truncated mac", token: payload + "." + mac[:10], want: errTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tk.verify(tt.token); !errors.Is(err, tt.want) {
				t.Errorf("verify(%q) = %v, want %v", tt.token, err, tt.want)
			}
		})
	}

	now = now.Add(time.Hour)
	if _, err := tk.verify(token); !errors.Is(err, errTokenExpired) {
		t.Errorf("verify at expiry = %v, want %v", err, errTokenExpired)
	}
}

// TestAuth checks every call that acts for a user against every kind of bad
// token, through the real handlers.
func TestAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.signIn("alice")
	bob := e.signIn("bob")
	aliceSession := e.open(alice)
	expired := e.signIn("alice")
	e.clock.advance(25 * time.Hour)
	alice = e.signIn("alice")
	bob = e.signIn("bob")
	aliceSession.token = alice

	ctx := context.Background()
	calls := []struct {
		name string
		// call acts for alice with header as the Authorization value.
		call func(header string) error
		// otherUser is false where the user comes from the token alone.
		otherUser bool
	}{
		{name: "OpenSession", call: func(h string) error {
			stream, err := e.sessions.OpenSession(ctx, withHeader(&gatewayv1.OpenSessionRequest{}, h))
			if err != nil {
				return err
			}
			defer stream.Close()
			stream.Receive()
			return stream.Err()
		}},
		{name: "Watch", otherUser: true, call: func(h string) error {
			_, err := e.sessions.Watch(ctx, withHeader(
				&gatewayv1.WatchRequest{SessionId: aliceSession.id, Name: "carol"}, h))
			return err
		}},
		{name: "Unwatch", otherUser: true, call: func(h string) error {
			_, err := e.sessions.Unwatch(ctx, withHeader(
				&gatewayv1.UnwatchRequest{SessionId: aliceSession.id, Name: "carol"}, h))
			return err
		}},
		{name: "Presence.Connect", otherUser: true, call: func(h string) error {
			stream, err := e.presenceRelay.Connect(ctx, withHeader(&presencepb.User{Name: "alice"}, h))
			if err != nil {
				return err
			}
			defer stream.Close()
			stream.Receive()
			return stream.Err()
		}},
		{name: "Friends.Add", otherUser: true, call: func(h string) error {
			_, err := e.friendsRelay.Add(ctx, withHeader(
				&friendspb.Friend{User: "alice", Friend: "carol"}, h))
			return err
		}},
		{name: "Friends.Remove", otherUser: true, call: func(h string) error {
			_, err := e.friendsRelay.Remove(ctx, withHeader(
				&friendspb.Friend{User: "alice", Friend: "carol"}, h))
			return err
		}},
	}
	headers := []struct {
		name   string
		header string
		want   connect.Code
	}{
		{name: "missing", header: "", want: connect.CodeUnauthenticated},
		{name: "not bearer", header: "Basic " + alice, want: connect.CodeUnauthenticated},
		{name: "garbage", header: "Bearer garbage", want: connect.CodeUnauthenticated},
		{name: "altered", header: "Bearer x" + alice[1:], want: connect.CodeUnauthenticated},
		{name: "expired", header: "Bearer " + expired, want: connect.CodeUnauthenticated},
		{name: "other user", header: "Bearer " + bob, want: connect.CodePermissionDenied},
	}
	for _, c := range calls {
		for _, h := range headers {
			if h.want == connect.CodePermissionDenied && !c.otherUser {
				continue
			}
			t.Run(c.name+"/"+h.name, func(t *testing.T) {
				if got := codeOf(c.call(h.header)); got != h.want {
					t.Errorf("code = %v, want %v", got, h.want)
				}
			})
		}
	}
	t.Run("valid token works", func(t *testing.T) {
		if err := calls[1].call("Bearer " + alice); err != nil {
			t.Errorf("Watch with alice's token: %v", err)
		}
		if err := calls[4].call("bearer " + alice); err != nil {
			t.Errorf("Friends.Add with alice's token: %v", err)
		}
	})
}

// TestReadsNeedNoToken checks that Monitor, GetFriends and GetUserStatus
// answer without a token.
func TestReadsNeedNoToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	stream, err := e.presenceRelay.Monitor(ctx, connect.NewRequest(&presencepb.User{Name: "alice"}))
	if err != nil {
		t.Fatalf("Monitor: %v", err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("Monitor ended: %v", stream.Err())
	}
	if stream.Msg().GetOnline() {
		t.Errorf("alice online before she connected")
	}
	if _, err := e.friendsRelay.GetFriends(ctx,
		connect.NewRequest(&friendspb.User{User: "alice"})); err != nil {
		t.Errorf("GetFriends: %v", err)
	}
	grpcWeb := friendspbconnect.NewFriendsClient(http.DefaultClient, e.url, connect.WithGRPCWeb())
	if _, err := grpcWeb.GetFriends(ctx,
		connect.NewRequest(&friendspb.User{User: "alice"})); err != nil {
		t.Errorf("GetFriends over gRPC-Web: %v", err)
	}
	if _, err := e.sessions.GetUserStatus(ctx, connect.NewRequest(
		&gatewayv1.GetUserStatusRequest{Names: []string{"alice"}})); err != nil {
		t.Errorf("GetUserStatus: %v", err)
	}
}

func TestSignInRefusesBadNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, name := range []string{"", "a/b", "tab\there", strings.Repeat("x", 65)} {
		_, err := e.sessions.SignIn(context.Background(),
			connect.NewRequest(&gatewayv1.SignInRequest{Name: name}))
		if got := codeOf(err); got != connect.CodeInvalidArgument {
			t.Errorf("SignIn(%q) code = %v, want %v", name, got, connect.CodeInvalidArgument)
		}
	}
}

func withHeader[T any](msg *T, header string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if header != "" {
		req.Header().Set("Authorization", header)
	}
	return req
}
