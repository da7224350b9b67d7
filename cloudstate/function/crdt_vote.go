package function

import (
	"fmt"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// Vote holds one boolean vote per node of the cluster. The function sets
// this node's vote; the proxy counts the votes of the live nodes and tells
// the function the totals.
//
// The totals are the proxy's: a new Vote assumes this node is the only
// voter, and the function learns the real totals with the next change the
// proxy reports. Between reports the count follows this node's own votes.
type Vote struct {
	crdtBase
	self        bool
	votesFor    uint32
	totalVoters uint32
	// pending reports a change of this node's vote not yet sent.
	pending bool
}

// NewVote returns a vote in which this node, the only voter, votes against.
func NewVote() *Vote { return &Vote{totalVoters: 1} }

// SelfVote returns this node's vote.
func (v *Vote) SelfVote() bool { return v.self }

// VotesFor returns the number of live nodes voting for.
func (v *Vote) VotesFor() uint32 { return v.votesFor }

// Voters returns the number of live nodes.
func (v *Vote) Voters() uint32 { return v.totalVoters }

// AtLeastOne reports whether at least one node votes for.
func (v *Vote) AtLeastOne() bool { return v.votesFor > 0 }

// Majority reports whether more than half of the nodes vote for.
func (v *Vote) Majority() bool { return uint64(v.votesFor)*2 > uint64(v.totalVoters) }

// All reports whether every node votes for.
func (v *Vote) All() bool { return v.totalVoters > 0 && v.votesFor == v.totalVoters }

// Set sets this node's vote.
func (v *Vote) Set(vote bool) {
	if v.self == vote {
		return
	}
	v.willWrite()
	v.self = vote
	v.pending = true
	if vote {
		v.votesFor++
		if v.votesFor > v.totalVoters {
			v.totalVoters = v.votesFor
		}
	} else if v.votesFor > 0 {
		v.votesFor--
	}
}

func (v *Vote) state() *protocol.CrdtState {
	return &protocol.CrdtState{State: &protocol.CrdtState_Vote{Vote: &protocol.VoteState{
		VotesFor:    v.votesFor,
		TotalVoters: v.totalVoters,
		SelfVote:    v.self,
	}}}
}

// delta reports this node's vote; the proxy ignores the totals in a delta
// from the function, so they are left out.
func (v *Vote) delta() *protocol.CrdtDelta {
	if !v.pending {
		return nil
	}
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{
		Vote: &protocol.VoteDelta{SelfVote: v.self},
	}}
}

func (v *Vote) resetDelta() { v.pending = false }

func (v *Vote) applyState(s *protocol.CrdtState) error {
	st, ok := s.GetState().(*protocol.CrdtState_Vote)
	if !ok {
		return mismatch("state", stateKind(s), v)
	}
	vs := st.Vote
	if vs.GetVotesFor() > vs.GetTotalVoters() {
		return fmt.Errorf("apply state: %d votes for out of %d voters",
			vs.GetVotesFor(), vs.GetTotalVoters())
	}
	v.votesFor, v.totalVoters, v.self = vs.GetVotesFor(), vs.GetTotalVoters(), vs.GetSelfVote()
	return nil
}

// applyDelta takes the totals from the proxy. This node's vote is the
// function's own, so self_vote in a delta is ignored.
func (v *Vote) applyDelta(d *protocol.CrdtDelta) error {
	dt, ok := d.GetDelta().(*protocol.CrdtDelta_Vote)
	if !ok {
		return mismatch("delta", deltaKind(d), v)
	}
	vd := dt.Vote
	if vd.GetVotesFor() < 0 || vd.GetTotalVoters() < 0 || vd.GetVotesFor() > vd.GetTotalVoters() {
		return fmt.Errorf("apply delta: %d votes for out of %d voters",
			vd.GetVotesFor(), vd.GetTotalVoters())
	}
	v.votesFor, v.totalVoters = uint32(vd.GetVotesFor()), uint32(vd.GetTotalVoters())
	return nil
}

func (v *Vote) clone() CRDT {
	return &Vote{self: v.self, votesFor: v.votesFor, totalVoters: v.totalVoters, pending: v.pending}
}

func (v *Vote) restore(from CRDT) {
	f := from.(*Vote)
	v.self, v.votesFor, v.totalVoters, v.pending = f.self, f.votesFor, f.totalVoters, f.pending
}
