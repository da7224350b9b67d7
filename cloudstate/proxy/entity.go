package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/cloudstate/crdt"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// entity is one active entity: one Crdt.handle stream to the user function,
// owned by one goroutine (run) together with everything about the entity:
// the commands awaiting a reply, the open streamed calls, the model of the
// value the function holds. Callers talk to it only through its channels.
type entity struct {
	es      *entities
	log     *slog.Logger
	svc     *service
	id      string
	key     string
	mapKey  string
	inbox   chan *command
	notify  chan struct{}
	cancels chan struct{}

	// The fields below belong to the entity's goroutine.

	// cancel, toFn, fromFn and fnDone are the handle stream; toFn is nil
	// when no stream was opened, fromFn and fnDone nil once it ended.
	cancel     context.CancelFunc
	toFn       chan *protocol.CrdtStreamIn
	fromFn     chan *protocol.CrdtStreamOut
	fnDone     chan error
	halfClosed bool
	grace      <-chan time.Time
	drainC     <-chan struct{}

	nextID  int64
	pending map[int64]*command
	streams map[int64]*openStream
	// cancelling holds when each unanswered stream_cancelled was sent.
	cancelling map[int64]time.Time
	cancelWait <-chan time.Time
	// model is the value the user function holds, as the proxy believes.
	model   *protocol.CrdtState
	dirty   bool
	deleted bool
	fault   *fault
}

// openStream is a streamed call the client still reads.
type openStream struct {
	call *streamCall
	// fnOpen reports that the user function may still send messages for
	// it, so ending it early must be told with stream_cancelled.
	fnOpen bool
	// ended reports that the call's final outcome was sent.
	ended bool
}

// fault is why an entity stops before its time.
type fault struct {
	// err is what its callers get.
	err error
	// report goes to the function's reportError; empty for none.
	report string
	// cause and kind are logged and counted; kind empty for none.
	cause error
	kind  string
}

func newEntity(es *entities, mapKey string, svc *service, id string) *entity {
	return &entity{
		es:         es,
		log:        es.log.With("service", svc.name, "entity_key", id),
		svc:        svc,
		id:         id,
		key:        svc.persistenceID + "-" + id,
		mapKey:     mapKey,
		inbox:      make(chan *command, es.cfg.EntityQueueSize),
		notify:     make(chan struct{}, 1),
		cancels:    make(chan struct{}, 1),
		drainC:     es.draining,
		pending:    make(map[int64]*command),
		streams:    make(map[int64]*openStream),
		cancelling: make(map[int64]time.Time),
	}
}

// run is the entity's goroutine.
func (e *entity) run() {
	defer e.es.wg.Done()
	e.es.replicas.watch(e.key, e.notify)
	defer e.es.replicas.unwatch(e.key, e.notify)

	state, deleted := e.es.replicas.view(e.key)
	switch {
	case deleted:
		e.deleted = true
	case !e.es.fn.available():
		e.fault = &fault{err: connect.NewError(connect.CodeUnavailable,
			errors.New("user function unavailable"))}
	default:
		e.open(state)
	}
	idle := time.NewTimer(e.es.cfg.PassivationTimeout)
	defer idle.Stop()
	for e.fault == nil {
		select {
		case cmd := <-e.inbox:
			e.command(cmd)
		case <-e.cancels:
			e.clientsLeft()
		case <-e.notify:
			e.dirty = true
		case msg := <-e.fromFn:
			e.receive(msg)
		case err := <-e.fnDone:
			e.streamEnded(err)
		case <-e.grace:
			e.graceExpired()
		case <-e.cancelWait:
			e.cancelsExpired()
		case <-e.drainC:
			e.drain()
		case <-e.es.stopping:
			e.fault = &fault{err: errShuttingDown}
		case <-idle.C:
			if e.passivate() {
				return
			}
		}
		if e.fault == nil {
			e.flush()
		}
		idle.Reset(e.es.cfg.PassivationTimeout)
	}
	e.teardown()
}

// open starts the handle stream and sends init with state.
func (e *entity) open(state *protocol.CrdtState) {
	ctx, cancel := context.WithCancel(e.es.ctx)
	stream := e.es.fn.crdt.Handle(ctx)
	e.cancel = cancel
	e.toFn = make(chan *protocol.CrdtStreamIn, 2*e.es.cfg.EntityQueueSize+16)
	e.fromFn = make(chan *protocol.CrdtStreamOut)
	e.fnDone = make(chan error, 1)
	go sendLoop(stream, e.toFn)
	go receiveLoop(ctx, stream, e.fromFn, e.fnDone)
	e.model = state
	e.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Init{Init: &protocol.CrdtInit{
		ServiceName: e.svc.name,
		EntityId:    e.id,
		State:       state,
	}}})
	e.log.Debug("entity started", "has_state", state != nil)
}

// handleStream is the client end of a Crdt.handle stream.
type handleStream = connect.BidiStreamForClient[protocol.CrdtStreamIn, protocol.CrdtStreamOut]

// sendLoop writes queued messages to the stream and half-closes it once the
// queue is closed. After a failed send it discards the rest: the receiving
// side reports why the stream broke.
func sendLoop(stream *handleStream, in <-chan *protocol.CrdtStreamIn) {
	for msg := range in {
		if err := stream.Send(msg); err != nil {
			for range in {
			}
			return
		}
	}
	_ = stream.CloseRequest()
}

// receiveLoop hands each message from the function to the entity, then the
// error that ended the stream.
func receiveLoop(ctx context.Context, stream *handleStream, out chan<- *protocol.CrdtStreamOut,
	done chan<- error) {
	defer func() { _ = stream.CloseResponse() }()
	for {
		msg, err := stream.Receive()
		if err != nil {
			done <- err
			return
		}
		select {
		case out <- msg:
		case <-ctx.Done():
			return
		}
	}
}

// send queues a message for the function without blocking. A full queue
// means the function stopped reading, and stops the entity.
func (e *entity) send(msg *protocol.CrdtStreamIn) {
	if e.toFn == nil || e.halfClosed || e.fault != nil {
		return
	}
	select {
	case e.toFn <- msg:
	default:
		e.fail(connect.CodeUnavailable, "user function is not reading its entity stream",
			"entity_crash")
	}
}

// fail stops the entity with a fault that is logged and reported.
func (e *entity) fail(code connect.Code, msg, kind string) {
	if e.fault != nil {
		return
	}
	e.fault = &fault{
		err:    connect.NewError(code, errors.New(msg)),
		report: fmt.Sprintf("Entity %s of %s terminated: %s", e.id, e.svc.name, msg),
		cause:  errors.New(msg),
		kind:   kind,
	}
}

// violation stops the entity because the function broke the protocol.
func (e *entity) violation(format string, args ...any) {
	if e.fault != nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	e.fault = &fault{
		err: connect.NewError(connect.CodeInternal,
			errors.New("user function sent an invalid message; entity restarted")),
		report: fmt.Sprintf("Protocol error in entity %s of %s: %s", e.id, e.svc.name, msg),
		cause:  errors.New(msg),
		kind:   "protocol",
	}
}

// answer gives a command that never reached the function its only outcome.
func (e *entity) answer(cmd *command, err error) {
	if cmd.reply != nil {
		cmd.reply <- outcome{err: err}
		return
	}
	cmd.call.out <- outcome{err: err, end: true}
}

// command sends a command to the function.
func (e *entity) command(cmd *command) {
	switch {
	case cmd.ctx.Err() != nil:
		e.answer(cmd, connect.NewError(connect.CodeCanceled, cmd.ctx.Err()))
		return
	case e.deleted:
		e.answer(cmd, errEntityDeleted)
		return
	case cmd.call != nil && e.drainC == nil:
		e.answer(cmd, errShuttingDown)
		return
	case len(e.pending) >= e.es.cfg.EntityQueueSize:
		e.answer(cmd, connect.NewError(connect.CodeResourceExhausted,
			errors.New("too many commands in flight for this entity")))
		return
	}
	e.nextID++
	id := e.nextID
	e.pending[id] = cmd
	if cmd.call != nil {
		e.streams[id] = &openStream{call: cmd.call, fnOpen: true}
	}
	e.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Command{
		Command: &protocol.Command{
			EntityId: e.id,
			Id:       id,
			Name:     cmd.method.name,
			Payload:  &anypb.Any{TypeUrl: cmd.method.inputURL, Value: cmd.payload},
			Streamed: cmd.call != nil,
		},
	}})
}

// receive handles one message from the function.
func (e *entity) receive(msg *protocol.CrdtStreamOut) {
	switch m := msg.GetMessage().(type) {
	case *protocol.CrdtStreamOut_Reply:
		e.onReply(m.Reply)
	case *protocol.CrdtStreamOut_StreamedMessage:
		e.onStreamed(m.StreamedMessage)
	case *protocol.CrdtStreamOut_StreamCancelledResponse:
		e.onCancelled(m.StreamCancelledResponse)
	case *protocol.CrdtStreamOut_Failure:
		e.onFailure(m.Failure)
	default:
		e.violation("message of no known kind (CrdtStreamOut with no known field set)")
	}
}

// onReply handles the reply to a command.
func (e *entity) onReply(r *protocol.CrdtReply) {
	id := r.GetCommandId()
	cmd, ok := e.pending[id]
	if !ok {
		e.violation("reply for unknown command id %d", id)
		return
	}
	// On a violation the command stays pending, and teardown fails it.
	if r.GetStreamed() && cmd.call == nil {
		e.violation("reply with streamed=true to command %d, which is not streamed", id)
		return
	}
	o, err := clientOutcome(r.GetClientAction())
	if err != nil {
		e.violation("reply to command %d: %v", id, err)
		return
	}
	o.effects = r.GetSideEffects()
	if sa := r.GetStateAction(); sa != nil {
		if err := e.applyAction(sa, id); err != nil {
			e.violation("reply to command %d: %v", id, err)
			return
		}
	}
	delete(e.pending, id)
	if cmd.reply != nil {
		cmd.reply <- o
		return
	}
	s, open := e.streams[id]
	if !open {
		e.es.runEffects(o.effects)
		return
	}
	if !r.GetStreamed() {
		// A plain reply to a streamed command ends the call only when it
		// changed the state, as the original proxy does.
		s.fnOpen = false
		o.end = r.GetStateAction() != nil
	}
	e.emit(id, s, o)
}

// onStreamed handles a message of a streamed call.
func (e *entity) onStreamed(m *protocol.CrdtStreamedMessage) {
	id := m.GetCommandId()
	s, open := e.streams[id]
	if !open {
		if _, ok := e.cancelling[id]; ok {
			e.es.runEffects(m.GetSideEffects())
			return
		}
		e.log.Warn("streamed message for unknown command dropped", "command_id", id)
		e.es.fn.report(e.es.ctx, fmt.Sprintf(
			"Received streamed message for unknown command id %d of entity %s of %s",
			id, e.id, e.svc.name))
		return
	}
	o, err := clientOutcome(m.GetClientAction())
	if err != nil {
		e.violation("streamed message for command %d: %v", id, err)
		return
	}
	o.effects = m.GetSideEffects()
	if m.GetEndStream() {
		s.fnOpen = false
		o.end = true
	}
	e.emit(id, s, o)
}

// onCancelled handles the answer to stream_cancelled.
func (e *entity) onCancelled(r *protocol.CrdtStreamCancelledResponse) {
	id := r.GetCommandId()
	if _, ok := e.cancelling[id]; !ok {
		e.log.Debug("unexpected stream cancelled response", "command_id", id)
	}
	delete(e.cancelling, id)
	if sa := r.GetStateAction(); sa != nil {
		if err := e.applyAction(sa, 0); err != nil {
			e.violation("stream cancelled response for command %d: %v", id, err)
			return
		}
	}
	e.es.runEffects(r.GetSideEffects())
}

// onFailure handles a failure the function reported.
func (e *entity) onFailure(f *protocol.Failure) {
	id := f.GetCommandId()
	desc := f.GetDescription()
	if desc == "" {
		desc = "user function failed"
	}
	err := connect.NewError(connect.CodeUnknown, errors.New(desc))
	e.es.metrics.errors.WithLabelValues("function_failure").Inc()
	if id == 0 {
		e.fault = &fault{err: err, cause: errors.New(desc), kind: "entity_crash"}
		return
	}
	cmd, pending := e.pending[id]
	if pending {
		delete(e.pending, id)
		if cmd.reply != nil {
			cmd.reply <- outcome{err: err}
			return
		}
	}
	if s, open := e.streams[id]; open {
		s.fnOpen = false
		e.emit(id, s, outcome{err: err})
		return
	}
	if _, ok := e.cancelling[id]; ok || pending {
		return
	}
	e.violation("failure for unknown command id %d", id)
}

// clientOutcome reads a client action.
func clientOutcome(ca *protocol.ClientAction) (outcome, error) {
	var o outcome
	if ca == nil {
		return o, nil
	}
	switch a := ca.GetAction().(type) {
	case nil:
		if len(ca.ProtoReflect().GetUnknown()) > 0 {
			return o, errors.New("client action of an unknown kind")
		}
	case *protocol.ClientAction_Reply:
		o.reply = a.Reply.GetPayload()
		if o.reply == nil {
			o.reply = &anypb.Any{}
		}
	case *protocol.ClientAction_Forward:
		if a.Forward == nil {
			return o, errors.New("empty forward")
		}
		o.forward = a.Forward
	case *protocol.ClientAction_Failure:
		desc := a.Failure.GetDescription()
		if desc == "" {
			desc = "command failed"
		}
		o.err = connect.NewError(connect.CodeFailedPrecondition, errors.New(desc))
	}
	return o, nil
}

// emit hands an outcome to a streamed call. An error or end ends the call,
// telling the function when it still considers the call open. A client
// that does not keep up has its call ended with ResourceExhausted.
func (e *entity) emit(id int64, s *openStream, o outcome) {
	if o.err != nil {
		o.end = true
	}
	if s.ended {
		e.es.runEffects(o.effects)
		return
	}
	if !o.end && o.reply == nil && o.forward == nil && len(o.effects) == 0 {
		return
	}
	if s.call.closed() {
		// The caller left; clientsLeft tells the function.
		e.es.runEffects(o.effects)
		return
	}
	if !o.end && len(s.call.out) >= cap(s.call.out)-1 {
		e.es.runEffects(o.effects)
		o = outcome{end: true, err: connect.NewError(connect.CodeResourceExhausted,
			errors.New("client is not reading its stream fast enough"))}
	}
	s.call.out <- o
	if o.end {
		s.ended = true
		delete(e.streams, id)
		if s.fnOpen {
			e.sendCancel(id)
		}
	}
}

// sendCancel tells the function that the client of streamed command id
// went away.
func (e *entity) sendCancel(id int64) {
	if e.toFn == nil || e.halfClosed {
		return
	}
	e.cancelling[id] = time.Now()
	if e.cancelWait == nil {
		e.cancelWait = time.After(e.es.cfg.CloseGrace)
	}
	e.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_StreamCancelled{
		StreamCancelled: &protocol.StreamCancelled{EntityId: e.id, Id: id},
	}})
}

// cancelsExpired stops waiting for the answers to stream_cancelled that
// are overdue. The JavaScript library answers only when the handler asked to
// hear of cancellation; without this, changes from elsewhere would be held
// back from such a function for as long as the entity lives. An answer that
// still comes is applied as usual.
func (e *entity) cancelsExpired() {
	e.cancelWait = nil
	now := time.Now()
	var oldest time.Time
	for id, sent := range e.cancelling {
		if now.Sub(sent) >= e.es.cfg.CloseGrace {
			e.log.Debug("no answer to stream cancelled", "command_id", id)
			delete(e.cancelling, id)
			continue
		}
		if oldest.IsZero() || sent.Before(oldest) {
			oldest = sent
		}
	}
	if !oldest.IsZero() {
		e.cancelWait = time.After(e.es.cfg.CloseGrace - now.Sub(oldest))
	}
}

// clientsLeft forgets the streamed calls whose clients went away and tells
// the function.
func (e *entity) clientsLeft() {
	for id, s := range e.streams {
		if !s.call.closed() {
			continue
		}
		delete(e.streams, id)
		if s.fnOpen {
			e.sendCancel(id)
		}
	}
}

// applyAction applies a state action of the function to the replica and to
// the model of the function's value. except names the command whose call
// must stay open if the action deletes the entity.
func (e *entity) applyAction(sa *protocol.CrdtStateAction, except int64) error {
	if sa.GetAction() == nil {
		if len(sa.ProtoReflect().GetUnknown()) > 0 {
			return errors.New("state action of an unknown kind")
		}
		return nil
	}
	model, err := crdt.ApplyToState(e.model, sa)
	if err != nil {
		return fmt.Errorf("apply state action: %w", err)
	}
	// The function clears only what it has seen: changes merged from other
	// nodes that it has not been told of yet must survive.
	err = e.es.replicas.apply(e.key, crdt.Observed(e.model, sa), e.notify)
	switch {
	case errors.Is(err, errDeleted):
		// Deleted elsewhere meanwhile: the function hears of it next.
		e.dirty = true
		return nil
	case err != nil:
		return fmt.Errorf("apply state action: %w", err)
	}
	e.model = model
	if _, del := sa.GetAction().(*protocol.CrdtStateAction_Delete); del {
		e.log.Debug("entity deleted by user function")
		e.beginDelete(false, except)
	}
	return nil
}

// beginDelete puts the entity in deleted mode: the function is told when
// the deletion came from elsewhere, its stream half-closed, and every open
// streamed call but except ended with NotFound.
func (e *entity) beginDelete(remote bool, except int64) {
	e.deleted = true
	e.model = nil
	if remote {
		e.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Deleted{
			Deleted: &protocol.CrdtDelete{},
		}})
	}
	e.halfClose()
	for id, s := range e.streams {
		if id == except {
			continue
		}
		s.fnOpen = false
		e.emit(id, s, outcome{err: errEntityDeleted})
	}
}

// halfClose ends the proxy's side of the stream and gives the function a
// grace period to end its own.
func (e *entity) halfClose() {
	if e.toFn == nil || e.halfClosed {
		return
	}
	close(e.toFn)
	e.halfClosed = true
	if e.fnDone != nil {
		e.grace = time.After(e.es.cfg.CloseGrace)
	}
}

// graceExpired cancels a stream the function did not end after the proxy
// half-closed it (the JavaScript library never does).
func (e *entity) graceExpired() {
	e.grace = nil
	if e.fnDone == nil {
		return
	}
	e.log.Debug("user function kept its entity stream open; cancelling it")
	e.closeStream()
	e.failPending(errEntityDeleted)
}

// streamEnded handles the end of the function's side of the stream.
func (e *entity) streamEnded(err error) {
	e.fromFn, e.fnDone = nil, nil
	if e.halfClosed {
		e.grace = nil
		e.closeStream()
		e.failPending(errEntityDeleted)
		return
	}
	switch {
	case err == nil || errors.Is(err, io.EOF):
		e.fail(connect.CodeUnavailable, "user function ended the entity stream", "entity_crash")
	case isUnreachable(err):
		e.es.fn.markDown(e.es.ctx, err)
		e.fault = &fault{
			err: connect.NewError(connect.CodeUnavailable,
				errors.New("user function unavailable")),
			cause: err,
			kind:  "entity_crash",
		}
	default:
		e.fail(connect.CodeUnavailable, "entity stream failed: "+err.Error(), "entity_crash")
	}
}

// failPending fails the commands awaiting a reply.
func (e *entity) failPending(err error) {
	for id, cmd := range e.pending {
		delete(e.pending, id)
		if cmd.reply != nil {
			cmd.reply <- outcome{err: err}
		}
	}
	for id, s := range e.streams {
		s.fnOpen = false
		e.emit(id, s, outcome{err: err})
	}
	clear(e.cancelling)
}

// drain ends every open streamed call, for a proxy shutting down.
func (e *entity) drain() {
	e.drainC = nil
	for id, s := range e.streams {
		e.emit(id, s, outcome{err: errShuttingDown})
	}
}

// flush tells the function of changes made elsewhere, once it has no
// command or cancellation outstanding: the full state when it holds nothing
// or the change cannot be a delta, else the delta from its value.
func (e *entity) flush() {
	if !e.dirty || e.deleted || e.toFn == nil || len(e.pending) > 0 || len(e.cancelling) > 0 {
		return
	}
	e.dirty = false
	cur, deleted := e.es.replicas.view(e.key)
	switch {
	case deleted:
		e.log.Debug("entity deleted elsewhere")
		e.beginDelete(true, 0)
		return
	case cur == nil:
		return
	case e.model == nil:
		e.sendState(cur)
		return
	}
	delta, err := crdt.Diff(e.model, cur)
	switch {
	case errors.Is(err, crdt.ErrIncompatible):
		e.sendState(cur)
	case err != nil:
		e.fail(connect.CodeInternal, "compute delta: "+err.Error(), "entity_crash")
	case delta != nil:
		e.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Changed{Changed: delta}})
		e.model = cur
	}
}

// sendState replaces the function's value.
func (e *entity) sendState(st *protocol.CrdtState) {
	e.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_State{State: st}})
	e.model = st
}

// passivate stops an idle entity and reports whether it did.
func (e *entity) passivate() bool {
	if len(e.pending) > 0 || len(e.cancelling) > 0 || len(e.streams) > 0 || e.grace != nil {
		return false
	}
	if !e.es.remove(e, true) {
		return false
	}
	e.closeStream()
	e.log.Debug("entity passivated")
	return true
}

// closeStream cancels the handle stream.
func (e *entity) closeStream() {
	if e.cancel != nil {
		e.cancel()
	}
	if e.toFn != nil && !e.halfClosed {
		close(e.toFn)
		e.halfClosed = true
	}
	e.fromFn, e.fnDone = nil, nil
}

// teardown stops a failed entity: every caller gets the fault's error.
func (e *entity) teardown() {
	f := e.fault
	e.es.remove(e, false)
	for done := false; !done; {
		select {
		case cmd := <-e.inbox:
			e.answer(cmd, f.err)
		default:
			done = true
		}
	}
	e.failPending(f.err)
	e.closeStream()
	if f.kind != "" {
		e.es.metrics.errors.WithLabelValues(f.kind).Inc()
		e.log.Warn("entity stopped", "err", f.cause)
	}
	if f.report != "" {
		e.es.fn.report(e.es.ctx, f.report)
	}
}
