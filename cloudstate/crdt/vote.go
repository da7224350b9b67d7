package crdt

import (
	"errors"
	"math"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// voteStore is the store of a Vote: per node a counter, odd for a vote for
// and even against, under the dot of the change that set it. A node changes
// its vote by incrementing its counter under a new dot, which replaces its
// earlier dots; only a node's highest dot counts, so merging takes, per
// node, the newest counter.
type voteStore struct {
	dots map[dot]uint64
}

func (s *voteStore) kind() Kind { return KindVote }

func (s *voteStore) set(d dot, c uint64) {
	if s.dots == nil {
		s.dots = make(map[dot]uint64)
	}
	s.dots[d] = c
}

func (s *voteStore) join(j *joining, o store) {
	var od map[dot]uint64
	if t, ok := o.(*voteStore); ok && t != nil {
		od = t.dots
	}
	for d, c := range s.dots {
		if x, ok := od[d]; ok {
			s.dots[d] = max(c, x)
		} else if j.oc.contains(d) {
			delete(s.dots, d)
		}
	}
	for d, c := range od {
		if _, ok := s.dots[d]; !ok && !j.sc.contains(d) {
			s.set(d, c)
		}
	}
}

func (s *voteStore) appendDots(ds []dot) []dot {
	for d := range s.dots {
		ds = append(ds, d)
	}
	return ds
}

func (s *voteStore) empty() bool { return len(s.dots) == 0 }

func (s *voteStore) clone() store {
	out := &voteStore{}
	for d, c := range s.dots {
		out.set(d, c)
	}
	return out
}

// counters returns each node's counter: that of its highest dot.
func (s *voteStore) counters() map[NodeID]uint64 {
	top := make(map[NodeID]dot, len(s.dots))
	for d := range s.dots {
		if d.seq > top[d.node].seq {
			top[d.node] = d
		}
	}
	out := make(map[NodeID]uint64, len(top))
	for n, d := range top {
		out[n] = s.dots[d]
	}
	return out
}

// vote sets the mutation's node's vote.
func (s *voteStore) vote(m *mutation, delta *voteStore, forIt bool) (bool, error) {
	var (
		top dot
		cur uint64
		own []dot
	)
	for d, c := range s.dots {
		if d.node == m.node {
			own = append(own, d)
			if d.seq > top.seq {
				top, cur = d, c
			}
		}
	}
	if (cur%2 == 1) == forIt {
		return false, nil
	}
	if cur == math.MaxUint64 {
		return false, errVoteOverflow
	}
	m.cover(own)
	for _, d := range own {
		delete(s.dots, d)
		delete(delta.dots, d)
	}
	d := m.mint()
	s.set(d, cur+1)
	delta.set(d, cur+1)
	return true, nil
}

// errVoteOverflow reports a vote counter that cannot be incremented.
var errVoteOverflow = errors.New("vote counter overflow")

// view counts the votes of the live members of m.
func (s *voteStore) view(m Membership) *protocol.CrdtState {
	counters := s.counters()
	seen := make(map[NodeID]bool, len(m.Alive))
	st := &protocol.VoteState{}
	for _, n := range m.Alive {
		if seen[n] {
			continue
		}
		seen[n] = true
		st.TotalVoters++
		if counters[n]%2 == 1 {
			st.VotesFor++
			if n == m.Self {
				st.SelfVote = true
			}
		}
	}
	return &protocol.CrdtState{State: &protocol.CrdtState_Vote{Vote: st}}
}

func (s *voteStore) applyState(
	m *mutation, delta store, st *protocol.CrdtState, _ int,
) (bool, error) {
	dv, ok := delta.(*voteStore)
	x := st.GetVote()
	if !ok || StateKind(st) != KindVote {
		return false, errKindMismatch
	}
	return s.vote(m, dv, x.GetSelfVote())
}

func (s *voteStore) applyDelta(
	m *mutation, delta store, d *protocol.CrdtDelta, _ int,
) (bool, error) {
	dv, ok := delta.(*voteStore)
	x := d.GetVote()
	if !ok || DeltaKind(d) != KindVote {
		return false, errKindMismatch
	}
	return s.vote(m, dv, x.GetSelfVote())
}
