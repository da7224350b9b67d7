package hotpath

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/cloudstate/proxy"
	"github.com/cloudchat/cloudchat/gateway"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/internal/loadgen"
	"github.com/cloudchat/cloudchat/services/friends"
	"github.com/cloudchat/cloudchat/services/presence"
)

// callers is the number of goroutines calling at once per GOMAXPROCS, as
// the friends throughput phase of the benchmark driver does with 32 callers
// on two cores.
const callers = 16

// stack is the chat shared by every benchmark of a run: starting and
// stopping it for each of the several runs of a benchmark function would
// take longer than the benchmarks.
var stack struct {
	once    sync.Once
	client  *loadgen.Client
	err     error
	cleanup []func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(stack.cleanup) - 1; i >= 0; i-- {
		stack.cleanup[i]()
	}
	os.Exit(code)
}

// chat returns a client of the shared chat, starting it on first use.
func chat(tb testing.TB) *loadgen.Client {
	tb.Helper()
	stack.once.Do(func() { stack.client, stack.err = startChat() })
	if stack.err != nil {
		tb.Fatal(stack.err)
	}
	return stack.client
}

// startService runs a user function and its proxy and returns the proxy's
// address once it is ready.
func startService(name string, entity *function.Entity) (string, error) {
	fn, err := function.New(function.Config{ServiceName: name})
	if err != nil {
		return "", err
	}
	if err := fn.Register(entity); err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = fn.Serve(ln) }()
	stack.cleanup = append(stack.cleanup, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = fn.Shutdown(ctx)
	})

	p, err := proxy.New(proxy.Config{
		HTTPAddr:     "127.0.0.1:0",
		MetricsAddr:  "127.0.0.1:0",
		FunctionAddr: ln.Addr().String(),
		NodeName:     name + "-1",
		MaxStreams:   1_000_000,
		MaxEntities:  1_000_000,
	})
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = p.Run(ctx) }()
	stack.cleanup = append(stack.cleanup, func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = p.Shutdown(sctx)
	})
	if err := waitReady("http://" + p.MetricsAddr() + "/readyz"); err != nil {
		return "", err
	}
	return p.HTTPAddr(), nil
}

// waitReady polls url until it answers 200.
func waitReady(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after 30s", url)
}

// startChat runs both services and the gateway and returns a client of
// the gateway speaking Connect with JSON, as the browser app does.
func startChat() (*loadgen.Client, error) {
	presenceAddr, err := startService("presence", presence.NewEntity(presence.Config{}))
	if err != nil {
		return nil, err
	}
	friendsAddr, err := startService("friends", friends.NewEntity(friends.Config{}))
	if err != nil {
		return nil, err
	}
	g, err := gateway.New(gateway.Config{
		Addr:        "127.0.0.1:0",
		Presence:    []string{presenceAddr},
		Friends:     []string{friendsAddr},
		MaxSessions: 1_000_000,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = g.Serve(ctx, ln) }()
	stack.cleanup = append(stack.cleanup, cancel)
	client, err := loadgen.New(loadgen.Config{BaseURL: "http://" + ln.Addr().String(), Transports: 4})
	if err != nil {
		return nil, err
	}
	stack.cleanup = append(stack.cleanup, client.Close)
	return client, nil
}

// worker hands each parallel benchmark goroutine its own user.
type worker struct {
	next atomic.Int64
}

func (w *worker) user(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, w.next.Add(1))
}

// addFriend adds friend to user's list through the gateway.
func addFriend(ctx context.Context, c *loadgen.Client, token, user, friend string) error {
	req := connect.NewRequest(&friendspb.Friend{User: user, Friend: friend})
	loadgen.Authorize(req.Header(), token)
	_, err := c.Friends().Add(ctx, req)
	return err
}

func BenchmarkGetFriendsThroughGateway(b *testing.B) {
	client := chat(b)
	var w worker
	b.SetParallelism(callers)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		user := w.user("get")
		token, err := client.SignIn(ctx, user)
		if err != nil {
			b.Error(err)
			return
		}
		for i := range 8 {
			if err := addFriend(ctx, client, token, user, fmt.Sprint("f", i)); err != nil {
				b.Error(err)
				return
			}
		}
		req := connect.NewRequest(&friendspb.User{User: user})
		for pb.Next() {
			res, err := client.Friends().GetFriends(ctx, req)
			if err != nil {
				b.Error(err)
				return
			}
			if n := len(res.Msg.GetFriends()); n != 8 {
				b.Errorf("got %d friends, want 8", n)
				return
			}
		}
	})
}

func BenchmarkAddThroughGateway(b *testing.B) {
	client := chat(b)
	var w worker
	b.SetParallelism(callers)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		user := w.user("add")
		token, err := client.SignIn(ctx, user)
		if err != nil {
			b.Error(err)
			return
		}
		for i := 0; pb.Next(); i++ {
			if err := addFriend(ctx, client, token, user, fmt.Sprint("f", i%8)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkOpenSession measures what one browser session costs to start:
// sign in, open the session stream, watch five users and wait for their
// statuses, then close.
func BenchmarkOpenSession(b *testing.B) {
	client := chat(b)
	var w worker
	b.SetParallelism(callers / 2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			user := w.user("session")
			token, err := client.SignIn(ctx, user)
			if err != nil {
				b.Error(err)
				return
			}
			s, err := client.OpenSession(ctx, token)
			if err != nil {
				b.Error(err)
				return
			}
			watched := make([]string, 5)
			for k := range watched {
				watched[k] = fmt.Sprintf("%s-w%d", user, k)
				if err := s.Watch(ctx, watched[k]); err != nil {
					b.Error(err)
					s.Close()
					return
				}
			}
			if err := s.WaitKnown(ctx, watched); err != nil {
				b.Error(err)
			}
			s.Close()
		}
	})
}
