package proxy

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cloudchat/cloudchat/cloudstate/crdt"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// errDeleted reports an entity whose value was deleted: its key is a
// tombstone for the life of the cluster.
var errDeleted = errors.New("entity deleted")

// Replicas holds this node's replica of the CRDT of every entity, keyed by
// persistence id + "-" + entity id, and is the seam between the proxy and a
// cluster layer that replicates them between nodes.
//
// The proxy changes replicas when a user function reports a state action
// and tells the active entities of every other change. A cluster layer plugs
// in with four things, and needs nothing else from the proxy:
//
//   - Merge and Delete bring in a delta, a full state or a deletion received
//     from another node;
//   - Snapshot reads every replica, for push/pull anti-entropy and for a
//     joining node to catch up;
//   - OnChange registers the hook told of each local change, to broadcast;
//   - SetMembership tells which nodes are alive; every Vote counts only them.
//
// Get reads one replica. Store gives the same seam as opaque bytes, which
// is what a replication layer that knows nothing of CRDTs needs (it has the
// methods of cluster.Store); EncodeChange encodes what OnChange reports for
// it. A single node needs none of these: its membership is itself alone.
//
// Deletions are permanent: a deleted key stays a tombstone, later merges for
// it are ignored and its entity answers every command "entity deleted".
//
// Replicas is safe for concurrent use. Its methods do no I/O and never
// block on the user function.
type Replicas struct {
	node crdt.NodeID
	now  func() int64

	// mu guards the fields below.
	mu       sync.Mutex
	versions uint64
	values   map[string]*replica
	members  crdt.Membership
	watchers map[string]map[chan struct{}]struct{}
	onChange func(Change)
}

// replica is one key's value, or its tombstone.
type replica struct {
	value   crdt.CRDT
	deleted bool
	// version counts the changes to the key, so that an encoding of it can
	// be cached.
	version uint64
}

// Change is one change made on this node by a user function, to send to
// the other nodes.
type Change struct {
	// Key is persistence id + "-" + entity id.
	Key string
	// Delta is the change to merge on the other nodes (crdt.Marshal encodes
	// it); nil when Deleted.
	Delta crdt.CRDT
	// Deleted reports that the key was deleted.
	Deleted bool
	// Consistency is the write consistency the user function asked for.
	Consistency protocol.CrdtWriteConsistency
}

// Replica is one key's replica, as Snapshot returns it.
type Replica struct {
	// Key is persistence id + "-" + entity id.
	Key string
	// Value is a copy of the replica; nil when Deleted.
	Value crdt.CRDT
	// Deleted reports a tombstone.
	Deleted bool
}

// NewReplicas returns an empty set of replicas for node, whose membership is
// node alone.
func NewReplicas(node crdt.NodeID) *Replicas {
	return &Replicas{
		node:     node,
		now:      func() int64 { return time.Now().UnixMilli() },
		values:   make(map[string]*replica),
		members:  crdt.Membership{Self: node, Alive: []crdt.NodeID{node}},
		watchers: make(map[string]map[chan struct{}]struct{}),
	}
}

// Node returns the node these replicas belong to.
func (r *Replicas) Node() crdt.NodeID { return r.node }

// OnChange registers fn to be told of every change a user function makes on
// this node, and replaces any earlier hook; nil removes it. fn is called
// after the change is applied, outside any lock, from the goroutine of the
// entity that changed, so concurrently for different keys and in order for
// one key. fn must not block (queue the change and return) and may keep the
// Change; the proxy does not touch its Delta again.
func (r *Replicas) OnChange(fn func(Change)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onChange = fn
}

// Merge joins a delta or full state received from another node into the
// replica of key and tells the entity of the change. It does not keep c. It
// ignores a deleted key and fails when c's kind differs from the replica's.
func (r *Replicas) Merge(key string, c crdt.CRDT) error {
	if c == nil {
		return errors.New("merge: nil value")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.values[key]
	switch {
	case rep != nil && rep.deleted:
		return nil
	case rep == nil:
		v, err := crdt.New(c.Kind())
		if err != nil {
			return fmt.Errorf("merge %s: %w", key, err)
		}
		if err := v.Merge(c); err != nil {
			return fmt.Errorf("merge %s: %w", key, err)
		}
		r.values[key] = &replica{value: v, version: r.nextVersion()}
	default:
		if rep.value.Kind() != c.Kind() {
			return fmt.Errorf("merge %s: kind %d into kind %d", key, c.Kind(), rep.value.Kind())
		}
		if err := rep.value.Merge(c); err != nil {
			return fmt.Errorf("merge %s: %w", key, err)
		}
		rep.version = r.nextVersion()
	}
	r.notifyLocked(key, nil)
	return nil
}

// Delete makes key a tombstone, as another node reported, and tells the
// entity, which then tells its user function.
func (r *Replicas) Delete(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rep := r.values[key]; rep != nil && rep.deleted {
		return
	}
	r.values[key] = &replica{deleted: true, version: r.nextVersion()}
	r.notifyLocked(key, nil)
}

// Snapshot returns a copy of every replica and tombstone, in key order.
func (r *Replicas) Snapshot() []Replica {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Replica, 0, len(r.values))
	for k, rep := range r.values {
		x := Replica{Key: k, Deleted: rep.deleted}
		if rep.value != nil {
			x.Value = rep.value.Clone()
		}
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b Replica) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// SetMembership records the live nodes and tells every active entity, which
// computes its view again (a Vote's totals may change) and tells its user
// function what changed. A membership without this node in Alive makes every
// Vote count this node out. It keeps no reference to m.Alive.
func (r *Replicas) SetMembership(m crdt.Membership) {
	m.Self = r.node
	m.Alive = slices.Clone(m.Alive)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members = m
	for key := range r.watchers {
		r.notifyLocked(key, nil)
	}
}

// Membership returns the live nodes as last set.
func (r *Replicas) Membership() crdt.Membership {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.members
	m.Alive = slices.Clone(m.Alive)
	return m
}

// Get returns a copy of the replica or tombstone of key, and false when the
// node holds neither.
func (r *Replicas) Get(key string) (Replica, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.values[key]
	if rep == nil {
		return Replica{}, false
	}
	x := Replica{Key: key, Deleted: rep.deleted}
	if rep.value != nil {
		x.Value = rep.value.Clone()
	}
	return x, true
}

// nextVersion returns a new version number; r.mu must be held.
func (r *Replicas) nextVersion() uint64 {
	r.versions++
	return r.versions
}

// watch registers ch to receive a signal, without blocking, whenever the
// replica of key changes other than through the watcher's own apply.
func (r *Replicas) watch(key string, ch chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := r.watchers[key]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		r.watchers[key] = set
	}
	set[ch] = struct{}{}
}

// unwatch removes a watcher registered with watch.
func (r *Replicas) unwatch(key string, ch chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := r.watchers[key]
	delete(set, ch)
	if len(set) == 0 {
		delete(r.watchers, key)
	}
}

// notifyLocked signals the watchers of key other than except.
func (r *Replicas) notifyLocked(key string, except chan struct{}) {
	for ch := range r.watchers[key] {
		if ch == except {
			continue
		}
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// view returns the full state a user function on this node is told of key,
// nil when the node holds no value, and whether key is deleted.
func (r *Replicas) view(key string) (*protocol.CrdtState, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.values[key]
	switch {
	case rep == nil:
		return nil, false
	case rep.deleted:
		return nil, true
	}
	return crdt.View(rep.value, r.members), false
}

// apply applies a state action that a user function reported for key, tells
// the other watchers of key (not self) and calls the change hook. It returns
// errDeleted for a deleted key.
func (r *Replicas) apply(key string, action *protocol.CrdtStateAction, self chan struct{}) error {
	r.mu.Lock()
	rep := r.values[key]
	if rep != nil && rep.deleted {
		r.mu.Unlock()
		return errDeleted
	}
	var cur crdt.CRDT
	if rep != nil {
		cur = rep.value
	}
	applied, err := crdt.Apply(cur, r.node, r.now(), action)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	switch {
	case applied.Deleted:
		r.values[key] = &replica{deleted: true, version: r.nextVersion()}
	case applied.Value != nil:
		r.values[key] = &replica{value: applied.Value, version: r.nextVersion()}
	}
	if applied.Deleted || applied.Delta != nil {
		r.notifyLocked(key, self)
	}
	hook := r.onChange
	r.mu.Unlock()

	// TODO: MAJORITY and ALL write consistency are served as LOCAL: the
	// reply does not wait for other nodes to acknowledge the change, as the
	// change hook has no acknowledgement path yet.

	if hook != nil && (applied.Deleted || applied.Delta != nil) {
		hook(Change{
			Key:         key,
			Delta:       applied.Delta,
			Deleted:     applied.Deleted,
			Consistency: action.GetWriteConsistency(),
		})
	}
	return nil
}
