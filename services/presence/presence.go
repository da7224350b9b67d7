// Package presence is the presence user function of the chat: it tells who
// is online.
//
// Each user is a CRDT entity keyed by User.name whose value is a Vote with
// one vote per node. A node votes for a user while at least one Connect call
// of that user is open on it; the user is online while any node votes for.
// Monitor streams a user's status: at once, then once on every flip, seen
// from any node.
//
// The number of open Connect calls is kept per entity instance, on this
// node only, beside the replicated Vote: the first call votes for, the last
// to go away votes against.
package presence

import (
	"errors"
	"log/slog"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// Config configures the presence entity.
type Config struct {
	// Logger receives the entity's logs; nil discards them.
	Logger *slog.Logger
}

// connections counts the open Connect calls of each entity instance.
var connections = function.NewLocal(func(string) *int { return new(int) })

type presence struct {
	log *slog.Logger
}

// NewEntity returns the presence entity, to register with a function.Server.
func NewEntity(cfg Config) *function.Entity {
	p := &presence{log: cfg.Logger}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	e := function.NewEntity(presencepbconnect.PresenceName, function.EntityOptions{
		Default: func(string) function.CRDT { return function.NewVote() },
	})
	function.HandleStream(e, "Connect", p.connect)
	function.HandleStream(e, "Monitor", p.monitor)
	return e
}

// errEmptyName is the answer to a request without a user name.
var errEmptyName = errors.New("user name must not be empty")

// vote returns the entity's Vote. A vote for this node without an open
// Connect call here is stale, left by an earlier instance of the entity
// whose calls ended with it, e.g. when the function restarted; it is
// withdrawn.
func vote(ctx *function.CommandContext) (*function.Vote, error) {
	v, err := function.StateAs[*function.Vote](ctx)
	if err != nil {
		return nil, err
	}
	if *connections.Get(ctx) == 0 && v.SelfVote() {
		v.Set(false)
	}
	return v, nil
}

// connect holds the user online for as long as the call stays open.
func (p *presence) connect(
	ctx *function.CommandContext, user *presencepb.User, stream *function.Stream[*presencepb.Empty],
) error {
	if user.GetName() == "" {
		return errEmptyName
	}
	if !stream.Streamed() {
		return ctx.Fail("Connect must be called as a streaming call; it holds the user" +
			" online while the stream stays open")
	}
	v, err := vote(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&presencepb.Empty{}); err != nil {
		return err
	}

	n := connections.Get(ctx)
	*n++
	if *n == 1 {
		v.Set(true)
		p.log.Debug("user online on this node", "user", user.GetName())
	}
	stream.OnCancel(func(cc *function.CancelContext) error {
		*n--
		if *n > 0 {
			return nil
		}
		v, err := function.StateAs[*function.Vote](cc)
		if err != nil {
			return err
		}
		v.Set(false)
		p.log.Debug("user offline on this node", "user", user.GetName())
		return nil
	})
	return nil
}

// monitor sends the user's status at once, then on every flip.
func (p *presence) monitor(
	ctx *function.CommandContext, user *presencepb.User,
	stream *function.Stream[*presencepb.OnlineStatus],
) error {
	if user.GetName() == "" {
		return errEmptyName
	}
	v, err := vote(ctx)
	if err != nil {
		return err
	}
	last := v.AtLeastOne()
	if err := stream.Send(&presencepb.OnlineStatus{Online: last}); err != nil {
		return err
	}
	if !stream.Streamed() {
		return nil
	}

	// Every change of the Vote, local or remote, reaches the callback; only
	// a flip of the status is sent.
	stream.OnChange(func(cc *function.ChangeContext) error {
		v, err := function.StateAs[*function.Vote](cc)
		if err != nil {
			return err
		}
		if now := v.AtLeastOne(); now != last {
			last = now
			return stream.Send(&presencepb.OnlineStatus{Online: now})
		}
		return nil
	})
	return nil
}
