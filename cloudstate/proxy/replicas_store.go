package proxy

import (
	"errors"
	"fmt"
	"hash/fnv"
	"sync"

	"github.com/cloudchat/cloudchat/cloudstate/crdt"
)

// The first byte of an encoded replica says what follows.
const (
	// encodedValue is followed by crdt.Marshal's encoding of a replica or
	// delta.
	encodedValue byte = 1
	// encodedTombstone stands alone: the key is deleted.
	encodedTombstone byte = 2
)

// ReplicaStore is Replicas as opaque bytes, for a replication layer that
// moves bytes and knows nothing of CRDTs: it has the methods of
// cluster.Store. An encoded replica is one byte (1: a value, 2: a
// tombstone) followed, for a value, by crdt.Marshal's encoding.
//
// ReplicaStore is safe for concurrent use.
type ReplicaStore struct {
	r *Replicas

	// mu guards cache.
	mu    sync.Mutex
	cache map[string]fingerprint
}

// fingerprint is the fingerprint of one version of a replica.
type fingerprint struct {
	version uint64
	sum     uint64
}

// Store returns r as a store of encoded replicas.
func (r *Replicas) Store() *ReplicaStore {
	return &ReplicaStore{r: r, cache: make(map[string]fingerprint)}
}

// EncodeChange encodes a local change for other nodes, which pass it to
// ReplicaStore.Merge.
func EncodeChange(c Change) ([]byte, error) {
	if c.Deleted {
		return []byte{encodedTombstone}, nil
	}
	return encodeValue(c.Delta)
}

func encodeValue(c crdt.CRDT) ([]byte, error) {
	b, err := crdt.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode replica: %w", err)
	}
	return append([]byte{encodedValue}, b...), nil
}

func encodeReplica(rep Replica) ([]byte, error) {
	if rep.Deleted {
		return []byte{encodedTombstone}, nil
	}
	return encodeValue(rep.Value)
}

// Fingerprints returns a fingerprint of every replica and tombstone; equal
// replicas have equal fingerprints on every node. Replicas unchanged since
// the last call are not encoded again.
func (s *ReplicaStore) Fingerprints() map[string]uint64 {
	type stale struct {
		key     string
		version uint64
		rep     Replica
	}
	out := make(map[string]uint64)
	var todo []stale
	s.mu.Lock()
	s.r.mu.Lock()
	for key, rep := range s.r.values {
		if fp, ok := s.cache[key]; ok && fp.version == rep.version {
			out[key] = fp.sum
			continue
		}
		x := stale{key: key, version: rep.version, rep: Replica{Key: key, Deleted: rep.deleted}}
		if rep.value != nil {
			x.rep.Value = rep.value.Clone()
		}
		todo = append(todo, x)
	}
	s.r.mu.Unlock()
	s.mu.Unlock()

	for _, x := range todo {
		b, err := encodeReplica(x.rep)
		if err != nil {
			// A replica that does not encode cannot be repaired either;
			// leaving it out makes the peer send its own.
			continue
		}
		h := fnv.New64a()
		_, _ = h.Write(b)
		sum := h.Sum64()
		out[x.key] = sum
		s.mu.Lock()
		if cur, ok := s.cache[x.key]; !ok || cur.version < x.version {
			s.cache[x.key] = fingerprint{version: x.version, sum: sum}
		}
		s.mu.Unlock()
	}
	return out
}

// Encode returns the encoded replica or tombstone of key, and false when
// the node holds neither.
func (s *ReplicaStore) Encode(key string) ([]byte, bool) {
	rep, ok := s.r.Get(key)
	if !ok {
		return nil, false
	}
	b, err := encodeReplica(rep)
	if err != nil {
		return nil, false
	}
	return b, true
}

// Merge merges an encoded replica, delta or tombstone of key from another
// node. It does not keep data.
func (s *ReplicaStore) Merge(key string, data []byte) error {
	if len(data) == 0 {
		return errors.New("merge: empty replica")
	}
	switch data[0] {
	case encodedTombstone:
		if len(data) != 1 {
			return errors.New("merge: tombstone with a body")
		}
		s.r.Delete(key)
		return nil
	case encodedValue:
		c, err := crdt.Unmarshal(data[1:])
		if err != nil {
			return fmt.Errorf("merge %s: %w", key, err)
		}
		return s.r.Merge(key, c)
	}
	return fmt.Errorf("merge %s: unknown encoding %d", key, data[0])
}

// SetMembers records the live members, this node included; their names are
// the node ids of the CRDTs.
func (s *ReplicaStore) SetMembers(alive []string) {
	m := crdt.Membership{Alive: make([]crdt.NodeID, len(alive))}
	for i, n := range alive {
		m.Alive[i] = crdt.NodeID(n)
	}
	s.r.SetMembership(m)
}
