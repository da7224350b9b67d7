package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/internal/jsfixture"
)

// TestJavaScriptFunction runs the proxy in front of the friends function
// written with the original Cloudstate JavaScript library.
func TestJavaScriptFunction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node")
	}
	t.Parallel()
	js := jsfixture.Start(t, 0)
	h := &harness{t: t, fnAddr: js.Addr(), fn: newFakeFn(nil)}
	h.start(Config{
		Logger:             testLogger(),
		HTTPAddr:           "127.0.0.1:0",
		MetricsAddr:        "127.0.0.1:0",
		FunctionAddr:       js.Addr(),
		NodeName:           "node-1",
		RetryMin:           20 * time.Millisecond,
		RetryMax:           200 * time.Millisecond,
		CloseGrace:         200 * time.Millisecond,
		PassivationTimeout: 300 * time.Millisecond,
	})
	h.waitReady()
	ctx := context.Background()

	addFriends(t, h, "alice", "bob", "carol")
	res, err := h.h1.Post(h.base+"/"+friendsService+"/Add", "application/json",
		strings.NewReader(`{"user":"alice","friend":"dave"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("connect JSON add: %s", res.Status)
	}
	if _, err := h.friends(connect.WithGRPCWeb()).Remove(ctx,
		connect.NewRequest(&friendspb.Friend{User: "alice", Friend: "carol"})); err != nil {
		t.Fatal(err)
	}
	wantFriends(t, h, "alice", "bob", "dave")

	// A change made on another node reaches the function.
	delta := remoteDelta(t, "node-2", setDelta(&protocol.ORSetDelta{
		Added: []*anypb.Any{str("erin")}}))
	if err := h.p.Replicas().Merge("Friends-alice", delta); err != nil {
		t.Fatal(err)
	}
	wantFriends(t, h, "alice", "bob", "dave", "erin")

	// Restarted, the function gets its state back from the proxy.
	js.Restart(t)
	wantFriends(t, h, "alice", "bob", "dave", "erin")

	// Connect JSON reads the list back.
	res, err = h.h1.Post(h.base+"/"+friendsService+"/GetFriends", "application/json",
		strings.NewReader(`{"user":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var list struct{ Friends []string }
	if err := json.NewDecoder(res.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	slices.Sort(list.Friends)
	if want := []string{"bob", "dave", "erin"}; !slices.Equal(list.Friends, want) {
		t.Errorf("connect JSON get: %q, want %q", list.Friends, want)
	}

	// buf curl needs no local protos: it reads the schema by reflection.
	bufCurl(t, h.base+"/"+friendsService+"/Add", `{"user":"alice","friend":"frank"}`)
	out := bufCurl(t, h.base+"/"+friendsService+"/GetFriends", `{"user":"alice"}`)
	list.Friends = nil
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("buf curl output %q: %v", out, err)
	}
	slices.Sort(list.Friends)
	if want := []string{"bob", "dave", "erin", "frank"}; !slices.Equal(list.Friends, want) {
		t.Errorf("buf curl get: %q, want %q", list.Friends, want)
	}
}

// bufCurl calls url over gRPC with the buf CLI the frontend installs, and
// returns what it printed.
func bufCurl(t *testing.T, url, body string) []byte {
	t.Helper()
	buf, err := filepath.Abs("../../frontend/node_modules/.bin/buf")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(buf); err != nil {
		t.Fatalf("buf CLI not installed (run ./task deps:npm): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, buf, "curl", "--protocol", "grpc",
		"--http2-prior-knowledge", "--data", body, url)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("buf curl %s: %v\n%s", url, err, stderr)
	}
	return out
}
