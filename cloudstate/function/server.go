package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol/protocolconnect"
)

// EntityType is the entity type of every entity the SDK serves.
const EntityType = "cloudstate.crdt.Crdt"

// Defaults of Config.
const (
	// DefaultMaxMessageBytes is the largest message read or sent, as the
	// Cloudstate proxy allows: large enough for big states.
	DefaultMaxMessageBytes = 12 << 20
	// DefaultMaxConcurrentStreams is the number of entity streams one proxy
	// connection may hold open at once. A proxy with more active entities
	// opens more connections. Go's HTTP/2 server does work per open stream
	// of a connection for each frame it writes, so a connection holding
	// thousands of streams costs more CPU per message than several holding
	// hundreds.
	DefaultMaxConcurrentStreams = 250
)

// compressMinBytes is the smallest message worth compressing: gzip costs
// more CPU than it saves on a loopback or in-pod link for smaller ones.
const compressMinBytes = 1024

// libraryName is reported to the proxy in ServiceInfo.
const libraryName = "github.com/cloudchat/cloudchat/cloudstate/function"

// Config configures a Server.
type Config struct {
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// ServiceName and ServiceVersion describe the user function to the
	// proxy, which logs them.
	ServiceName    string
	ServiceVersion string
	// MaxMessageBytes bounds each message read or sent; 0 means
	// DefaultMaxMessageBytes.
	MaxMessageBytes int
	// MaxConcurrentStreams bounds the open streams of one HTTP/2 connection;
	// 0 means DefaultMaxConcurrentStreams.
	MaxConcurrentStreams int
}

// Server serves user function entities to a Cloudstate proxy: the
// cloudstate.EntityDiscovery and cloudstate.crdt.Crdt services, over gRPC
// on cleartext HTTP/2.
type Server struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler
	// base is the context of every request; Shutdown cancels it to end
	// the long-lived entity streams.
	base   context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// entities, order and httpSrv are guarded by mu.
	entities map[string]*Entity
	order    []*Entity
	httpSrv  *http.Server
	stopped  bool
}

// New returns a server with no entities.
func New(cfg Config) (*Server, error) {
	if cfg.MaxMessageBytes < 0 || cfg.MaxConcurrentStreams < 0 {
		return nil, errors.New("new server: negative limit")
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, entities: map[string]*Entity{}}
	s.base, s.cancel = context.WithCancel(context.Background())
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(cfg.MaxMessageBytes),
		connect.WithSendMaxBytes(cfg.MaxMessageBytes),
		connect.WithCompressMinBytes(compressMinBytes),
	}
	mux := http.NewServeMux()
	mux.Handle(protocolconnect.NewEntityDiscoveryHandler(discovery{s}, opts...))
	mux.Handle(protocolconnect.NewCrdtHandler(crdtHandler{s}, opts...))
	s.handler = mux
	return s, nil
}

// Register adds an entity type. It reports the mistakes made while building
// the entity, a service registered twice, and a service whose descriptors
// are not all in the global registry.
func (s *Server) Register(e *Entity) error {
	if e == nil {
		return errors.New("register: nil entity")
	}
	if err := e.err(); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if _, err := descriptorSet([]protoreflect.ServiceDescriptor{e.service}); err != nil {
		return fmt.Errorf("register %s: %w", e.ServiceName(), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.entities[e.ServiceName()]; dup {
		return fmt.Errorf("register %s: registered twice", e.ServiceName())
	}
	s.entities[e.ServiceName()] = e
	s.order = append(s.order, e)
	return nil
}

// entity returns the entity type of a service, or nil.
func (s *Server) entity(service string) *Entity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entities[service]
}

// Handler returns the HTTP handler of the protocol services, to serve with
// an HTTP server of one's own. It needs HTTP/2 for gRPC.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve accepts connections on ln until Shutdown, serving HTTP/1.1 and
// cleartext HTTP/2. It returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{
		Handler:           s.handler,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: s.cfg.MaxConcurrentStreams,
			// A client sizes the buffer of each request body it streams by the
			// largest frame the server accepts (up to 512 KiB): a small frame
			// keeps every long-lived stream's buffer small.
			MaxReadFrameSize: 16 << 10,
			// Pings find a proxy that went away without closing, so that its
			// entity streams end.
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
		BaseContext: func(net.Listener) context.Context { return s.base },
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.httpSrv != nil {
		s.mu.Unlock()
		return errors.New("serve: already serving")
	}
	if s.base.Err() != nil {
		s.mu.Unlock()
		return errors.New("serve: server shut down")
	}
	s.httpSrv = hs
	s.mu.Unlock()
	s.log.Info("user function serving", "addr", ln.Addr().String())
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// Shutdown stops the server: it stops accepting connections, ends the open
// entity streams (the proxy opens them again on its next command, here or
// on a restarted function), and waits for the handlers to return until ctx
// is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancel()
	s.mu.Lock()
	hs, stopped := s.httpSrv, s.stopped
	s.stopped = true
	s.mu.Unlock()
	if hs == nil || stopped {
		return nil
	}
	if err := hs.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// crdtHandler serves cloudstate.crdt.Crdt.
type crdtHandler struct{ s *Server }

func (h crdtHandler) Handle(ctx context.Context, stream *crdtStream) error {
	return h.s.handle(ctx, stream)
}

// discovery serves cloudstate.EntityDiscovery.
type discovery struct{ s *Server }

func (d discovery) Discover(
	_ context.Context, req *connect.Request[protocol.ProxyInfo],
) (*connect.Response[protocol.EntitySpec], error) {
	s := d.s
	info := req.Msg
	s.log.Info("proxy discovered the user function",
		"proxy_name", info.GetProxyName(),
		"proxy_version", info.GetProxyVersion(),
		"protocol_version", fmt.Sprintf("%d.%d",
			info.GetProtocolMajorVersion(), info.GetProtocolMinorVersion()))
	if !slices.Contains(info.GetSupportedEntityTypes(), EntityType) {
		s.log.Warn("proxy does not list the CRDT entity type",
			"supported_entity_types", info.GetSupportedEntityTypes())
	}
	spec, err := s.spec()
	if err != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	}
	return connect.NewResponse(spec), nil
}

func (d discovery) ReportError(
	_ context.Context, req *connect.Request[protocol.UserFunctionError],
) (*connect.Response[emptypb.Empty], error) {
	msg := req.Msg.GetMessage()
	const maxLogged = 4096
	if len(msg) > maxLogged {
		msg = msg[:maxLogged] + "…"
	}
	d.s.log.Error("proxy reported an error", "message", msg)
	return connect.NewResponse(&emptypb.Empty{}), nil
}

// spec returns the EntitySpec of the registered entities.
func (s *Server) spec() (*protocol.EntitySpec, error) {
	s.mu.Lock()
	entities := slices.Clone(s.order)
	s.mu.Unlock()
	if len(entities) == 0 {
		return nil, errors.New("no entity registered")
	}
	services := make([]protoreflect.ServiceDescriptor, len(entities))
	spec := &protocol.EntitySpec{ServiceInfo: s.serviceInfo()}
	for i, e := range entities {
		services[i] = e.service
		spec.Entities = append(spec.Entities, &protocol.Entity{
			EntityType:    EntityType,
			ServiceName:   e.ServiceName(),
			PersistenceId: e.persistenceID,
		})
	}
	set, err := descriptorSet(services)
	if err != nil {
		return nil, err
	}
	spec.Proto, err = proto.MarshalOptions{Deterministic: true}.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("marshal descriptors: %w", err)
	}
	return spec, nil
}

func (s *Server) serviceInfo() *protocol.ServiceInfo {
	version := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	return &protocol.ServiceInfo{
		ServiceName:           s.cfg.ServiceName,
		ServiceVersion:        s.cfg.ServiceVersion,
		ServiceRuntime:        fmt.Sprintf("%s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH),
		SupportLibraryName:    libraryName,
		SupportLibraryVersion: version,
	}
}

// descriptorSet returns the files declaring services and every file they
// import, directly or not, each after its imports.
func descriptorSet(services []protoreflect.ServiceDescriptor) (*descriptorpb.FileDescriptorSet, error) {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var visit func(fd protoreflect.FileDescriptor) error
	visit = func(fd protoreflect.FileDescriptor) error {
		if seen[fd.Path()] {
			return nil
		}
		seen[fd.Path()] = true
		if fd.IsPlaceholder() {
			return fmt.Errorf("descriptor of %s is not linked into the binary", fd.Path())
		}
		imports := fd.Imports()
		for i := range imports.Len() {
			if err := visit(imports.Get(i).FileDescriptor); err != nil {
				return err
			}
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
		return nil
	}
	for _, sd := range services {
		if err := visit(sd.ParentFile()); err != nil {
			return nil, err
		}
	}
	return set, nil
}
