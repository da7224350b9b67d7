package cluster

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/memberlist"
)

// setStore is a Store of grow-only sets of strings, encoded as the sorted
// elements joined by newlines. Merge is union, so it is a CRDT.
type setStore struct {
	mu      sync.Mutex // guards sets and members
	sets    map[string]map[string]bool
	members []string
}

func newSetStore() *setStore { return &setStore{sets: map[string]map[string]bool{}} }

func (s *setStore) add(key, elem string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sets[key] == nil {
		s.sets[key] = map[string]bool{}
	}
	s.sets[key][elem] = true
	return []byte(elem)
}

func (s *setStore) encode(key string) []byte {
	elems := make([]string, 0, len(s.sets[key]))
	for e := range s.sets[key] {
		elems = append(elems, e)
	}
	slices.Sort(elems)
	return []byte(strings.Join(elems, "\n"))
}

func (s *setStore) Fingerprints() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.sets))
	for k := range s.sets {
		h := fnv.New64a()
		h.Write(s.encode(k))
		out[k] = h.Sum64()
	}
	return out
}

func (s *setStore) Encode(key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sets[key]; !ok {
		return nil, false
	}
	return s.encode(key), true
}

func (s *setStore) Merge(key string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sets[key] == nil {
		s.sets[key] = map[string]bool{}
	}
	for _, e := range strings.Split(string(data), "\n") {
		if e != "" {
			s.sets[key][e] = true
		}
	}
	return nil
}

func (s *setStore) SetMembers(alive []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members = slices.Clone(alive)
}

func (s *setStore) snapshot() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]string{}
	for k := range s.sets {
		out[k] = strings.Split(string(s.encode(k)), "\n")
	}
	return out
}

func (s *setStore) liveMembers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.members)
}

// faults injects delays, drops and partitions into a memNetwork.
type faults struct {
	mu        sync.Mutex // guards the fields below
	rng       *rand.Rand
	dropDial  float64
	dropPkt   float64
	maxDelay  time.Duration
	partition map[string]int // address to side; unlisted addresses reach all
	// listening holds the addresses of started nodes: the mock network
	// blocks forever on a dial to a node that has not started.
	listening map[string]bool
}

func (f *faults) listen(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listening == nil {
		f.listening = map[string]bool{}
	}
	f.listening[addr] = true
}

func (f *faults) blocked(from, to string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.listening[to] {
		return true
	}
	a, okA := f.partition[from]
	b, okB := f.partition[to]
	return okA && okB && a != b
}

func (f *faults) roll(p float64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() < p
}

func (f *faults) delay() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxDelay == 0 {
		return 0
	}
	return time.Duration(f.rng.Int64N(int64(f.maxDelay)))
}

func (f *faults) setPartition(sides map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.partition = sides
}

// memNetwork connects memTransports in memory. Unlike memberlist's mock
// network it never blocks: packets to a stopped or busy node are lost, and
// dials to it fail, as on a real network.
type memNetwork struct {
	faults *faults

	mu    sync.Mutex // guards nodes and port
	nodes map[string]*memTransport
	port  int
}

func (n *memNetwork) newTransport() *memTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.port++
	t := &memTransport{
		net:     n,
		addr:    fmt.Sprintf("127.0.0.1:%d", n.port),
		packets: make(chan *memberlist.Packet, 1024),
		streams: make(chan net.Conn, 64),
	}
	if n.nodes == nil {
		n.nodes = map[string]*memTransport{}
	}
	n.nodes[t.addr] = t
	return t
}

func (n *memNetwork) lookup(from, to string) *memTransport {
	if n.faults.blocked(from, to) {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.nodes[to]
	if t == nil || t.isDown() {
		return nil
	}
	return t
}

// memTransport implements memberlist.Transport over a memNetwork.
type memTransport struct {
	net     *memNetwork
	addr    string
	packets chan *memberlist.Packet
	streams chan net.Conn

	mu   sync.Mutex // guards down
	down bool
}

func (t *memTransport) isDown() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.down
}

func (t *memTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	host, port, _ := net.SplitHostPort(t.addr)
	p, _ := strconv.Atoi(port)
	return net.ParseIP(host), p, nil
}

func (t *memTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	dst := t.net.lookup(t.addr, addr)
	if dst == nil || t.net.faults.roll(t.net.faults.dropPkt) {
		return now, nil
	}
	pkt := &memberlist.Packet{Buf: slices.Clone(b), From: memAddr(t.addr), Timestamp: now}
	deliver := func() {
		select {
		case dst.packets <- pkt:
		default:
		}
	}
	if d := t.net.faults.delay(); d > 0 {
		time.AfterFunc(d, deliver)
	} else {
		deliver()
	}
	return now, nil
}

func (t *memTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *memTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	time.Sleep(t.net.faults.delay())
	if t.net.faults.roll(t.net.faults.dropDial) {
		return nil, fmt.Errorf("dial %s: injected failure", addr)
	}
	dst := t.net.lookup(t.addr, addr)
	if dst == nil {
		return nil, fmt.Errorf("dial %s: unreachable", addr)
	}
	local, remote := net.Pipe()
	select {
	case dst.streams <- remote:
		return local, nil
	case <-time.After(timeout):
		return nil, fmt.Errorf("dial %s: timeout", addr)
	}
}

func (t *memTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *memTransport) Shutdown() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.down = true
	return nil
}

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

type testNode struct {
	name    string
	addr    string
	store   *setStore
	cluster *Cluster
}

// harness is a set of cluster nodes on one mock network.
type harness struct {
	t       *testing.T
	network *memNetwork
	faults  *faults
	nodes   []*testNode
}

// startNodes starts n nodes on one mock network, each joining the first.
func startNodes(t *testing.T, n int, f *faults) *harness {
	t.Helper()
	h := &harness{t: t, network: &memNetwork{faults: f}, faults: f}
	// Every node lists every other as a seed, as a headless service would.
	var transports []*memTransport
	for range n {
		transports = append(transports, h.network.newTransport())
	}
	for i, tr := range transports {
		h.start(fmt.Sprintf("node-%d", i+1), tr, transports)
	}
	return h
}

// add starts one more node that joins the others.
func (h *harness) add() *testNode {
	name := fmt.Sprintf("node-%d", len(h.nodes)+1)
	return h.start(name, h.network.newTransport(), nil)
}

// start starts a node on inner whose seeds are the nodes started before and
// the given transports.
func (h *harness) start(name string, tr *memTransport, peers []*memTransport) *testNode {
	t := h.t
	t.Helper()
	node := &testNode{name: name, addr: tr.addr, store: newSetStore()}
	var seeds []string
	for _, n := range h.nodes {
		seeds = append(seeds, n.addr)
	}
	for _, p := range peers {
		if p.addr != node.addr && !slices.Contains(seeds, p.addr) {
			seeds = append(seeds, p.addr)
		}
	}
	c, err := New(Config{
		NodeName:         name,
		Join:             seeds,
		JoinTimeout:      time.Second,
		RejoinInterval:   200 * time.Millisecond,
		PushPullInterval: 500 * time.Millisecond,
		ProbeInterval:    100 * time.Millisecond,
		Store:            node.store,
		Logger:           testLogger(t),
		Transport:        tr,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.faults.listen(node.addr)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	node.cluster = c
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
	})
	h.nodes = append(h.nodes, node)
	return node
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		diff := cond()
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reached after %v: %s", what, timeout, diff)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func converged(nodes []*testNode) string {
	want := nodes[0].store.snapshot()
	for _, n := range nodes[1:] {
		if d := cmp.Diff(want, n.store.snapshot()); d != "" {
			return fmt.Sprintf("%s and %s differ (-%s +%s):\n%s", nodes[0].name, n.name, nodes[0].name, n.name, d)
		}
	}
	return ""
}

// write applies a local change on node and broadcasts its delta.
func write(n *testNode, key, elem string) {
	n.cluster.Broadcast(key, n.store.add(key, elem))
}

func TestThreeNodesConverge(t *testing.T) {
	t.Parallel()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	f := &faults{rng: rand.New(rand.NewPCG(seed, 1))}
	nodes := startNodes(t, 3, f).nodes
	eventually(t, 10*time.Second, "full membership", func() string {
		for _, n := range nodes {
			if got := len(n.store.liveMembers()); got != 3 {
				return fmt.Sprintf("%s sees %d members", n.name, got)
			}
		}
		return ""
	})

	// Faults start after the cluster formed: delays, dropped and repeated
	// sends, lost packets.
	f.mu.Lock()
	f.dropDial, f.dropPkt, f.maxDelay = 0.2, 0.02, 20*time.Millisecond
	f.mu.Unlock()
	rng := rand.New(rand.NewPCG(seed, 2))
	var wg sync.WaitGroup
	for i, n := range nodes {
		ops := make([][2]string, 200)
		for j := range ops {
			ops[j] = [2]string{fmt.Sprintf("user-%d", rng.IntN(20)), fmt.Sprintf("e-%d-%d", i, j)}
		}
		wg.Go(func() {
			for _, op := range ops {
				write(n, op[0], op[1])
			}
		})
	}
	wg.Wait()
	// Duplicated deliveries: replay every replica to every node again.
	for _, from := range nodes {
		for key := range from.store.snapshot() {
			data, _ := from.store.Encode(key)
			for _, to := range nodes {
				_ = to.store.Merge(key, data)
			}
		}
	}
	eventually(t, 20*time.Second, "convergence", func() string { return converged(nodes) })
	if got := len(nodes[0].store.snapshot()); got == 0 {
		t.Fatal("no keys replicated")
	}
}

func TestPartitionHeals(t *testing.T) {
	t.Parallel()
	f := &faults{rng: rand.New(rand.NewPCG(1, 2))}
	nodes := startNodes(t, 3, f).nodes
	eventually(t, 10*time.Second, "full membership", func() string {
		if got := len(nodes[2].store.liveMembers()); got != 3 {
			return fmt.Sprintf("%d members", got)
		}
		return ""
	})

	f.setPartition(map[string]int{nodes[0].addr: 0, nodes[1].addr: 1, nodes[2].addr: 1})
	eventually(t, 15*time.Second, "partition detected", func() string {
		if got := nodes[0].store.liveMembers(); !slices.Equal(got, []string{"node-1"}) {
			return fmt.Sprintf("node-1 sees %v", got)
		}
		if got := nodes[2].store.liveMembers(); !slices.Equal(got, []string{"node-2", "node-3"}) {
			return fmt.Sprintf("node-3 sees %v", got)
		}
		return ""
	})
	write(nodes[0], "alice", "from-1")
	write(nodes[2], "alice", "from-3")
	write(nodes[1], "bob", "from-2")

	f.setPartition(nil)
	eventually(t, 20*time.Second, "heal", func() string {
		for _, n := range nodes {
			if got := len(n.store.liveMembers()); got != 3 {
				return fmt.Sprintf("%s sees %d members", n.name, got)
			}
		}
		return converged(nodes)
	})
	want := map[string][]string{"alice": {"from-1", "from-3"}, "bob": {"from-2"}}
	if d := cmp.Diff(want, nodes[1].store.snapshot()); d != "" {
		t.Errorf("after heal (-want +got):\n%s", d)
	}
}

func TestLateJoinerCatchesUp(t *testing.T) {
	t.Parallel()
	f := &faults{rng: rand.New(rand.NewPCG(3, 4))}
	h := startNodes(t, 1, f)
	for i := range 50 {
		write(h.nodes[0], fmt.Sprintf("k%d", i%7), fmt.Sprintf("v%d", i))
	}
	h.add()
	eventually(t, 10*time.Second, "catch up", func() string { return converged(h.nodes) })
	if got := len(h.nodes[1].store.snapshot()); got != 7 {
		t.Errorf("late joiner holds %d keys, want 7", got)
	}
}

func TestMemberLeavingStopsCounting(t *testing.T) {
	t.Parallel()
	f := &faults{rng: rand.New(rand.NewPCG(5, 6))}
	nodes := startNodes(t, 3, f).nodes
	eventually(t, 10*time.Second, "full membership", func() string {
		if got := len(nodes[0].store.liveMembers()); got != 3 {
			return fmt.Sprintf("%d members", got)
		}
		return ""
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := nodes[2].cluster.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "leave seen", func() string {
		if got := nodes[0].store.liveMembers(); !slices.Equal(got, []string{"node-1", "node-2"}) {
			return fmt.Sprintf("node-1 sees %v", got)
		}
		return ""
	})
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	base := Config{NodeName: "n", Store: newSetStore(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"no name", func(c *Config) { c.NodeName = "" }},
		{"no store", func(c *Config) { c.Store = nil }},
		{"no logger", func(c *Config) { c.Logger = nil }},
		{"bad port", func(c *Config) { c.BindPort = 70000 }},
		{"bad key", func(c *Config) { c.SecretKey = []byte("short") }},
		{"seed without port", func(c *Config) { c.Join = []string{"presence-headless"} }},
		{"seed bad port", func(c *Config) { c.Join = []string{"host:http"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.edit(&cfg)
			if _, err := New(cfg); err == nil {
				t.Errorf("New succeeded, want an error")
			}
		})
	}
	if _, err := New(base); err != nil {
		t.Errorf("New(valid) = %v", err)
	}
}
