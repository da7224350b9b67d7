package proxy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/cloudstate/cluster"
	"github.com/cloudchat/cloudchat/cloudstate/crdt"
	"github.com/cloudchat/cloudchat/gen/presencepb"
)

// freeClusterPort returns a port free for both TCP and UDP on loopback.
func freeClusterPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := tcp.Addr().(*net.TCPAddr).Port
		udp, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		tcp.Close()
		if err == nil {
			udp.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// clusterNode is a proxy, its function and its cluster node, wired as
// cmd/proxy wires them.
type clusterNode struct {
	*harness
	cl   *cluster.Cluster
	addr string
}

func startClusterNode(t *testing.T, name string, seeds []string) *clusterNode {
	t.Helper()
	replicas := NewReplicas(crdt.NodeID(name))
	h := newHarness(t, nil, func(c *Config) {
		c.NodeName = name
		c.Replicas = replicas
	})
	port := freeClusterPort(t)
	cl, err := cluster.New(cluster.Config{
		NodeName:         name,
		BindAddr:         "127.0.0.1",
		BindPort:         port,
		Join:             seeds,
		JoinTimeout:      2 * time.Second,
		RejoinInterval:   200 * time.Millisecond,
		PushPullInterval: 500 * time.Millisecond,
		ProbeInterval:    100 * time.Millisecond,
		Store:            replicas.Store(),
		Logger:           testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	replicas.OnChange(func(c Change) {
		b, err := EncodeChange(c)
		if err != nil {
			t.Errorf("encode change: %v", err)
			return
		}
		cl.Broadcast(c.Key, b)
	})
	if err := cl.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := &clusterNode{harness: h, cl: cl, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	t.Cleanup(func() { _ = cl.Shutdown(context.Background()) })
	h.waitReady()
	return n
}

func TestTwoProxiesReplicate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two clustered proxies")
	}
	t.Parallel()
	a := startClusterNode(t, "a", nil)
	b := startClusterNode(t, "b", []string{a.addr})
	eventually(t, "cluster formed", func() error {
		if m := b.p.Replicas().Membership(); len(m.Alive) != 2 {
			return fmt.Errorf("b sees %v", m.Alive)
		}
		return nil
	})

	addFriends(t, a.harness, "alice", "bob")
	wantFriends(t, b.harness, "alice", "bob")
	addFriends(t, b.harness, "alice", "carol")
	wantFriends(t, a.harness, "alice", "bob", "carol")

	// A connection on a shows on b, and counts no more once a leaves.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := a.presence().Connect(ctx, connect.NewRequest(&presencepb.User{Name: "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	if !conn.Receive() {
		t.Fatal(conn.Err())
	}
	monitor, err := b.presence().Monitor(ctx, connect.NewRequest(&presencepb.User{Name: "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	var seen []bool
	waitOnline := func(want bool) {
		t.Helper()
		for monitor.Receive() {
			seen = append(seen, monitor.Msg().GetOnline())
			if monitor.Msg().GetOnline() == want {
				return
			}
		}
		t.Fatalf("monitor ended (%v) after %v, want online %v", monitor.Err(), seen, want)
	}
	waitOnline(true)
	if err := a.cl.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitOnline(false)
	if !slices.Contains(seen, true) {
		t.Errorf("statuses %v", seen)
	}
}
