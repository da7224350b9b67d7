package function

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/cloudstate/value"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// ErrStreamEnded reports a message sent on a call that has ended, was
// cancelled by its client, or was never streamed.
var ErrStreamEnded = errors.New("stream ended")

// Stream is the response stream of one call of a streaming method, as a
// HandleStream handler sees it.
//
// The first message sent while the handler runs is the reply to the command;
// the others follow it in order. The call stays open after the handler
// returns if the handler subscribed with OnChange or OnCancel, until End is
// called or the client goes away; a call with neither ends when its handler
// returns, since nothing could send on it later.
//
// The methods of a Stream may be called only from the entity's own handlers
// and callbacks, which run one at a time; they are not safe for concurrent
// use from other goroutines.
type Stream[Resp proto.Message] struct {
	call *streamCall
}

// Send sends msg to the client. On a command that is not streamed, only one
// message may be sent, as the reply.
func (s *Stream[Resp]) Send(msg Resp) error { return s.call.send(msg) }

// End completes the call once the current handler or callback succeeds:
// the client's stream ends with status OK and no callback of the call runs
// again.
func (s *Stream[Resp]) End() { s.call.end() }

// Streamed reports whether the command is streamed. A client may call a
// streaming method as a plain request, e.g. through an HTTP gateway; the
// handler then sends one message at most and cannot subscribe.
func (s *Stream[Resp]) Streamed() bool { return s.call.streamed }

// OnChange sets f to run after every change of the entity's value, whether
// made by a command of this node (this one included) or reported by the
// proxy from other nodes, until the call ends. f may read the value and send
// on the stream; it must not change the value. If f returns an error, or
// changes the value, the call fails with the error's text and ends.
//
// OnChange may be called only by the handler of the command.
func (s *Stream[Resp]) OnChange(f func(ctx *ChangeContext) error) {
	if !s.call.subscribable("OnChange") {
		return
	}
	s.call.onChange = f
}

// OnCancel sets f to run when the client cancels the call, e.g. when it goes
// away. f may change the entity's value; the change is sent to the proxy
// with the answer to the cancellation. f does not run after End, nor when
// the entity is deleted or its stream from the proxy ends. If f returns an
// error its changes are undone.
//
// OnCancel may be called only by the handler of the command.
func (s *Stream[Resp]) OnCancel(f func(ctx *CancelContext) error) {
	if !s.call.subscribable("OnCancel") {
		return
	}
	s.call.onCancel = f
}

// streamCall is one call of a streaming method, from its command until it
// ends or is cancelled.
type streamCall struct {
	e        *entityStream
	id       int64
	name     string
	streamed bool
	// handling is true while the command's handler runs.
	handling bool
	// reply is the first message sent by the handler, the reply's payload.
	reply    *anypb.Any
	ended    bool
	onChange func(*ChangeContext) error
	onCancel func(*CancelContext) error
	// ctx is the command's context while the handler runs.
	ctx *CommandContext
}

// subscribable checks that a subscription is made by the command's handler
// of a streamed command, and records the mistake otherwise.
func (c *streamCall) subscribable(what string) bool {
	switch {
	case !c.handling:
		c.e.log.Warn("stream subscription outside the command handler ignored",
			"command", c.name, "command_id", c.id, "subscription", what)
		return false
	case !c.streamed:
		if c.ctx.misuse == nil {
			c.ctx.misuse = fmt.Errorf("%s: command %s is not streamed", what, c.name)
		}
		return false
	}
	return true
}

func (c *streamCall) send(msg proto.Message) error {
	if c.ended {
		return ErrStreamEnded
	}
	a, err := value.EncodeMessage(msg)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	switch {
	case c.handling && c.reply == nil:
		c.reply = a
		return nil
	case !c.streamed:
		return fmt.Errorf("send: command %s is not streamed; it takes one message", c.name)
	}
	c.e.outbox = append(c.e.outbox, &protocol.CrdtStreamedMessage{
		CommandId: c.id,
		ClientAction: &protocol.ClientAction{Action: &protocol.ClientAction_Reply{
			Reply: &protocol.Reply{Payload: a},
		}},
	})
	return nil
}

// end ends the call: the last message queued for it, or a new one, carries
// end_stream. A rollback of the current run revives the call.
func (c *streamCall) end() {
	if c.ended || !c.streamed {
		return
	}
	c.ended = true
	e := c.e
	if e.txn != nil {
		e.txn.ended = append(e.txn.ended, c)
	}
	if n := len(e.outbox); n > 0 && e.outbox[n-1].GetCommandId() == c.id {
		e.outbox[n-1].EndStream = true
		return
	}
	e.outbox = append(e.outbox, &protocol.CrdtStreamedMessage{CommandId: c.id, EndStream: true})
}
