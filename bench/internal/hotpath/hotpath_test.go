package hotpath

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/internal/loadgen"
	"github.com/cloudchat/cloudchat/internal/loadgen/chattest"
)

// callers is the number of goroutines calling at once per GOMAXPROCS, as
// the friends throughput phase of the benchmark driver does with 32 callers
// on two cores.
const callers = 16

// stack is the chat shared by every benchmark of a run: starting and
// stopping it for each of the several runs of a benchmark function would
// take longer than the benchmarks.
var stack struct {
	once   sync.Once
	chat   *chattest.Chat
	client *loadgen.Client
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range held {
		f.Close()
	}
	if stack.client != nil {
		stack.client.Close()
	}
	if stack.chat != nil {
		stack.chat.Close()
	}
	os.Exit(code)
}

// chat returns a client of the shared chat, speaking Connect with JSON as
// the browser app does, and starts the chat on first use.
func chat(tb testing.TB) *loadgen.Client {
	tb.Helper()
	stack.once.Do(func() {
		if stack.chat, stack.err = chattest.Start(); stack.err != nil {
			return
		}
		stack.client, stack.err = loadgen.New(loadgen.Config{
			BaseURL: stack.chat.GatewayURL, Transports: 4,
		})
	})
	if stack.err != nil {
		tb.Fatal(stack.err)
	}
	return stack.client
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

// held keeps the sessions of BenchmarkHoldSessions open until the process
// ends, so that a heap profile written after the benchmarks shows them.
var held []*loadgen.Fleet

// BenchmarkHoldSessions opens b.N sessions that each watch five users and
// leaves them open. Run it with -benchtime=<n>x and -memprofile to see
// what holding n sessions costs, by allocation site.
func BenchmarkHoldSessions(b *testing.B) {
	client := chat(b)
	fleet, err := loadgen.NewFleet(loadgen.FleetConfig{
		Client:  client,
		Prefix:  fmt.Sprintf("held%d-", len(held)),
		Watches: 5,
	})
	if err != nil {
		b.Fatal(err)
	}
	held = append(held, fleet)
	b.ResetTimer()
	if err := fleet.Grow(context.Background(), b.N); err != nil {
		b.Fatal(err)
	}
}
