package function

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// EntityOptions configures an Entity.
type EntityOptions struct {
	// PersistenceID names the entity's data in the proxy; entities with the
	// same persistence id share their values. It defaults to the service's
	// simple name, e.g. "Presence" for cloudstate.samples.chat.presence.Presence.
	PersistenceID string
	// Default returns the value of an entity the proxy has no value for, the
	// first time a command or a cancel callback runs. It is not sent to the
	// proxy until a command changes it. A nil Default, or one that returns
	// nil, leaves the entity without a value until a handler calls SetState.
	Default func(entityID string) CRDT
}

// Entity is a CRDT entity type: a gRPC service whose requests each belong to
// one entity, and the handlers of its methods. Create it with NewEntity, add
// handlers with Handle and HandleStream, then register it with a Server.
// An Entity must not be changed once registered.
type Entity struct {
	service       protoreflect.ServiceDescriptor
	persistenceID string
	newDefault    func(entityID string) CRDT
	methods       map[string]*method
	// errs holds the mistakes found while the entity was built; Register
	// reports them.
	errs []error
}

// method is the handler of one method of an entity's service.
type method struct {
	desc protoreflect.MethodDescriptor
	// input returns a new request message.
	input func() proto.Message
	// unary is set for a method registered with Handle.
	unary func(*CommandContext, proto.Message) (proto.Message, error)
	// streamed is set for a method registered with HandleStream.
	streamed func(*CommandContext, proto.Message, *streamCall) error
}

// NewEntity returns an entity type for the service with the given full name,
// e.g. "cloudstate.samples.chat.presence.Presence", whose descriptor must be
// in the global registry (importing the generated package registers it).
// Problems are reported by Server.Register.
func NewEntity(service string, opts EntityOptions) *Entity {
	e := &Entity{methods: map[string]*method{}, newDefault: opts.Default}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("entity %s: %w", service, err))
		return e
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		e.errs = append(e.errs, fmt.Errorf("entity %s: not a service", service))
		return e
	}
	e.service = sd
	e.persistenceID = opts.PersistenceID
	if e.persistenceID == "" {
		e.persistenceID = string(sd.Name())
	}
	for i := range sd.Methods().Len() {
		if sd.Methods().Get(i).IsStreamingClient() {
			e.errs = append(e.errs, fmt.Errorf("entity %s: method %s streams requests,"+
				" which CRDT entities do not support", service, sd.Methods().Get(i).Name()))
		}
	}
	return e
}

// ServiceName returns the full name of the entity's service, or "" if it
// was not found.
func (e *Entity) ServiceName() string {
	if e.service == nil {
		return ""
	}
	return string(e.service.FullName())
}

// err returns the problems found while building the entity.
func (e *Entity) err() error { return errors.Join(e.errs...) }

// lookup checks that the service has the named method, with the given
// request and response types, and no handler yet.
func (e *Entity) lookup(
	name string, req, resp proto.Message, streaming bool,
) (protoreflect.MethodDescriptor, error) {
	if e.service == nil {
		return nil, errors.New("unknown service")
	}
	if req == nil || resp == nil {
		return nil, errors.New("request and response must be generated message types")
	}
	md := e.service.Methods().ByName(protoreflect.Name(name))
	if md == nil {
		return nil, fmt.Errorf("service %s has no method %s", e.service.FullName(), name)
	}
	if _, dup := e.methods[name]; dup {
		return nil, fmt.Errorf("method %s has two handlers", name)
	}
	if md.IsStreamingServer() != streaming {
		if streaming {
			return nil, fmt.Errorf("method %s does not stream responses: use Handle", name)
		}
		return nil, fmt.Errorf("method %s streams responses: use HandleStream", name)
	}
	if got, want := req.ProtoReflect().Descriptor().FullName(), md.Input().FullName(); got != want {
		return nil, fmt.Errorf("method %s takes %s, the handler %s", name, want, got)
	}
	if got, want := resp.ProtoReflect().Descriptor().FullName(), md.Output().FullName(); got != want {
		return nil, fmt.Errorf("method %s returns %s, the handler %s", name, want, got)
	}
	return md, nil
}

// Handle sets the handler of a method of e that returns one response. Req and
// Resp are the method's generated request and response types, e.g.
// *friendspb.Friend and *friendspb.Empty.
//
// The handler runs alone on its entity: it may read and change the value
// through ctx and need not lock. Its changes are sent to the proxy with the
// reply. If it returns an error, the command fails with the error's text, and
// every change it made is undone. A nil response sends no message to the
// client. A mistake in the registration is reported by Server.Register.
func Handle[Req, Resp proto.Message](
	e *Entity, name string, h func(ctx *CommandContext, req Req) (Resp, error),
) {
	var req Req
	var resp Resp
	md, err := e.lookup(name, req, resp, false)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("handle %s: %w", name, err))
		return
	}
	e.methods[name] = &method{
		desc:  md,
		input: func() proto.Message { return req.ProtoReflect().New().Interface() },
		unary: func(ctx *CommandContext, in proto.Message) (proto.Message, error) {
			return h(ctx, in.(Req))
		},
	}
}

// HandleStream sets the handler of a method of e that streams responses. The
// handler sends through stream, and may keep the call open after it returns
// by subscribing to changes of the value with Stream.OnChange, or to the
// client going away with Stream.OnCancel; see Stream.
//
// As for Handle, the handler runs alone on its entity, its changes are sent
// with the reply, and a returned error fails the command and undoes its
// changes, messages sent included.
func HandleStream[Req, Resp proto.Message](
	e *Entity, name string, h func(ctx *CommandContext, req Req, stream *Stream[Resp]) error,
) {
	var req Req
	var resp Resp
	md, err := e.lookup(name, req, resp, true)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("handle %s: %w", name, err))
		return
	}
	e.methods[name] = &method{
		desc:  md,
		input: func() proto.Message { return req.ProtoReflect().New().Interface() },
		streamed: func(ctx *CommandContext, in proto.Message, call *streamCall) error {
			return h(ctx, in.(Req), &Stream[Resp]{call: call})
		},
	}
}
