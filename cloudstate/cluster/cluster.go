// Package cluster replicates a proxy's CRDT replicas to the other proxies of
// its service. Membership and failure detection come from
// hashicorp/memberlist; replicas travel on two paths:
//
//   - the latency path: each local change is sent at once, as a delta, to
//     every live member over memberlist's reliable (TCP) channel;
//   - the repair path: on memberlist's periodic push/pull, and when a node
//     joins, each side sends a digest of its replicas, and the other answers
//     with every replica whose fingerprint differs, in bounded chunks. This
//     heals deltas lost on the latency path and brings a new node up to date,
//     and sends nothing that has not changed.
//
// The package knows nothing of CRDTs: replicas are opaque bytes that the
// Store encodes and merges.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Store holds the replicas a node replicates. Its methods are called
// concurrently from memberlist's goroutines and must not block for long.
type Store interface {
	// Fingerprints returns a fingerprint of every replica the node holds.
	// Equal replicas must have equal fingerprints on every node.
	Fingerprints() map[string]uint64
	// Encode returns the full replica of key, or false when the node holds
	// none.
	Encode(key string) ([]byte, bool)
	// Merge merges a replica or delta of key received from another node.
	// It must not keep data after it returns.
	Merge(key string, data []byte) error
	// SetMembers is called with the names of the live members, this node
	// included, each time membership changes.
	SetMembers(alive []string)
}

// Config configures a cluster node.
type Config struct {
	// NodeName names this node; it must be unique in the cluster for the life
	// of the process. A restarted process must use a new name.
	NodeName string
	// BindAddr and BindPort are where memberlist listens (TCP and UDP).
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what other nodes dial; empty and 0
	// use the bound address.
	AdvertiseAddr string
	AdvertisePort int
	// Join lists seed members as host:port. A host name is resolved again on
	// every attempt, so a Kubernetes headless service works as a seed. A node
	// may list itself. Seeds that are not members are joined at start and
	// every RejoinInterval.
	Join []string
	// JoinTimeout bounds how long Start waits for a seed to answer before
	// the node starts alone. Default 5 s.
	JoinTimeout time.Duration
	// RejoinInterval is how often the node joins seeds that are not
	// members. Default 5 s.
	RejoinInterval time.Duration
	// SecretKey, when set, encrypts gossip; 16, 24 or 32 bytes (AES).
	SecretKey []byte
	// PushPullInterval is the period of the repair path. Default 10 s.
	PushPullInterval time.Duration
	// ProbeInterval is the failure detector's probe period. Default 500 ms.
	ProbeInterval time.Duration
	// SuspicionMult scales how long a suspect node has to refute before it
	// is declared dead. Default 3.
	SuspicionMult int
	// ChunkBytes bounds the size of one replicas message on the repair path.
	// Default 1 MiB.
	ChunkBytes int
	// QueueLength bounds the deltas waiting for each peer. Default 4096.
	QueueLength int
	// Store holds the replicas.
	Store Store
	// Logger receives the cluster's events.
	Logger *slog.Logger
	// Transport replaces memberlist's network transport, for tests.
	Transport memberlist.Transport
}

func (c *Config) setDefaults() error {
	if c.NodeName == "" {
		return errors.New("node name is empty")
	}
	if c.Store == nil {
		return errors.New("store is nil")
	}
	if c.Logger == nil {
		return errors.New("logger is nil")
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return fmt.Errorf("bind port out of range: %d", c.BindPort)
	}
	if n := len(c.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("secret key must be 16, 24 or 32 bytes, got %d", n)
	}
	for _, seed := range c.Join {
		if _, port, err := net.SplitHostPort(seed); err != nil {
			return fmt.Errorf("seed %q: %w", seed, err)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("seed %q: bad port", seed)
		}
	}
	setDuration(&c.JoinTimeout, 5*time.Second)
	setDuration(&c.RejoinInterval, 5*time.Second)
	setDuration(&c.PushPullInterval, 10*time.Second)
	setDuration(&c.ProbeInterval, 500*time.Millisecond)
	if c.SuspicionMult <= 0 {
		c.SuspicionMult = 3
	}
	if c.ChunkBytes <= 0 {
		c.ChunkBytes = 1 << 20
	}
	if c.QueueLength <= 0 {
		c.QueueLength = 4096
	}
	return nil
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// leaveTimeout bounds how long Shutdown waits for its leave message to
// spread.
const leaveTimeout = time.Second

// Cluster is this node's membership in the cluster of its service.
type Cluster struct {
	cfg    Config
	log    *slog.Logger
	list   *memberlist.Memberlist
	cancel context.CancelFunc
	done   chan struct{}

	// changed signals the membership loop; memberlist's callbacks may not
	// call back into memberlist.
	changed chan struct{}

	shutdownOnce sync.Once
	shutdownErr  error

	// mu guards peers.
	mu    sync.Mutex
	peers map[string]*peer
}

// New validates cfg and returns a cluster node that has not started.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	return &Cluster{
		cfg:     cfg,
		log:     cfg.Logger,
		peers:   make(map[string]*peer),
		done:    make(chan struct{}),
		changed: make(chan struct{}, 1),
	}, nil
}

// Start creates the memberlist node and joins the seeds. It returns once
// the node has joined another member, or after JoinTimeout when no seed
// answered (the first node of a cluster); the node keeps trying its seeds in
// the background while it is alone.
func (c *Cluster) Start(ctx context.Context) error {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.cfg.NodeName
	mc.BindAddr = c.cfg.BindAddr
	mc.BindPort = c.cfg.BindPort
	mc.AdvertiseAddr = c.cfg.AdvertiseAddr
	mc.AdvertisePort = c.cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = c.cfg.BindPort
	}
	mc.SecretKey = c.cfg.SecretKey
	mc.PushPullInterval = c.cfg.PushPullInterval
	mc.ProbeInterval = c.cfg.ProbeInterval
	mc.ProbeTimeout = c.cfg.ProbeInterval / 2
	mc.SuspicionMult = c.cfg.SuspicionMult
	mc.Delegate = (*delegate)(c)
	mc.Events = (*events)(c)
	mc.Logger = newMemberlistLogger(c.log)
	if c.cfg.Transport != nil {
		mc.Transport = c.cfg.Transport
	}
	list, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("create memberlist: %w", err)
	}
	c.list = list
	c.publishMembers()

	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.membershipLoop(runCtx)
	if len(c.cfg.Join) > 0 {
		joinCtx, stop := context.WithTimeout(ctx, c.cfg.JoinTimeout)
		joined := c.joinUntil(joinCtx)
		stop()
		if !joined {
			c.log.Info("no seed answered, starting alone", "seeds", c.cfg.Join)
		}
	}
	go c.rejoinLoop(runCtx)
	return nil
}

// joinUntil tries the seeds until one answers, another member joins this
// node, or ctx is done.
func (c *Cluster) joinUntil(ctx context.Context) bool {
	delay := 100 * time.Millisecond
	for {
		joined, missing := c.joinMissing(ctx)
		if c.list.NumMembers() > 1 || joined > 0 || missing == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// joinMissing resolves the seeds and joins every seed address that is not a
// live member, returning how many answered and how many it tried. A seed
// that does not resolve counts as tried.
func (c *Cluster) joinMissing(ctx context.Context) (joined, tried int) {
	members := make(map[string]bool)
	for _, n := range c.list.Members() {
		members[n.Address()] = true
	}
	var missing []string
	for _, seed := range c.cfg.Join {
		host, port, _ := net.SplitHostPort(seed)
		addrs := []string{host}
		if net.ParseIP(host) == nil {
			resolved, err := net.DefaultResolver.LookupHost(ctx, host)
			if err != nil {
				c.log.Debug("resolve seed", "seed", seed, "err", err)
				tried++
				continue
			}
			addrs = resolved
		}
		for _, a := range addrs {
			if addr := net.JoinHostPort(a, port); !members[addr] {
				missing = append(missing, addr)
			}
		}
	}
	if len(missing) == 0 {
		return 0, tried
	}
	n, err := c.list.Join(missing)
	if err != nil {
		c.log.Debug("join seeds", "seeds", missing, "err", err)
	}
	return n, tried + len(missing)
}

// rejoinLoop joins seeds that are not members, so that a cluster split at
// start, or by a partition that outlived failure detection, becomes one
// again, and new seeds behind a DNS name are found.
func (c *Cluster) rejoinLoop(ctx context.Context) {
	defer close(c.done)
	if len(c.cfg.Join) == 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(c.cfg.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, _ := c.joinMissing(ctx); n > 0 {
				c.log.Info("joined members", "count", n, "members", c.list.NumMembers())
			}
		}
	}
}

// Members returns the names of the live members, this node included, sorted.
func (c *Cluster) Members() []string {
	var names []string
	for _, n := range c.list.Members() {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	return names
}

// Broadcast sends a delta of key to every other live member. It does not
// block: the delta is queued for each member and sent in order. When a
// member's queue is full the delta is dropped for that member, which the
// repair path then heals. It does not keep data after it returns.
func (c *Cluster) Broadcast(key string, data []byte) {
	data = slices.Clone(data)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.peers {
		p.enqueue(key, data)
	}
}

// Shutdown sends what is queued for other members, leaves the cluster
// and stops. Calls after the first return its result.
func (c *Cluster) Shutdown(ctx context.Context) error {
	c.shutdownOnce.Do(func() { c.shutdownErr = c.shutdown(ctx) })
	return c.shutdownErr
}

func (c *Cluster) shutdown(ctx context.Context) error {
	if c.list == nil {
		return nil
	}
	// Stop joining seeds first, or the node would join again as it leaves.
	c.cancel()
	<-c.done
	c.mu.Lock()
	peers := make([]*peer, 0, len(c.peers))
	for _, p := range c.peers {
		peers = append(peers, p)
	}
	c.mu.Unlock()
	for _, p := range peers {
		p.flush(ctx)
	}
	// memberlist waits for its leave message to be gossiped, which never
	// happens when every other member is leaving too: wait briefly. Other
	// members detect a node that left without notice as well, so a leave
	// that could not be confirmed is not an error.
	timeout := leaveTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(max(time.Until(d), 0), leaveTimeout)
	}
	if err := c.list.Leave(timeout); err != nil {
		c.log.Warn("leave cluster", "err", err)
	}
	c.mu.Lock()
	for name, p := range c.peers {
		p.stop()
		delete(c.peers, name)
	}
	c.mu.Unlock()
	if err := c.list.Shutdown(); err != nil {
		return fmt.Errorf("shut down memberlist: %w", err)
	}
	return nil
}

// publishMembers tells the store the current live members and keeps a
// sender for each other member.
func (c *Cluster) publishMembers() {
	nodes := c.list.Members()
	alive := make([]string, 0, len(nodes))
	c.mu.Lock()
	current := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		alive = append(alive, n.Name)
		current[n.Name] = true
		if n.Name == c.cfg.NodeName {
			continue
		}
		if _, ok := c.peers[n.Name]; !ok {
			c.peers[n.Name] = newPeer(c, n)
		}
	}
	for name, p := range c.peers {
		if !current[name] {
			p.stop()
			delete(c.peers, name)
		}
	}
	c.mu.Unlock()
	slices.Sort(alive)
	c.cfg.Store.SetMembers(alive)
}

// node returns memberlist's current record of a member, or nil.
func (c *Cluster) node(name string) *memberlist.Node {
	for _, n := range c.list.Members() {
		if n.Name == name {
			return n
		}
	}
	return nil
}
