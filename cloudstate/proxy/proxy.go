// Package proxy is a Cloudstate proxy for CRDT entities, wire compatible
// with Cloudstate v0.5 user functions.
//
// At start the proxy calls EntityDiscovery.discover on its user function,
// retrying with backoff until the function answers with a valid spec. It
// then serves every method of the discovered services to clients over
// gRPC, gRPC-Web and Connect (JSON and binary), built at run time from the
// discovered descriptors, with gRPC server reflection and health beside
// them, and Prometheus metrics and probes on a separate port.
//
// Each call is routed by the entity key fields of its request to an
// entity: one Crdt.handle stream to the function, owned by one goroutine
// that holds the entity's pending commands, its open streamed calls and a
// model of the value the function holds. The entity applies the function's
// state actions to this node's replica (see Replicas, the seam for a cluster
// layer), tells the function of changes made elsewhere when it has nothing
// outstanding, and passivates when idle. When the function goes away, calls
// in flight fail with Unavailable, and the next command opens the entity
// again with the state the proxy kept.
//
// Error codes the proxy gives clients:
//
//   - InvalidArgument: a request whose entity key is empty, or that does
//     not decode;
//   - ResourceExhausted: a request or reply over the size limit, or a full
//     queue (entity, streams, entities);
//   - FailedPrecondition: the function refused the command
//     (client_action.failure), with its description;
//   - Unknown: the function failed the command (CrdtStreamOut.failure),
//     with its description;
//   - NotFound: the entity was deleted (a deleted entity stays deleted);
//   - Unavailable: the function is not reachable, ended the entity's stream,
//     or the proxy is not ready or shutting down;
//   - Internal: the function broke the protocol; the entity is restarted.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudchat/cloudchat/cloudstate/crdt"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// Defaults for the zero values of Config.
const (
	DefaultHTTPAddr           = "0.0.0.0:9000"
	DefaultMetricsAddr        = "0.0.0.0:9090"
	DefaultFunctionAddr       = "127.0.0.1:8080"
	DefaultPassivationTimeout = 30 * time.Second
	DefaultMaxMessageBytes    = 12 << 20
	DefaultEntityQueueSize    = 100
	DefaultMaxStreams         = 10000
	DefaultMaxEntities        = 100000
	DefaultRetryMin           = time.Second
	DefaultRetryMax           = 10 * time.Second
	DefaultCloseGrace         = 2 * time.Second
)

// entityStopTimeout bounds the wait for entities to stop at shutdown.
const entityStopTimeout = 5 * time.Second

// Config configures a Proxy. Zero values take the defaults above.
type Config struct {
	// Logger receives the proxy's logs; nil discards them.
	Logger *slog.Logger
	// HTTPAddr is the public address (host:port) serving the user
	// services, reflection and health. Port 0 picks a free port.
	HTTPAddr string
	// MetricsAddr serves /metrics, /healthz and /readyz.
	MetricsAddr string
	// FunctionAddr is the user function's address, host:port.
	FunctionAddr string
	// NodeName names this node in the CRDTs (a Vote counts nodes). Required.
	NodeName string
	// Version is told to the user function as the proxy version.
	Version string
	// PassivationTimeout is how long an entity stays active with nothing
	// to do: no command, no open streamed call.
	PassivationTimeout time.Duration
	// MaxMessageBytes bounds every message, from clients and from the
	// function.
	MaxMessageBytes int
	// EntityQueueSize bounds the commands queued and in flight per entity,
	// and the messages buffered per streamed call.
	EntityQueueSize int
	// MaxStreams bounds the server-streamed calls open at once.
	MaxStreams int
	// MaxEntities bounds the active entities, each a stream to the function.
	MaxEntities int
	// RetryMin and RetryMax bound the jittered exponential backoff between
	// attempts to reach the user function.
	RetryMin, RetryMax time.Duration
	// CloseGrace is how long the proxy waits for the function to end its
	// side of a stream the proxy half-closed, and to answer
	// stream_cancelled, before it stops waiting.
	CloseGrace time.Duration
	// Replicas holds the entities' CRDTs. Nil makes a set of its own for
	// NodeName; a cluster layer passes the set it replicates, whose node
	// must be NodeName.
	Replicas *Replicas
}

// withDefaults returns cfg with zero values replaced by defaults, or an
// error naming the first invalid setting.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&cfg.HTTPAddr, DefaultHTTPAddr)
	def(&cfg.MetricsAddr, DefaultMetricsAddr)
	def(&cfg.FunctionAddr, DefaultFunctionAddr)
	def(&cfg.Version, "dev")
	for _, a := range []struct{ name, addr string }{
		{"HTTPAddr", cfg.HTTPAddr}, {"MetricsAddr", cfg.MetricsAddr},
		{"FunctionAddr", cfg.FunctionAddr},
	} {
		if err := checkAddr(a.addr); err != nil {
			return cfg, fmt.Errorf("%s: %w", a.name, err)
		}
	}
	if _, port, _ := net.SplitHostPort(cfg.FunctionAddr); port == "0" {
		return cfg, errors.New("FunctionAddr: port 0")
	}
	if cfg.NodeName == "" {
		return cfg, errors.New("NodeName: empty")
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"PassivationTimeout", &cfg.PassivationTimeout, DefaultPassivationTimeout},
		{"RetryMin", &cfg.RetryMin, DefaultRetryMin},
		{"RetryMax", &cfg.RetryMax, DefaultRetryMax},
		{"CloseGrace", &cfg.CloseGrace, DefaultCloseGrace},
	}
	for _, d := range durations {
		switch {
		case *d.v < 0:
			return cfg, fmt.Errorf("%s: negative (%v)", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.RetryMin > cfg.RetryMax {
		return cfg, fmt.Errorf("RetryMin (%v) above RetryMax (%v)", cfg.RetryMin, cfg.RetryMax)
	}
	sizes := []struct {
		name string
		v    *int
		def  int
		max  int
	}{
		{"MaxMessageBytes", &cfg.MaxMessageBytes, DefaultMaxMessageBytes, 1 << 30},
		{"EntityQueueSize", &cfg.EntityQueueSize, DefaultEntityQueueSize, 1 << 20},
		{"MaxStreams", &cfg.MaxStreams, DefaultMaxStreams, 1 << 24},
		{"MaxEntities", &cfg.MaxEntities, DefaultMaxEntities, 1 << 26},
	}
	for _, s := range sizes {
		switch {
		case *s.v < 0 || *s.v > s.max:
			return cfg, fmt.Errorf("%s: %d out of range 1..%d", s.name, *s.v, s.max)
		case *s.v == 0:
			*s.v = s.def
		}
	}
	if cfg.Replicas != nil && cfg.Replicas.Node() != crdt.NodeID(cfg.NodeName) {
		return cfg, fmt.Errorf("Replicas: node %q, want NodeName %q",
			cfg.Replicas.Node(), cfg.NodeName)
	}
	return cfg, nil
}

// checkAddr validates a host:port address.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("address %q: bad port", addr)
	}
	return nil
}

// Proxy is a Cloudstate proxy in front of one user function.
type Proxy struct {
	cfg        Config
	log        *slog.Logger
	replicas   *Replicas
	metrics    *metrics
	fn         *function
	ents       *entities
	httpLn     net.Listener
	metricsLn  net.Listener
	httpSrv    *http.Server
	metricsSrv *http.Server
	baseCtx    context.Context
	cancelBase context.CancelFunc

	catalog     atomic.Pointer[catalog]
	services    atomic.Pointer[http.Handler]
	typeWarned  sync.Map
	streamSlots chan struct{}
	effectSlots chan struct{}
	fnUp        atomic.Bool
	stopping    atomic.Bool
	stopped     chan struct{}

	shutdownOnce sync.Once
	shutdownErr  error
}

// New validates cfg and returns a proxy listening on its addresses; Run
// serves them.
func New(cfg Config) (*Proxy, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("proxy config: %w", err)
	}
	m, err := newMetrics()
	if err != nil {
		return nil, err
	}
	replicas := cfg.Replicas
	if replicas == nil {
		replicas = NewReplicas(crdt.NodeID(cfg.NodeName))
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		cfg:         cfg,
		log:         cfg.Logger,
		replicas:    replicas,
		metrics:     m,
		baseCtx:     ctx,
		cancelBase:  cancel,
		streamSlots: make(chan struct{}, cfg.MaxStreams),
		effectSlots: make(chan struct{}, maxEffectBatches),
		stopped:     make(chan struct{}),
	}
	p.fn = newFunction(&p.cfg, func(up bool) {
		p.fnUp.Store(up)
		p.updateReady()
	})
	p.ents = newEntities(ctx, &p.cfg, p.fn, replicas, m)
	p.ents.effects = func(effects []*protocol.SideEffect) { p.runEffects(effects, 1) }

	if p.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		cancel()
		return nil, fmt.Errorf("listen on HTTPAddr: %w", err)
	}
	if p.metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
		cancel()
		_ = p.httpLn.Close()
		return nil, fmt.Errorf("listen on MetricsAddr: %w", err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	errLog := slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)
	p.httpSrv = &http.Server{
		Handler:           p.frontDoor(),
		ReadHeaderTimeout: 10 * time.Second,
		Protocols:         protocols,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
			// A client sizes the buffer of each request body it streams by the
			// largest frame the server accepts (up to 512 KiB): a small frame
			// keeps every long-lived stream's buffer small.
			MaxReadFrameSize: 16 << 10,
		},
		ErrorLog: errLog,
	}
	p.metricsSrv = &http.Server{
		Handler:           p.probes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
	}
	return p, nil
}

// HTTPAddr returns the address the public server listens on.
func (p *Proxy) HTTPAddr() string { return p.httpLn.Addr().String() }

// MetricsAddr returns the address the metrics server listens on.
func (p *Proxy) MetricsAddr() string { return p.metricsLn.Addr().String() }

// Replicas returns the entities' replicas, for a cluster layer.
func (p *Proxy) Replicas() *Replicas { return p.replicas }

// Run serves until ctx is done or Shutdown is called, and returns nil then;
// it returns early with an error when a server fails. It discovers the user
// function in the background: until then /readyz answers 503 and calls to
// user services fail with Unavailable. Run is called once; Shutdown
// releases what it started.
func (p *Proxy) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.stopped:
			cancel()
		case <-ctx.Done():
		}
	}()
	errc := make(chan error, 2)
	serve := func(name string, srv *http.Server, ln net.Listener) {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve %s: %w", name, err)
		}
	}
	go serve("http", p.httpSrv, p.httpLn)
	go serve("metrics", p.metricsSrv, p.metricsLn)
	p.log.Info("proxy listening", "http", p.HTTPAddr(), "metrics", p.MetricsAddr(),
		"user_function", p.cfg.FunctionAddr, "node", p.cfg.NodeName)
	go func() {
		cat := p.fn.discoverCatalog(ctx, func(kind string) {
			p.metrics.errors.WithLabelValues(kind).Inc()
		})
		if cat != nil {
			p.install(cat)
		}
	}()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// install starts serving a discovered catalog.
func (p *Proxy) install(cat *catalog) {
	h := p.serviceHandler(cat)
	p.catalog.Store(cat)
	p.services.Store(&h)
	p.updateReady()
	info := cat.info
	p.log.Info("user function discovered", "services", cat.serviceNames(),
		"service_name", info.GetServiceName(), "service_version", info.GetServiceVersion(),
		"library", info.GetSupportLibraryName()+" "+info.GetSupportLibraryVersion())
}

// ready reports whether the proxy serves: discovered, function reachable,
// not shutting down.
func (p *Proxy) ready() bool {
	return p.catalog.Load() != nil && p.fnUp.Load() && !p.stopping.Load()
}

// updateReady refreshes the readiness gauge.
func (p *Proxy) updateReady() {
	v := 0.0
	if p.ready() {
		v = 1
	}
	p.metrics.ready.Set(v)
}

// probes serves /metrics, /healthz (live while the process runs) and
// /readyz (200 once the function is discovered, while it is reachable).
func (p *Proxy) probes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", p.metrics.handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case p.stopping.Load():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case p.catalog.Load() == nil:
			http.Error(w, "user function not discovered yet", http.StatusServiceUnavailable)
		case !p.fnUp.Load():
			http.Error(w, "user function unreachable", http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("ready\n"))
		}
	})
	return mux
}

// Shutdown stops the proxy gracefully: it stops accepting calls, ends open
// streamed calls with Unavailable, lets unary calls in flight finish until
// ctx is done, then stops every entity and the servers. It is safe to call
// more than once, and without Run.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.shutdownOnce.Do(func() {
		p.stopping.Store(true)
		p.updateReady()
		close(p.stopped)
		p.ents.drainStreams()
		var errs []error
		drained := make(chan error, 1)
		go func() { drained <- p.httpSrv.Shutdown(ctx) }()
		select {
		case err := <-drained:
			if err != nil {
				errs = append(errs, fmt.Errorf("drain calls: %w", err))
			}
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("drain calls: %w", ctx.Err()))
		}
		// Stopping the entities fails the calls still waiting for them, so
		// it takes little time even once ctx is done.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), entityStopTimeout)
		defer cancel()
		if err := p.ents.stop(stopCtx); err != nil {
			errs = append(errs, fmt.Errorf("stop entities: %w", err))
		}
		_ = p.httpSrv.Close()
		p.cancelBase()
		if err := p.metricsSrv.Shutdown(ctx); err != nil {
			_ = p.metricsSrv.Close()
		}
		_ = p.httpLn.Close()
		_ = p.metricsLn.Close()
		p.fn.close()
		p.shutdownErr = errors.Join(errs...)
		p.log.Info("proxy stopped")
	})
	return p.shutdownErr
}
