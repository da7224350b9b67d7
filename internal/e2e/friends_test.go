package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/internal/jsfixture"
)

// TestFriendsAcrossReplicas checks that a change made through one friends
// replica is read through the others: an add, then a remove.
func TestFriendsAcrossReplicas(t *testing.T) {
	t.Parallel()
	rs := StartService(t, binaries(t), "friends", 3)
	ctx := t.Context()
	const user = "bob"

	if err := addFriend(ctx, rs[1], user, "carol"); err != nil {
		t.Fatalf("Add through %s: %v", rs[1].Name, err)
	}
	awaitFriends(t, rs[2], user, []string{"carol"})

	if err := addFriend(ctx, rs[2], user, "dan"); err != nil {
		t.Fatalf("Add through %s: %v", rs[2].Name, err)
	}
	// The remove waits until its replica has seen dan: a remove that races
	// with a remote add is TestFriendsRemoveKeepsConcurrentAdd.
	awaitFriends(t, rs[0], user, []string{"carol", "dan"})
	_, err := friendsClient(rs[0]).Remove(ctx,
		connect.NewRequest(&friendspb.Friend{User: user, Friend: "carol"}))
	if err != nil {
		t.Fatalf("Remove through %s: %v", rs[0].Name, err)
	}
	for _, r := range rs {
		awaitFriends(t, r, user, []string{"dan"})
	}
}

// TestFriendsRemoveKeepsConcurrentAdd removes a user's only friend through
// one replica just after another friend was added, and acknowledged,
// through another: the add must survive the remove everywhere.
func TestFriendsRemoveKeepsConcurrentAdd(t *testing.T) {
	t.Parallel()
	rs := StartService(t, binaries(t), "friends", 3)
	ctx := t.Context()
	for i := range 20 {
		user := fmt.Sprintf("grace-%02d", i)
		if err := addFriend(ctx, rs[1], user, "old"); err != nil {
			t.Fatalf("Add through %s: %v", rs[1].Name, err)
		}
		awaitFriends(t, rs[0], user, []string{"old"})
		if err := addFriend(ctx, rs[2], user, "new"); err != nil {
			t.Fatalf("Add through %s: %v", rs[2].Name, err)
		}
		_, err := friendsClient(rs[0]).Remove(ctx,
			connect.NewRequest(&friendspb.Friend{User: user, Friend: "old"}))
		if err != nil {
			t.Fatalf("Remove through %s: %v", rs[0].Name, err)
		}
		for _, r := range rs {
			awaitFriends(t, r, user, []string{"new"})
		}
	}
}

// awaitFriends polls r until user's friends are exactly want, sorted.
func awaitFriends(t *testing.T, r *Replica, user string, want []string) {
	t.Helper()
	eventually(t, fmt.Sprintf("friends of %s through %s are %v", user, r.Name, want), func() error {
		got, err := getFriends(t.Context(), r, user)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
}

// TestFriendsRollingRestart restarts every function and proxy of three
// friends replicas, one replica at a time, while a writer adds friends
// through the replicas that are up. A restarted proxy starts with no
// replicas, so it must catch up from the others before the next goes down;
// at the end every acknowledged add is on every replica.
func TestFriendsRollingRestart(t *testing.T) {
	t.Parallel()
	rs := StartService(t, binaries(t), "friends", 3)
	const user = "erin"
	w := startWriter(t, rs, user)

	// Let the writer reach every replica before the first goes down.
	for i := range rs {
		w.awaitAcks(t, i, 1)
	}
	for i, r := range rs {
		began := time.Now()
		w.setUp(i, false)
		if err := r.Proxy.Stop(DefaultStopTimeout); err != nil {
			t.Errorf("%v", err)
		}
		if err := r.Function.Stop(DefaultStopTimeout); err != nil {
			t.Errorf("%v", err)
		}
		stopped := time.Now()
		if err := r.Function.Start(); err != nil {
			t.Fatal(err)
		}
		if err := r.Proxy.Start(); err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		acked := w.acked()
		eventually(t, fmt.Sprintf("restarted %s has the %d adds acknowledged so far",
			r.Name, len(acked)), func() error {
			return hasAll(t.Context(), r, user, acked, w.tried)
		})
		ms := time.Millisecond
		t.Logf("%s: stopped in %v, started in %v, caught up with %d adds in %v", r.Name,
			stopped.Sub(began).Round(ms), started.Sub(stopped).Round(ms),
			len(acked), time.Since(started).Round(ms))
		before := w.acksThrough(i)
		w.setUp(i, true)
		w.awaitAcks(t, i, before+1)
	}

	acked := w.stop()
	t.Logf("%d adds acknowledged, %d failed %v", len(acked), w.failed.Load(), w.errs)
	for _, r := range rs {
		what := fmt.Sprintf("%s has all %d acknowledged adds", r.Name, len(acked))
		eventually(t, what, func() error {
			return hasAll(t.Context(), r, user, acked, w.tried)
		})
	}
}

// hasAll checks that user's friends read through r include every name of
// want and only names the writer tried.
func hasAll(
	ctx context.Context, r *Replica, user string, want []string, tried func(string) bool,
) error {
	got, err := getFriends(ctx, r, user)
	if err != nil {
		return err
	}
	for _, name := range got {
		if !tried(name) {
			return fmt.Errorf("unexpected friend %q", name)
		}
	}
	var missing []string
	for _, name := range want {
		if _, ok := slices.BinarySearch(got, name); !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d of %d missing, such as %q", len(missing), len(want), missing[0])
	}
	return nil
}

// writer adds distinct friends, friend-0001 onwards, round robin through the
// replicas that are up, and records each add that was acknowledged.
type writer struct {
	rs     []*Replica
	user   string
	up     []atomic.Bool
	failed atomic.Int64
	cancel context.CancelFunc
	done   chan struct{}

	// mu guards next, acks, per and errs.
	mu   sync.Mutex
	next int      // number of the next name to try
	acks []string // acknowledged names, in order
	per  []int    // acknowledged adds through each replica
	errs []string // the first failures, for the log
}

// startWriter starts a writer with every replica up; it stops when the
// test ends, if not before.
func startWriter(t *testing.T, rs []*Replica, user string) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{
		rs: rs, user: user, up: make([]atomic.Bool, len(rs)),
		cancel: cancel, done: make(chan struct{}), next: 1, per: make([]int, len(rs)),
	}
	for i := range w.up {
		w.up[i].Store(true)
	}
	go w.run(ctx)
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

func (w *writer) run(ctx context.Context) {
	defer close(w.done)
	// Pacing keeps the set, and the work of two shared cores, moderate.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for turn := 0; ; turn++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		i := turn % len(w.rs)
		if !w.up[i].Load() {
			continue
		}
		w.mu.Lock()
		name := fmt.Sprintf("friend-%04d", w.next)
		w.next++
		w.mu.Unlock()
		if err := addFriend(ctx, w.rs[i], w.user, name); err != nil {
			if ctx.Err() == nil {
				w.failed.Add(1)
				w.mu.Lock()
				if len(w.errs) < 5 {
					w.errs = append(w.errs,
						fmt.Sprintf("add %s through %s: %v", name, w.rs[i].Name, err))
				}
				w.mu.Unlock()
			}
			continue
		}
		w.mu.Lock()
		w.acks = append(w.acks, name)
		w.per[i]++
		w.mu.Unlock()
	}
}

// setUp marks replica i as up or down for the writer.
func (w *writer) setUp(i int, up bool) { w.up[i].Store(up) }

// acked returns the acknowledged names so far, sorted.
func (w *writer) acked() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	names := slices.Clone(w.acks)
	slices.Sort(names)
	return names
}

// tried reports whether the writer has tried to add name.
func (w *writer) tried(name string) bool {
	var n int
	if _, err := fmt.Sscanf(name, "friend-%d", &n); err != nil {
		return false
	}
	if name != fmt.Sprintf("friend-%04d", n) {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return n >= 1 && n < w.next
}

// acksThrough returns how many adds replica i has acknowledged.
func (w *writer) acksThrough(i int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.per[i]
}

// awaitAcks waits until replica i has acknowledged at least n adds.
func (w *writer) awaitAcks(t *testing.T, i, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s acknowledged %d adds", w.rs[i].Name, n), func() error {
		if got := w.acksThrough(i); got < n {
			return fmt.Errorf("%d so far, %d failures in all", got, w.failed.Load())
		}
		return nil
	})
}

// stop stops the writer and returns the acknowledged names, sorted.
func (w *writer) stop() []string {
	w.cancel()
	<-w.done
	return w.acked()
}

// TestFriendsPolyglot runs replica A with the original JavaScript friends
// function and replica B with the Go one, each behind a clustered proxy:
// changes made through either are read through the other. Then A switches
// to the Go function on the same port, and the proxy, opening its entities
// again with their state, keeps the list whole.
func TestFriendsPolyglot(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	ports, err := PickPorts(2)
	if err != nil {
		t.Fatal(err)
	}
	js := jsfixture.Start(t, ports[0].Function)
	goFn := Start(t, FunctionSpec(bin, "friends", "friends-2-function", ports[1].Function))
	rs := StartProxies(t, bin, "friends", ports)
	rs[1].Function = goFn[0]
	a, b := rs[0], rs[1]
	ctx := t.Context()
	const user = "frank"

	if err := addFriend(ctx, a, user, "from-js"); err != nil {
		t.Fatalf("Add through %s (JavaScript): %v", a.Name, err)
	}
	// The library traces each entity it serves as "[entity key]".
	if !strings.Contains(js.Output(), "["+user+"]") {
		t.Fatalf("the JavaScript function did not serve %s's entity", user)
	}
	awaitFriends(t, b, user, []string{"from-js"})
	if err := addFriend(ctx, b, user, "from-go"); err != nil {
		t.Fatalf("Add through %s (Go): %v", b.Name, err)
	}
	both := []string{"from-go", "from-js"}
	awaitFriends(t, a, user, both)
	awaitFriends(t, b, user, both)

	js.Kill()
	a.Function = Start(t, FunctionSpec(bin, "friends", "friends-1-function", ports[0].Function))[0]
	awaitFriends(t, a, user, both)
	eventually(t, "add through "+a.Name+" after the switch", func() error {
		return addFriend(ctx, a, user, "after-switch")
	})
	all := []string{"after-switch", "from-go", "from-js"}
	awaitFriends(t, a, user, all)
	awaitFriends(t, b, user, all)
}
