package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
)

// frontDoor returns the public HTTP handler: the user services once
// discovered, gRPC health and server reflection.
func (p *Proxy) frontDoor() http.Handler {
	mux := http.NewServeMux()
	limits := connect.WithHandlerOptions(
		connect.WithReadMaxBytes(p.cfg.MaxMessageBytes),
		connect.WithSendMaxBytes(p.cfg.MaxMessageBytes),
		connect.WithCompressMinBytes(compressMinBytes),
	)
	mux.Handle(grpchealth.NewHandler(&healthChecker{p: p}, limits))
	reflector := grpcreflect.NewReflector(
		grpcreflect.NamerFunc(func() []string {
			if cat := p.catalog.Load(); cat != nil {
				return cat.serviceNames()
			}
			return nil
		}),
		grpcreflect.WithDescriptorResolver(&descriptorResolver{p: p}),
		grpcreflect.WithExtensionResolver(&extensionResolver{p: p}),
	)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, limits))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, limits))
	notReady := connect.NewErrorWriter()
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := p.services.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		err := connect.NewError(connect.CodeUnavailable,
			errors.New("proxy not ready: user function not discovered yet"))
		if notReady.IsSupported(r) {
			_ = notReady.Write(w, r, err)
			return
		}
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	}))
	return mux
}

// serviceHandler serves every method of the discovered services.
//
// TODO: google.api.http transcoding rules are not served (Connect JSON
// covers plain HTTP clients), nor is gRPC-Web's base64 text mode, which
// connect-go does not implement.
func (p *Proxy) serviceHandler(cat *catalog) http.Handler {
	mux := http.NewServeMux()
	base := []connect.HandlerOption{
		connect.WithReadMaxBytes(p.cfg.MaxMessageBytes),
		connect.WithSendMaxBytes(p.cfg.MaxMessageBytes),
		connect.WithCompressMinBytes(compressMinBytes),
		connect.WithCodec(&jsonCodec{name: "json", types: cat.types}),
		connect.WithCodec(&jsonCodec{name: "json; charset=utf-8", types: cat.types}),
		connect.WithRequestInitializer(initRequest),
		connect.WithInterceptors(&metricsInterceptor{m: p.metrics}),
	}
	for _, svc := range cat.services {
		for _, m := range svc.methods {
			opts := append([]connect.HandlerOption{connect.WithSchema(m.desc)}, base...)
			if idempotency(m.desc) == descriptorpb.MethodOptions_NO_SIDE_EFFECTS {
				opts = append(opts, connect.WithIdempotency(connect.IdempotencyNoSideEffects))
			}
			if m.streamed {
				mux.Handle(m.path, connect.NewServerStreamHandler(m.path, p.streamHandler(m), opts...))
				continue
			}
			mux.Handle(m.path, connect.NewUnaryHandler(m.path, p.unaryHandler(m), opts...))
		}
	}
	return mux
}

// idempotency returns a method's idempotency level.
func idempotency(md protoreflect.MethodDescriptor) descriptorpb.MethodOptions_IdempotencyLevel {
	if opts, ok := md.Options().(*descriptorpb.MethodOptions); ok && opts != nil {
		return opts.GetIdempotencyLevel()
	}
	return descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN
}

// initRequest builds an empty request message of the method's input type.
func initRequest(spec connect.Spec, msg any) error {
	dm, ok := msg.(*dynamicpb.Message)
	if !ok {
		return fmt.Errorf("request of type %T, want *dynamicpb.Message", msg)
	}
	md, ok := spec.Schema.(protoreflect.MethodDescriptor)
	if !ok {
		return fmt.Errorf("schema of type %T, want a method descriptor", spec.Schema)
	}
	*dm = *dynamicpb.NewMessage(md.Input())
	return nil
}

// request extracts the entity id of a request and encodes it.
func request(m *method, msg *dynamicpb.Message) (string, []byte, error) {
	id, err := m.entityID(msg)
	if err != nil {
		return "", nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	payload, err := proto.Marshal(msg)
	if err != nil {
		return "", nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("encode request: %w", err))
	}
	return id, payload, nil
}

// unaryHandler serves a unary method.
func (p *Proxy) unaryHandler(m *method) func(context.Context,
	*connect.Request[dynamicpb.Message]) (*connect.Response[dynamicpb.Message], error) {
	return func(ctx context.Context, req *connect.Request[dynamicpb.Message]) (
		*connect.Response[dynamicpb.Message], error) {
		id, payload, err := request(m, req.Msg)
		if err != nil {
			return nil, err
		}
		reply, err := p.call(ctx, m, id, payload, 0)
		if err != nil {
			return nil, err
		}
		out, err := p.decodeReply(m, reply)
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(out), nil
	}
}

// streamHandler serves a server-streaming method: the call stays open until
// the function ends it, the client leaves or the entity stops.
func (p *Proxy) streamHandler(m *method) func(context.Context,
	*connect.Request[dynamicpb.Message], *connect.ServerStream[dynamicpb.Message]) error {
	return func(ctx context.Context, req *connect.Request[dynamicpb.Message],
		stream *connect.ServerStream[dynamicpb.Message]) error {
		id, payload, err := request(m, req.Msg)
		if err != nil {
			return err
		}
		select {
		case p.streamSlots <- struct{}{}:
			defer func() { <-p.streamSlots }()
		default:
			return connect.NewError(connect.CodeResourceExhausted,
				errors.New("too many open streams"))
		}
		p.metrics.streams.Inc()
		defer p.metrics.streams.Dec()
		call := newStreamCall(p.cfg.EntityQueueSize)
		defer call.close()
		cmd := &command{method: m, entityID: id, payload: payload, ctx: ctx, call: call}
		if err := p.ents.submit(cmd); err != nil {
			return err
		}
		for {
			select {
			case o := <-call.out:
				p.sideEffects(ctx, o.effects, 1)
				if o.err != nil {
					return o.err
				}
				reply := o.reply
				if o.forward != nil {
					if reply, err = p.forward(ctx, o.forward, 1); err != nil {
						return err
					}
				}
				if reply != nil {
					out, err := p.decodeReply(m, reply)
					if err != nil {
						return err
					}
					if err := stream.Send(out); err != nil {
						return err
					}
				}
				if o.end {
					return nil
				}
			case <-ctx.Done():
				return contextError(ctx.Err())
			}
		}
	}
}

// decodeReply decodes a reply payload as the method's output. A payload of
// another type is reported to the function, once per method, and decoded
// all the same, as the original proxy does.
func (p *Proxy) decodeReply(m *method, reply *anypb.Any) (*dynamicpb.Message, error) {
	out := dynamicpb.NewMessage(m.desc.Output())
	if url := reply.GetTypeUrl(); url != "" && url != m.outputURL {
		if _, warned := p.typeWarned.LoadOrStore(m.path, true); !warned {
			msg := fmt.Sprintf("Warning: reply to %s/%s has type %q, want %q",
				m.svc.name, m.name, url, m.outputURL)
			p.log.Warn("user function reply of unexpected type", "method", m.path,
				"type_url", url)
			p.fn.report(p.baseCtx, msg)
		}
	}
	if err := proto.Unmarshal(reply.GetValue(), out); err != nil {
		p.log.Warn("user function reply does not decode", "method", m.path, "err", err)
		return nil, connect.NewError(connect.CodeInternal,
			fmt.Errorf("user function reply does not decode as %s", m.desc.Output().FullName()))
	}
	return out, nil
}

// jsonCodec is connect's protojson codec with a resolver for the
// discovered types, so that Any fields of user messages encode as JSON.
type jsonCodec struct {
	name  string
	types *dynamicpb.Types
}

func (c *jsonCodec) Name() string { return c.name }

func (c *jsonCodec) Marshal(v any) ([]byte, error) {
	msg, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal %T: not a protobuf message", v)
	}
	return protojson.MarshalOptions{Resolver: c.types}.Marshal(msg)
}

func (c *jsonCodec) Unmarshal(b []byte, v any) error {
	msg, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal into %T: not a protobuf message", v)
	}
	if len(b) == 0 {
		return errors.New("empty body is not a JSON object")
	}
	opts := protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: c.types}
	if err := opts.Unmarshal(b, msg); err != nil {
		return fmt.Errorf("unmarshal JSON: %w", err)
	}
	return nil
}

// MarshalStable encodes compactly, for Connect GET requests.
func (c *jsonCodec) MarshalStable(v any) ([]byte, error) {
	b, err := c.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func (c *jsonCodec) IsBinary() bool { return false }

// healthChecker answers grpc.health.v1: SERVING once the function is
// discovered and reachable, for the whole server or one user service.
type healthChecker struct {
	p *Proxy
}

func (h *healthChecker) Check(_ context.Context, req *grpchealth.CheckRequest) (
	*grpchealth.CheckResponse, error) {
	if req.Service != "" {
		cat := h.p.catalog.Load()
		if cat == nil || cat.byName[req.Service] == nil {
			return nil, connect.NewError(connect.CodeNotFound,
				fmt.Errorf("unknown service %s", req.Service))
		}
	}
	if h.p.ready() {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
}

// descriptorResolver finds descriptors among the discovered files, then
// among those compiled into the proxy (health and reflection themselves).
type descriptorResolver struct {
	p *Proxy
}

func (r *descriptorResolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if cat := r.p.catalog.Load(); cat != nil {
		if fd, err := cat.files.FindFileByPath(path); err == nil {
			return fd, nil
		}
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (r *descriptorResolver) FindDescriptorByName(name protoreflect.FullName) (
	protoreflect.Descriptor, error) {
	if cat := r.p.catalog.Load(); cat != nil {
		if d, err := cat.files.FindDescriptorByName(name); err == nil {
			return d, nil
		}
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}

// extensionResolver finds the extensions declared in the discovered files.
type extensionResolver struct {
	p *Proxy
}

func (r *extensionResolver) FindExtensionByName(field protoreflect.FullName) (
	protoreflect.ExtensionType, error) {
	if cat := r.p.catalog.Load(); cat != nil {
		return cat.types.FindExtensionByName(field)
	}
	return nil, protoregistry.NotFound
}

func (r *extensionResolver) FindExtensionByNumber(message protoreflect.FullName,
	field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	if cat := r.p.catalog.Load(); cat != nil {
		return cat.types.FindExtensionByNumber(message, field)
	}
	return nil, protoregistry.NotFound
}

func (r *extensionResolver) RangeExtensionsByMessage(message protoreflect.FullName,
	f func(protoreflect.ExtensionType) bool) {
	cat := r.p.catalog.Load()
	if cat == nil {
		return
	}
	for _, xt := range cat.extensions[message] {
		if !f(xt) {
			return
		}
	}
}

// metricsInterceptor counts requests and measures their latency.
type metricsInterceptor struct {
	m *metrics
}

func (i *metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		i.m.observe(req.Spec().Procedure, err, time.Since(start))
		return res, err
	}
}

func (i *metricsInterceptor) WrapStreamingClient(
	next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *metricsInterceptor) WrapStreamingHandler(
	next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		i.m.observe(conn.Spec().Procedure, err, time.Since(start))
		return err
	}
}

// compressMinBytes is the smallest message worth compressing: gzip costs
// more CPU than it saves on the small messages of this API.
const compressMinBytes = 1024
