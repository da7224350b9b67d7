package function

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/cloudstate/value"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// EntityContext is what every handler and callback learns about its entity:
// *CommandContext, *CancelContext and *ChangeContext implement it. A context
// is valid only until its handler or callback returns.
type EntityContext interface {
	// EntityID returns the id of the entity, the joined entity key fields of
	// the request.
	EntityID() string
	// State returns the entity's value, or nil if it has none.
	State() CRDT
	// Context returns the context of the entity's stream from the proxy; it
	// is done when the stream ends.
	Context() context.Context

	txn() *txn
}

// WriteConsistency is how many nodes must hold a change before the proxy
// answers the client.
type WriteConsistency int32

// The write consistencies, as in the protocol.
const (
	// WriteLocal answers once the change is made on the proxy's own node.
	WriteLocal WriteConsistency = WriteConsistency(protocol.CrdtWriteConsistency_LOCAL)
	// WriteMajority answers once a majority of the nodes hold the change.
	WriteMajority WriteConsistency = WriteConsistency(protocol.CrdtWriteConsistency_MAJORITY)
	// WriteAll answers once every node holds the change.
	WriteAll WriteConsistency = WriteConsistency(protocol.CrdtWriteConsistency_ALL)
)

// ErrContextDone reports the use of a context after its handler or callback
// returned.
var ErrContextDone = errors.New("context used after its handler returned")

// StateAs returns the entity's value as a T, e.g. StateAs[*Vote](ctx). It
// fails if the entity has no value or one of another type.
func StateAs[T CRDT](ctx EntityContext) (T, error) {
	var zero T
	v := ctx.State()
	if v == nil {
		return zero, fmt.Errorf("entity %q has no value", ctx.EntityID())
	}
	t, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("entity %q holds a %T, not a %T", ctx.EntityID(), v, zero)
	}
	return t, nil
}

// Local is a value kept per entity instance beside its CRDT: one per
// entity stream from the proxy, on this node only, never replicated and
// never undone when a command fails. It suits bookkeeping such as the number
// of open calls on this node. Create one per use with NewLocal, typically as
// a package variable.
type Local[T any] struct {
	init func(entityID string) T
}

// NewLocal returns a Local whose value, for each entity instance, starts as
// init's result.
func NewLocal[T any](init func(entityID string) T) *Local[T] {
	return &Local[T]{init: init}
}

// Get returns the value for the entity of ctx, creating it on first use.
func (l *Local[T]) Get(ctx EntityContext) T {
	e := ctx.txn().e
	if v, ok := e.locals[l]; ok {
		return v.(T)
	}
	v := l.init(e.id)
	e.locals[l] = v
	return v
}

// Set replaces the value for the entity of ctx.
func (l *Local[T]) Set(ctx EntityContext, v T) { ctx.txn().e.locals[l] = v }

// txn is one run of a handler or callback: what it changed, and how to
// undo it.
type txn struct {
	e *entityStream
	// prev and prevDeleted are the entity's value and deletion at the start.
	prev        CRDT
	prevDeleted bool
	// snap is a copy of prev taken just before its first change, or nil.
	snap CRDT
	// outboxMark is the length of the entity's outbox at the start.
	outboxMark int
	// ended lists the calls ended during the run.
	ended []*streamCall

	sideEffects []*protocol.SideEffect
	consistency WriteConsistency
	deleted     bool
	done        bool
}

// setState implements SetState of the contexts that may change the value.
func (t *txn) setState(v CRDT) error {
	e := t.e
	switch {
	case t.done:
		return ErrContextDone
	case v == nil:
		return errors.New("set state: nil value")
	case e.deleted || t.deleted:
		return errors.New("set state: the entity is deleted")
	case e.value != nil:
		return errors.New("set state: the entity already has a value")
	case v.base().onWrite != nil:
		return errors.New("set state: the value is held by a map")
	}
	e.setValue(v)
	return nil
}

// sideEffect implements SideEffect of the contexts.
func (t *txn) sideEffect(service, command string, payload proto.Message, sync bool) error {
	if t.done {
		return ErrContextDone
	}
	a, err := commandPayload(service, command, payload)
	if err != nil {
		return fmt.Errorf("side effect: %w", err)
	}
	t.sideEffects = append(t.sideEffects, &protocol.SideEffect{
		ServiceName: service,
		CommandName: command,
		Payload:     a,
		Synchronous: sync,
	})
	return nil
}

// commandPayload checks that service has the method command, taking
// payload's type, and encodes payload.
func commandPayload(service, command string, payload proto.Message) (*anypb.Any, error) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return nil, fmt.Errorf("service %q: %w", service, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%q is not a service", service)
	}
	md := sd.Methods().ByName(protoreflect.Name(command))
	if md == nil {
		return nil, fmt.Errorf("service %s has no method %q", service, command)
	}
	if payload == nil || !payload.ProtoReflect().IsValid() {
		return nil, errors.New("nil payload")
	}
	if got := payload.ProtoReflect().Descriptor().FullName(); got != md.Input().FullName() {
		return nil, fmt.Errorf("%s.%s takes %s, not %s", service, command, md.Input().FullName(), got)
	}
	return value.EncodeMessage(payload)
}

// CommandContext is the context of a command handler. It gives the entity's
// value, which the handler may change or replace, and the actions a command
// may take besides its reply.
type CommandContext struct {
	t       *txn
	cmd     *protocol.Command
	forward *protocol.Forward
	// misuse records a mistake that fails the command once the handler
	// returns.
	misuse error
}

var _ EntityContext = (*CommandContext)(nil)

func (c *CommandContext) txn() *txn { return c.t }

// EntityID returns the id of the entity.
func (c *CommandContext) EntityID() string { return c.t.e.id }

// State returns the entity's value, or nil if it has none: the entity's
// Default gives new entities a value.
func (c *CommandContext) State() CRDT { return c.t.e.value }

// Context returns the context of the entity's stream.
func (c *CommandContext) Context() context.Context { return c.t.e.ctx }

// CommandID returns the proxy's id of the command.
func (c *CommandContext) CommandID() int64 { return c.cmd.GetId() }

// CommandName returns the name of the method called, e.g. "Add".
func (c *CommandContext) CommandName() string { return c.cmd.GetName() }

// Streamed reports whether the client called a streaming method and waits
// for a stream of responses.
func (c *CommandContext) Streamed() bool { return c.cmd.GetStreamed() }

// SetState makes v the value of an entity that has none. Changes made to v,
// before or after, are sent to the proxy with the reply.
func (c *CommandContext) SetState(v CRDT) error { return c.t.setState(v) }

// Delete deletes the entity once the command succeeds. The proxy deletes its
// value on every node, and the entity id cannot be used again. Open streamed
// calls of the entity are ended.
func (c *CommandContext) Delete() { c.t.deleted = true }

// SetWriteConsistency sets how many nodes must hold the command's change
// before the client gets the reply. The default is WriteLocal.
func (c *CommandContext) SetWriteConsistency(wc WriteConsistency) { c.t.consistency = wc }

// SideEffect asks the proxy to call command of service, an entity service of
// this user function, with payload once the command succeeds. A synchronous
// side effect completes before the client gets the reply; the replies of
// side effects are dropped.
func (c *CommandContext) SideEffect(
	service, command string, payload proto.Message, synchronous bool,
) error {
	return c.t.sideEffect(service, command, payload, synchronous)
}

// Forward makes the reply to the client come from command of service, an
// entity service of this user function, called with payload. The handler
// must then return no response. A streamed command cannot be forwarded.
func (c *CommandContext) Forward(service, command string, payload proto.Message) error {
	if c.t.done {
		return ErrContextDone
	}
	if c.Streamed() {
		return errors.New("forward: a streamed command cannot be forwarded")
	}
	a, err := commandPayload(service, command, payload)
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	c.forward = &protocol.Forward{ServiceName: service, CommandName: command, Payload: a}
	return nil
}

// Fail returns an error that fails the command with the formatted
// description, for the handler to return. Any error a handler returns fails
// the command the same way, with the error's text as the description, and
// undoes the command's changes; Fail reads well at the call site.
func (c *CommandContext) Fail(format string, args ...any) error {
	return fmt.Errorf(format, args...)
}

// CancelContext is the context of a Stream.OnCancel callback. The callback
// may change the entity's value; the change is sent with the proxy's answer
// to the cancellation.
type CancelContext struct {
	t    *txn
	call *streamCall
}

var _ EntityContext = (*CancelContext)(nil)

func (c *CancelContext) txn() *txn { return c.t }

// EntityID returns the id of the entity.
func (c *CancelContext) EntityID() string { return c.t.e.id }

// State returns the entity's value, or nil if it has none.
func (c *CancelContext) State() CRDT { return c.t.e.value }

// Context returns the context of the entity's stream.
func (c *CancelContext) Context() context.Context { return c.t.e.ctx }

// CommandID returns the id of the cancelled command.
func (c *CancelContext) CommandID() int64 { return c.call.id }

// SetState makes v the value of an entity that has none.
func (c *CancelContext) SetState(v CRDT) error { return c.t.setState(v) }

// Delete deletes the entity once the callback succeeds.
func (c *CancelContext) Delete() { c.t.deleted = true }

// SetWriteConsistency sets how many nodes must hold the callback's change.
func (c *CancelContext) SetWriteConsistency(wc WriteConsistency) { c.t.consistency = wc }

// SideEffect asks the proxy to call command of service with payload once
// the callback succeeds.
func (c *CancelContext) SideEffect(
	service, command string, payload proto.Message, synchronous bool,
) error {
	return c.t.sideEffect(service, command, payload, synchronous)
}

// ChangeContext is the context of a Stream.OnChange callback. The callback
// may read the entity's value but not change it.
type ChangeContext struct {
	t    *txn
	call *streamCall
}

var _ EntityContext = (*ChangeContext)(nil)

func (c *ChangeContext) txn() *txn { return c.t }

// EntityID returns the id of the entity.
func (c *ChangeContext) EntityID() string { return c.t.e.id }

// State returns the entity's value, which the callback must not change.
func (c *ChangeContext) State() CRDT { return c.t.e.value }

// Context returns the context of the entity's stream.
func (c *ChangeContext) Context() context.Context { return c.t.e.ctx }

// CommandID returns the id of the streamed command.
func (c *ChangeContext) CommandID() int64 { return c.call.id }

// SideEffect asks the proxy to call command of service with payload, along
// with the message the callback sends.
func (c *ChangeContext) SideEffect(
	service, command string, payload proto.Message, synchronous bool,
) error {
	return c.t.sideEffect(service, command, payload, synchronous)
}
