package function

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/cloudstate/value"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// Bounds of the messages read from the proxy and not yet handled on one
// stream. The proxy keeps far fewer in flight; more means a broken peer.
const (
	maxQueued      = 10000
	maxQueuedBytes = 256 << 20
)

// crdtStream is the bidirectional handle stream as the SDK uses it.
type crdtStream = connect.BidiStream[protocol.CrdtStreamIn, protocol.CrdtStreamOut]

// protocolError is a message from the proxy that breaks the protocol. The
// stream is failed and closed.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return e.msg }

func protocolErrorf(format string, args ...any) error {
	return &protocolError{msg: fmt.Sprintf(format, args...)}
}

// inbox queues the messages read from the proxy, so that reading never
// waits for a handler.
type inbox struct {
	mu sync.Mutex
	// queue, err and closed are guarded by mu.
	queue  []*protocol.CrdtStreamIn
	sizes  []int
	bytes  int
	err    error
	closed bool
	// ready holds a token while the queue is not empty or the inbox closed.
	ready chan struct{}
}

func newInbox() *inbox { return &inbox{ready: make(chan struct{}, 1)} }

// push queues msg; it closes the inbox with an error when it is full.
func (b *inbox) push(msg *protocol.CrdtStreamIn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	size := proto.Size(msg)
	if len(b.queue) >= maxQueued || b.bytes+size > maxQueuedBytes {
		b.closed = true
		b.err = protocolErrorf("more than %d messages or %d bytes from the proxy wait to be"+
			" handled", maxQueued, maxQueuedBytes)
		b.signal()
		return false
	}
	b.queue = append(b.queue, msg)
	b.sizes = append(b.sizes, size)
	b.bytes += size
	b.signal()
	return true
}

// close ends the inbox; pop returns err once the queue is empty.
func (b *inbox) close(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed, b.err = true, err
	}
	b.signal()
}

// signal wakes pop; b.mu is held.
func (b *inbox) signal() {
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

// pop returns the next message, waiting for one. After the inbox closed and
// drained, or when ctx is done, it returns the error.
func (b *inbox) pop(ctx context.Context) (*protocol.CrdtStreamIn, error) {
	for {
		b.mu.Lock()
		if len(b.queue) > 0 && (b.err == nil || !isProtocolError(b.err)) {
			msg := b.queue[0]
			b.queue[0] = nil
			b.queue = b.queue[1:]
			b.bytes -= b.sizes[0]
			b.sizes = b.sizes[1:]
			b.mu.Unlock()
			return msg, nil
		}
		if b.closed {
			err := b.err
			b.mu.Unlock()
			return nil, err
		}
		b.mu.Unlock()
		select {
		case <-b.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func isProtocolError(err error) bool {
	var pe *protocolError
	return errors.As(err, &pe)
}

// entityStream is one handle stream: one entity instance. A single
// goroutine owns it and handles the proxy's messages in order.
type entityStream struct {
	srv    *Server
	def    *Entity
	id     string
	ctx    context.Context
	log    *slog.Logger
	stream *crdtStream

	value   CRDT
	deleted bool
	// unreported is true while value is a default the proxy does not know.
	unreported  bool
	lastCommand int64
	// calls holds the open streamed calls by command id.
	calls  map[int64]*streamCall
	locals map[any]any
	// outbox holds the streamed messages of the current run, sent after it.
	outbox []*protocol.CrdtStreamedMessage
	// txn is the current run of a handler or callback, nil between runs.
	txn *txn
}

// handle serves one Crdt.handle stream.
func (s *Server) handle(ctx context.Context, stream *crdtStream) error {
	in := newInbox()
	go func() {
		for {
			msg, err := stream.Receive()
			if err != nil {
				in.close(err)
				return
			}
			if !in.push(msg) {
				return
			}
		}
	}()
	e, err := s.open(ctx, stream, in)
	if err == nil {
		err = e.run(in)
	}
	return s.finish(ctx, stream, err)
}

// finish turns the end of a stream into the handler's result.
func (s *Server) finish(ctx context.Context, stream *crdtStream, err error) error {
	var pe *protocolError
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return nil
	case ctx.Err() != nil, connect.CodeOf(err) == connect.CodeCanceled:
		return nil
	case errors.As(err, &pe):
		s.log.Warn("proxy broke the protocol", "err", err)
		_ = stream.Send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Failure{
			Failure: &protocol.Failure{Description: pe.msg},
		}})
		return connect.NewError(connect.CodeInvalidArgument, pe)
	default:
		s.log.Debug("entity stream ended", "err", err)
		return err
	}
}

// open reads the first message of a stream, an init or a deleted.
func (s *Server) open(ctx context.Context, stream *crdtStream, in *inbox) (*entityStream, error) {
	first, err := in.pop(ctx)
	if err != nil {
		return nil, err
	}
	e := &entityStream{
		srv:    s,
		ctx:    ctx,
		log:    s.log,
		stream: stream,
		calls:  map[int64]*streamCall{},
		locals: map[any]any{},
	}
	switch m := first.GetMessage().(type) {
	case *protocol.CrdtStreamIn_Deleted:
		// The entity was deleted before this stream opened: no init follows,
		// and commands are refused until the proxy closes the stream.
		e.deleted = true
		e.log.Debug("entity stream opened for a deleted entity")
		return e, nil
	case *protocol.CrdtStreamIn_Init:
		init := m.Init
		def := s.entity(init.GetServiceName())
		if def == nil {
			return nil, protocolErrorf("unknown service %q", init.GetServiceName())
		}
		e.def, e.id = def, init.GetEntityId()
		e.log = s.log.With("service", init.GetServiceName(), "entity_key", e.id)
		if init.GetState() != nil {
			v, err := newFromState(init.GetState())
			if err != nil {
				return nil, protocolErrorf("init: %v", err)
			}
			e.setValue(v)
		}
		e.log.Debug("entity stream opened", "state", init.GetState() != nil)
		return e, nil
	default:
		return nil, protocolErrorf("the first message must be init or deleted, got %s",
			messageName(first))
	}
}

// run handles the messages after the first until the stream ends.
func (e *entityStream) run(in *inbox) error {
	for {
		msg, err := in.pop(e.ctx)
		if err != nil {
			return err
		}
		if err := e.dispatch(msg); err != nil {
			return err
		}
	}
}

func (e *entityStream) dispatch(msg *protocol.CrdtStreamIn) error {
	switch m := msg.GetMessage().(type) {
	case *protocol.CrdtStreamIn_Command:
		return e.handleCommand(m.Command)
	case *protocol.CrdtStreamIn_StreamCancelled:
		return e.handleCancel(m.StreamCancelled)
	case *protocol.CrdtStreamIn_State:
		return e.handleState(m.State)
	case *protocol.CrdtStreamIn_Changed:
		return e.handleChanged(m.Changed)
	case *protocol.CrdtStreamIn_Deleted:
		return e.handleDeleted()
	case *protocol.CrdtStreamIn_Init:
		return protocolErrorf("init received twice")
	default:
		return protocolErrorf("empty message from the proxy")
	}
}

// messageName names the case of a message from the proxy.
func messageName(msg *protocol.CrdtStreamIn) string {
	if m := msg.GetMessage(); m != nil {
		return fmt.Sprintf("%T", m)
	}
	return "an empty message"
}

// setValue makes v the entity's value, hooked for snapshots.
func (e *entityStream) setValue(v CRDT) {
	if e.value != nil && e.value != v {
		e.value.base().onWrite = nil
	}
	e.value = v
	e.unreported = false
	if v != nil {
		v.base().onWrite = e.onWrite
	}
}

// onWrite runs before every change to the entity's value: the first change
// in a run snapshots the value, so that the run can be undone.
func (e *entityStream) onWrite() {
	t := e.txn
	if t == nil || t.snap != nil || e.value == nil || e.value != t.prev {
		return
	}
	t.snap = e.value.clone()
}

// materialize gives an entity without a value its default one. It fails if
// the entity's Default panics.
func (e *entityStream) materialize() error {
	if e.value != nil || e.deleted || e.def.newDefault == nil {
		return nil
	}
	var v CRDT
	if err, _ := e.invoke("Default", func() error {
		v = e.def.newDefault(e.id)
		return nil
	}); err != nil {
		return err
	}
	if v == nil {
		return nil
	}
	if v.base().onWrite != nil {
		e.log.Warn("default value is held by a map; ignored")
		return nil
	}
	v.resetDelta()
	e.setValue(v)
	e.unreported = true
	return nil
}

// begin starts a run of a handler or callback.
func (e *entityStream) begin() *txn {
	t := &txn{e: e, prev: e.value, prevDeleted: e.deleted, outboxMark: len(e.outbox)}
	e.txn = t
	return t
}

// rollback undoes a run: the value, the deletion, queued messages and ended
// calls.
func (t *txn) rollback() {
	e := t.e
	t.done = true
	e.txn = nil
	if t.snap != nil {
		t.prev.restore(t.snap)
	}
	if e.value != t.prev {
		e.setValue(t.prev)
	}
	e.deleted = t.prevDeleted
	e.outbox = e.outbox[:t.outboxMark]
	for _, c := range t.ended {
		c.ended = false
	}
}

// commit ends a run that succeeded and returns the state action that tells
// the proxy of its changes, or nil.
func (t *txn) commit() *protocol.CrdtStateAction {
	e := t.e
	t.done = true
	e.txn = nil
	var action *protocol.CrdtStateAction
	switch {
	case t.deleted:
		e.setValue(nil)
		e.deleted = true
		action = &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Delete{
			Delete: &protocol.CrdtDelete{},
		}}
	case e.value != nil:
		d := e.value.delta()
		if d == nil {
			return nil
		}
		e.value.resetDelta()
		e.unreported = false
		action = &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{Update: d}}
	default:
		return nil
	}
	action.WriteConsistency = protocol.CrdtWriteConsistency(t.consistency)
	return action
}

// invoke runs f, turning a panic into panicked.
func (e *entityStream) invoke(what string, f func() error) (err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("handler panicked", "handler", what, "panic", r,
				"stack", string(debug.Stack()))
			err, panicked = fmt.Errorf("panic: %v", r), true
		}
	}()
	return f(), false
}

func (e *entityStream) send(out *protocol.CrdtStreamOut) error {
	if err := e.stream.Send(out); err != nil {
		return fmt.Errorf("send to proxy: %w", err)
	}
	return nil
}

// sendFailure fails a command without a reply.
func (e *entityStream) sendFailure(id int64, desc string) error {
	return e.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Failure{
		Failure: &protocol.Failure{CommandId: id, Description: desc},
	}})
}

// flush sends the queued streamed messages.
func (e *entityStream) flush() error {
	out := e.outbox
	e.outbox = nil
	for _, m := range out {
		err := e.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamedMessage{
			StreamedMessage: m,
		}})
		if err != nil {
			return err
		}
	}
	e.sweep()
	return nil
}

// sweep forgets the calls that ended.
func (e *entityStream) sweep() {
	maps.DeleteFunc(e.calls, func(_ int64, c *streamCall) bool { return c.ended })
}

func (e *entityStream) handleCommand(cmd *protocol.Command) error {
	id := cmd.GetId()
	if id <= e.lastCommand {
		e.log.Warn("command id reused; command ignored", "command_id", id, "last", e.lastCommand)
		return e.sendFailure(0, fmt.Sprintf("command id %d is not greater than the previous id %d",
			id, e.lastCommand))
	}
	e.lastCommand = id
	log := e.log.With("command", cmd.GetName(), "command_id", id)
	switch {
	case e.deleted:
		return e.sendFailure(id, "entity deleted")
	case cmd.GetEntityId() != "" && cmd.GetEntityId() != e.id:
		return e.sendFailure(id, fmt.Sprintf("command for entity %q on the stream of entity %q",
			cmd.GetEntityId(), e.id))
	}
	m := e.def.methods[cmd.GetName()]
	if m == nil {
		if e.def.service.Methods().ByName(protoreflect.Name(cmd.GetName())) == nil {
			return e.sendFailure(id, fmt.Sprintf("unknown command %q of service %s",
				cmd.GetName(), e.def.ServiceName()))
		}
		return e.sendFailure(id, fmt.Sprintf("command %s of service %s has no handler",
			cmd.GetName(), e.def.ServiceName()))
	}
	if cmd.GetStreamed() && m.streamed == nil {
		return e.sendFailure(id, fmt.Sprintf("command %s does not stream responses", cmd.GetName()))
	}
	req := m.input()
	if err := value.DecodeMessage(cmd.GetPayload(), req); err != nil {
		return e.sendFailure(id, fmt.Sprintf("command %s: %v", cmd.GetName(), err))
	}

	if err := e.materialize(); err != nil {
		return e.sendFailure(id, "internal error in the entity's default value")
	}
	t := e.begin()
	ctx := &CommandContext{t: t, cmd: cmd}
	var call *streamCall
	var resp *anypb.Any
	err, panicked := e.invoke(cmd.GetName(), func() error {
		if m.unary != nil {
			r, err := m.unary(ctx, req)
			if err != nil || r == nil || !r.ProtoReflect().IsValid() {
				return err
			}
			resp, err = value.EncodeMessage(r)
			return err
		}
		call = &streamCall{
			e: e, id: id, name: cmd.GetName(), streamed: cmd.GetStreamed(),
			handling: true, ctx: ctx,
		}
		err := m.streamed(ctx, req, call)
		call.handling = false
		resp = call.reply
		return err
	})
	if err == nil {
		err = ctx.misuse
	}
	if err == nil && ctx.forward != nil && resp != nil {
		err = errors.New("the handler both replied and forwarded")
	}
	if panicked {
		t.rollback()
		return e.sendFailure(id, fmt.Sprintf("internal error in the handler of %s", cmd.GetName()))
	}
	if err != nil {
		t.rollback()
		log.Debug("command failed", "err", err)
		return e.send(replyOut(&protocol.CrdtReply{
			CommandId: id,
			ClientAction: &protocol.ClientAction{Action: &protocol.ClientAction_Failure{
				Failure: &protocol.Failure{CommandId: id, Description: err.Error()},
			}},
		}))
	}

	action := t.commit()
	reply := &protocol.CrdtReply{CommandId: id, SideEffects: t.sideEffects, StateAction: action}
	switch {
	case ctx.forward != nil:
		reply.ClientAction = &protocol.ClientAction{Action: &protocol.ClientAction_Forward{
			Forward: ctx.forward,
		}}
	case resp != nil:
		reply.ClientAction = &protocol.ClientAction{Action: &protocol.ClientAction_Reply{
			Reply: &protocol.Reply{Payload: resp},
		}}
	}
	if call != nil && call.streamed {
		reply.Streamed = true
		if call.onChange == nil && call.onCancel == nil {
			call.end()
		}
		if !call.ended {
			e.calls[id] = call
		}
	}
	if err := e.send(replyOut(reply)); err != nil {
		return err
	}
	if err := e.flush(); err != nil {
		return err
	}
	return e.changed(action)
}

func replyOut(r *protocol.CrdtReply) *protocol.CrdtStreamOut {
	return &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{Reply: r}}
}

// changed tells the open calls of a change reported to the proxy.
func (e *entityStream) changed(action *protocol.CrdtStateAction) error {
	switch {
	case action == nil:
		return nil
	case action.GetDelete() != nil:
		return e.endAll()
	default:
		return e.notify()
	}
}

// notify runs the OnChange callbacks of the open calls, in command order.
func (e *entityStream) notify() error {
	ids := slices.Sorted(maps.Keys(e.calls))
	for _, id := range ids {
		c, ok := e.calls[id]
		if !ok || c.ended || c.onChange == nil {
			continue
		}
		t := e.begin()
		err, panicked := e.invoke(c.name+" OnChange", func() error {
			return c.onChange(&ChangeContext{t: t, call: c})
		})
		if err == nil && (t.snap != nil || e.value != t.prev || t.deleted) {
			err = errors.New("the OnChange callback changed the entity's value")
		}
		if err != nil {
			t.rollback()
			desc := err.Error()
			if panicked {
				desc = fmt.Sprintf("internal error in the OnChange callback of %s", c.name)
			}
			e.log.Warn("streamed call failed", "command", c.name, "command_id", id, "err", err)
			c.ended = true
			e.outbox = append(e.outbox, &protocol.CrdtStreamedMessage{
				CommandId: id,
				ClientAction: &protocol.ClientAction{Action: &protocol.ClientAction_Failure{
					Failure: &protocol.Failure{CommandId: id, Description: desc},
				}},
				EndStream: true,
			})
		} else {
			t.done = true
			e.txn = nil
			e.attachSideEffects(t, id)
		}
		if err := e.flush(); err != nil {
			return err
		}
	}
	return nil
}

// attachSideEffects sends the side effects of a callback with the last
// message it queued for its call, or with a message of their own.
func (e *entityStream) attachSideEffects(t *txn, id int64) {
	if len(t.sideEffects) == 0 {
		return
	}
	for i := len(e.outbox) - 1; i >= t.outboxMark; i-- {
		if m := e.outbox[i]; m.GetCommandId() == id {
			m.SideEffects = append(m.SideEffects, t.sideEffects...)
			return
		}
	}
	e.outbox = append(e.outbox, &protocol.CrdtStreamedMessage{
		CommandId: id, SideEffects: t.sideEffects,
	})
}

// endAll ends every open call, after the entity was deleted.
func (e *entityStream) endAll() error {
	for _, id := range slices.Sorted(maps.Keys(e.calls)) {
		e.calls[id].end()
	}
	return e.flush()
}

func (e *entityStream) handleCancel(sc *protocol.StreamCancelled) error {
	id := sc.GetId()
	resp := &protocol.CrdtStreamCancelledResponse{CommandId: id}
	out := func() error {
		return e.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamCancelledResponse{
			StreamCancelledResponse: resp,
		}})
	}
	c, ok := e.calls[id]
	if !ok {
		e.log.Debug("cancel of a call that is not open", "command_id", id)
		return out()
	}
	delete(e.calls, id)
	c.ended = true
	if c.onCancel == nil || e.deleted {
		return out()
	}

	if err := e.materialize(); err != nil {
		return out()
	}
	t := e.begin()
	err, _ := e.invoke(c.name+" OnCancel", func() error {
		return c.onCancel(&CancelContext{t: t, call: c})
	})
	if err != nil {
		t.rollback()
		e.log.Warn("cancel callback failed; its changes are undone",
			"command", c.name, "command_id", id, "err", err)
		return out()
	}
	action := t.commit()
	resp.StateAction = action
	resp.SideEffects = t.sideEffects
	if err := out(); err != nil {
		return err
	}
	if err := e.flush(); err != nil {
		return err
	}
	return e.changed(action)
}

func (e *entityStream) handleState(st *protocol.CrdtState) error {
	if e.deleted {
		e.log.Warn("state for a deleted entity ignored")
		return nil
	}
	if e.value != nil && kindOf(e.value) == stateKind(st) {
		if err := e.value.applyState(st); err != nil {
			return protocolErrorf("%v", err)
		}
		e.unreported = false
	} else {
		v, err := newFromState(st)
		if err != nil {
			return protocolErrorf("%v", err)
		}
		e.setValue(v)
	}
	return e.notify()
}

func (e *entityStream) handleChanged(d *protocol.CrdtDelta) error {
	if e.deleted {
		e.log.Warn("delta for a deleted entity ignored")
		return nil
	}
	if e.value == nil || (e.unreported && kindOf(e.value) != deltaKind(d)) {
		v, err := newForDelta(d)
		if err != nil {
			return protocolErrorf("%v", err)
		}
		e.setValue(v)
	}
	if err := e.value.applyDelta(d); err != nil {
		return protocolErrorf("%v", err)
	}
	e.unreported = false
	return e.notify()
}

func (e *entityStream) handleDeleted() error {
	if e.deleted {
		return nil
	}
	e.log.Debug("entity deleted by the proxy")
	e.setValue(nil)
	e.deleted = true
	return e.endAll()
}
