package e2e

import (
	"context"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// deadline bounds every wait for the cluster to converge; generous, for
// slow machines.
const deadline = 20 * time.Second

// bins and buildErr are the binaries built once for every test.
var (
	bins     Binaries
	buildErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "e2e-bin-")
	if err != nil {
		buildErr = err
	} else {
		bins, buildErr = Build(dir)
	}
	code := m.Run()
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	os.Exit(code)
}

// binaries returns the built binaries, failing the test when the build
// failed.
func binaries(t *testing.T) Binaries {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bins
}

// h2c is a client for cleartext HTTP/2, as gRPC needs.
var h2c = func() *http.Client {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: protocols}}
}()

// friendsClient returns a gRPC client of the friends service through r's
// proxy.
func friendsClient(r *Replica) friendspbconnect.FriendsClient {
	return friendspbconnect.NewFriendsClient(h2c, r.URL(), connect.WithGRPC())
}

// presenceClient returns a gRPC client of the presence service through r's
// proxy.
func presenceClient(r *Replica) presencepbconnect.PresenceClient {
	return presencepbconnect.NewPresenceClient(h2c, r.URL(), connect.WithGRPC())
}

// getFriends returns user's friends as read through r, sorted.
func getFriends(ctx context.Context, r *Replica, user string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := friendsClient(r).GetFriends(ctx, connect.NewRequest(&friendspb.User{User: user}))
	if err != nil {
		return nil, err
	}
	names := slices.Clone(res.Msg.GetFriends())
	slices.Sort(names)
	return names, nil
}

// addFriend adds friend to user's list through r.
func addFriend(ctx context.Context, r *Replica, user, friend string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req := connect.NewRequest(&friendspb.Friend{User: user, Friend: friend})
	_, err := friendsClient(r).Add(ctx, req)
	return err
}

// eventually polls check until it returns nil or the deadline passes, then
// fails the test with the last error.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: not true after %v: %v", what, deadline, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
