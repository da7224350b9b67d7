package cluster

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/cloudchat/cloudchat/gen/cloudchat/cluster/v1"
)

// The first byte of every message between nodes names its kind.
const (
	msgReplicas byte = 'r'
	msgDigest   byte = 'd'
)

// delegate receives memberlist's data callbacks.
type delegate Cluster

// NodeMeta implements memberlist.Delegate; nodes publish no metadata.
func (d *delegate) NodeMeta(limit int) []byte { return nil }

// GetBroadcasts implements memberlist.Delegate; deltas travel on reliable
// sends, not on gossip piggybacks.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// NotifyMsg implements memberlist.Delegate: it merges replicas another node
// sent.
func (d *delegate) NotifyMsg(b []byte) {
	c := (*Cluster)(d)
	if len(b) == 0 || b[0] != msgReplicas {
		c.log.Warn("drop cluster message", "err", "unknown message kind")
		return
	}
	var msg clusterv1.Replicas
	if err := proto.Unmarshal(b[1:], &msg); err != nil {
		c.log.Warn("drop cluster message", "err", err)
		return
	}
	for _, r := range msg.GetEntries() {
		if err := c.cfg.Store.Merge(r.GetKey(), r.GetData()); err != nil {
			c.log.Warn("merge replica", "key", r.GetKey(), "from", msg.GetFrom(), "err", err)
		}
	}
}

// LocalState implements memberlist.Delegate: it returns a digest of every
// replica this node holds.
func (d *delegate) LocalState(join bool) []byte {
	c := (*Cluster)(d)
	prints := c.cfg.Store.Fingerprints()
	msg := &clusterv1.Digest{
		From:         c.cfg.NodeName,
		Keys:         make([]string, 0, len(prints)),
		Fingerprints: make([]uint64, 0, len(prints)),
	}
	for k, f := range prints {
		msg.Keys = append(msg.Keys, k)
		msg.Fingerprints = append(msg.Fingerprints, f)
	}
	b, err := proto.Marshal(msg)
	if err != nil {
		c.log.Error("encode digest", "err", err)
		return nil
	}
	// TODO: a digest of millions of keys outgrows memberlist's push/pull
	// limit; split the key space into ranges and exchange range digests.
	return append([]byte{msgDigest}, b...)
}

// MergeRemoteState implements memberlist.Delegate: given another node's
// digest, it sends that node every replica whose fingerprint differs from
// this node's or that the other node lacks. The other node does the same,
// so both end with the join of their replicas.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := (*Cluster)(d)
	if len(buf) == 0 {
		return
	}
	if buf[0] != msgDigest {
		c.log.Warn("drop remote state", "err", "unknown message kind")
		return
	}
	var msg clusterv1.Digest
	if err := proto.Unmarshal(buf[1:], &msg); err != nil {
		c.log.Warn("drop remote state", "err", err)
		return
	}
	if len(msg.GetKeys()) != len(msg.GetFingerprints()) {
		c.log.Warn("drop remote state", "from", msg.GetFrom(), "err", "keys and fingerprints differ in number")
		return
	}
	if msg.GetFrom() == c.cfg.NodeName {
		return
	}
	theirs := make(map[string]uint64, len(msg.GetKeys()))
	for i, k := range msg.GetKeys() {
		theirs[k] = msg.GetFingerprints()[i]
	}
	var differ []string
	for k, f := range c.cfg.Store.Fingerprints() {
		if g, ok := theirs[k]; !ok || g != f {
			differ = append(differ, k)
		}
	}
	if len(differ) == 0 {
		return
	}
	sort.Strings(differ)
	// Sending may take a while: do not hold memberlist's push/pull handler.
	go c.sendReplicas(msg.GetFrom(), differ)
}

// sendReplicas sends the full replicas of keys to node in chunks.
func (c *Cluster) sendReplicas(node string, keys []string) {
	n := c.node(node)
	if n == nil {
		return
	}
	msg := &clusterv1.Replicas{From: c.cfg.NodeName}
	size := 0
	flush := func() bool {
		if len(msg.Entries) == 0 {
			return true
		}
		err := c.send(n, msg)
		msg.Entries, size = msg.Entries[:0], 0
		if err != nil {
			// The next push/pull tries again.
			c.log.Warn("send replicas for repair", "node", node, "err", err)
			return false
		}
		return true
	}
	for _, k := range keys {
		data, ok := c.cfg.Store.Encode(k)
		if !ok {
			continue
		}
		if size > 0 && size+len(data)+len(k) > c.cfg.ChunkBytes {
			if !flush() {
				return
			}
		}
		msg.Entries = append(msg.Entries, &clusterv1.Replica{Key: k, Data: data})
		size += len(data) + len(k)
	}
	flush()
}

// send encodes msg and sends it reliably to n.
func (c *Cluster) send(n *memberlist.Node, msg *clusterv1.Replicas) error {
	b, err := proto.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode replicas: %w", err)
	}
	return c.list.SendReliable(n, append([]byte{msgReplicas}, b...))
}

// events receives memberlist's membership callbacks. memberlist calls them
// with its node lock held, so they only signal the membership loop.
type events Cluster

// NotifyJoin implements memberlist.EventDelegate.
func (e *events) NotifyJoin(n *memberlist.Node) { (*Cluster)(e).membershipChanged() }

// NotifyLeave implements memberlist.EventDelegate.
func (e *events) NotifyLeave(n *memberlist.Node) { (*Cluster)(e).membershipChanged() }

// NotifyUpdate implements memberlist.EventDelegate.
func (e *events) NotifyUpdate(n *memberlist.Node) { (*Cluster)(e).membershipChanged() }

func (c *Cluster) membershipChanged() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// membershipLoop publishes membership after each change.
func (c *Cluster) membershipLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.changed:
			c.publishMembers()
		}
	}
}

// peer sends deltas to one other member, in order, batching what queued up
// while the previous send was under way.
type peer struct {
	c     *Cluster
	name  string
	queue chan *clusterv1.Replica
	quit  chan struct{}
	idle  chan struct{}
}

func newPeer(c *Cluster, n *memberlist.Node) *peer {
	p := &peer{
		c:     c,
		name:  n.Name,
		queue: make(chan *clusterv1.Replica, c.cfg.QueueLength),
		quit:  make(chan struct{}),
		idle:  make(chan struct{}, 1),
	}
	go p.run()
	return p
}

func (p *peer) enqueue(key string, data []byte) {
	select {
	case p.queue <- &clusterv1.Replica{Key: key, Data: data}:
	default:
		// The repair path sends the whole replica later.
		p.c.log.Warn("drop delta for slow member", "node", p.name, "key", key)
	}
}

func (p *peer) run() {
	for {
		var first *clusterv1.Replica
		select {
		case <-p.quit:
			return
		case first = <-p.queue:
		}
		msg := &clusterv1.Replicas{From: p.c.cfg.NodeName, Entries: []*clusterv1.Replica{first}}
		size := len(first.Data)
	batch:
		for size < p.c.cfg.ChunkBytes {
			select {
			case r := <-p.queue:
				msg.Entries = append(msg.Entries, r)
				size += len(r.Data)
			default:
				break batch
			}
		}
		p.sendWithRetry(msg)
		if len(p.queue) == 0 {
			select {
			case p.idle <- struct{}{}:
			default:
			}
		}
	}
}

// sendWithRetry tries a few times, then leaves the rest to the repair path.
func (p *peer) sendWithRetry(msg *clusterv1.Replicas) {
	delay := 50 * time.Millisecond
	for attempt := 0; attempt < 3; attempt++ {
		n := p.c.node(p.name)
		if n == nil {
			return
		}
		err := p.c.send(n, msg)
		if err == nil {
			return
		}
		p.c.log.Debug("send deltas", "node", p.name, "attempt", attempt+1, "err", err)
		select {
		case <-p.quit:
			return
		case <-time.After(delay):
		}
		delay *= 4
	}
}

// flush waits until the queue is empty or ctx is done.
func (p *peer) flush(ctx context.Context) {
	for len(p.queue) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-p.idle:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (p *peer) stop() { close(p.quit) }
