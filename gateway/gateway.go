// Package gateway is the chat's front door for browsers and tools. It serves
// the single-page app, signs users in with HMAC-signed bearer tokens, and
// exposes the chat over Connect, gRPC and gRPC-Web:
//
//   - cloudchat.gateway.v1.SessionService, the gateway's own API: one long
//     server stream per browser session carrying all of its events, and
//     unary calls for its actions;
//   - cloudstate.samples.chat.presence.Presence and
//     cloudstate.samples.chat.friends.Friends at their original paths,
//     relayed to the upstream proxies, so that old clients and grpcurl
//     recipes work against the gateway.
//
// Calls that act for a user need "Authorization: Bearer <token>" for that
// user: OpenSession, Watch and Unwatch, Presence.Connect, and Friends.Add and
// Friends.Remove. Presence.Monitor, Friends.GetFriends and
// SessionService.GetUserStatus only read, and need no token.
//
// Upstream, the gateway opens one Presence.Connect per user, however many
// sessions and callers hold that user online, and one Presence.Monitor per
// watched user, shared by every watcher. Both are re-opened with jittered
// exponential backoff while still needed. Presence keeps working while the
// friends service is down; the friends list is saved and restored again as
// soon as it is back.
package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	gatewayv1 "github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1"
	"github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1/gatewayv1connect"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// Config configures a Gateway. Zero durations and limits take the defaults
// given beside each field.
type Config struct {
	// Addr is the host:port to listen on, such as "0.0.0.0:3000".
	Addr string
	// Presence and Friends are the host:port addresses of the upstream
	// proxies' replicas, at least one each.
	Presence []string
	Friends  []string
	// TokenSecret signs tokens; at least MinSecretLen bytes. When nil a
	// random secret is made, and tokens do not survive a restart.
	TokenSecret []byte
	// TokenTTL is how long a token is accepted (24h).
	TokenTTL time.Duration
	// HeartbeatInterval is how often an idle session stream gets a
	// Heartbeat (15s).
	HeartbeatInterval time.Duration
	// BackoffMin and BackoffMax bound the delay before re-opening an
	// upstream stream or retrying the friends service (250ms, 10s).
	BackoffMin time.Duration
	BackoffMax time.Duration
	// CallTimeout bounds each unary call to an upstream (5s).
	CallTimeout time.Duration
	// StatusWait is how long GetUserStatus waits for a status (2s).
	StatusWait time.Duration
	// MaxSessions bounds the sessions open at once (10000).
	MaxSessions int
	// MaxWatches bounds the users one session watches (500).
	MaxWatches int
	// MaxMessageBytes bounds every message read or sent (1 MiB).
	MaxMessageBytes int
	// Logger receives the gateway's logs; nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.TokenTTL, 24*time.Hour)
	def(&c.HeartbeatInterval, 15*time.Second)
	def(&c.BackoffMin, 250*time.Millisecond)
	def(&c.BackoffMax, 10*time.Second)
	def(&c.CallTimeout, 5*time.Second)
	def(&c.StatusWait, 2*time.Second)
	if c.MaxSessions == 0 {
		c.MaxSessions = 10000
	}
	if c.MaxWatches == 0 {
		c.MaxWatches = 500
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	for name, d := range map[string]time.Duration{
		"TokenTTL": c.TokenTTL, "HeartbeatInterval": c.HeartbeatInterval,
		"BackoffMin": c.BackoffMin, "BackoffMax": c.BackoffMax,
		"CallTimeout": c.CallTimeout, "StatusWait": c.StatusWait,
	} {
		if d < 0 {
			return fmt.Errorf("%s is negative: %v", name, d)
		}
	}
	switch {
	case c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("BackoffMax %v is less than BackoffMin %v", c.BackoffMax, c.BackoffMin)
	case c.TokenSecret != nil && len(c.TokenSecret) < MinSecretLen:
		return fmt.Errorf("TokenSecret is %d bytes, less than %d", len(c.TokenSecret), MinSecretLen)
	case c.MaxSessions < 0 || c.MaxWatches < 0 || c.MaxMessageBytes < 0:
		return errors.New("MaxSessions, MaxWatches and MaxMessageBytes must not be negative")
	}
	return nil
}

// maxQueuedEvents bounds the events waiting in one session's queue: enough
// for a full restore and a status for every watch, with room to spare.
func (c *Config) maxQueuedEvents() int {
	return 4*c.MaxWatches + 64
}

// Gateway serves the SPA and the chat APIs. Create it with New, then Run it;
// Shutdown stops it.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	tokens   *tokens
	presence *replicas[presencepbconnect.PresenceClient]
	friends  *replicas[friendspbconnect.FriendsClient]
	online   *hub[linkState]
	monitors *hub[gatewayv1.UserStatus]
	handler  http.Handler
	server   *http.Server
	// ctx is the parent of every request and upstream stream; stop
	// cancels it at shutdown.
	ctx  context.Context
	stop context.CancelFunc

	mu sync.Mutex
	// sessions is guarded by mu.
	sessions map[string]*session
}

// New validates cfg and returns a Gateway ready to Run.
func New(cfg Config) (*Gateway, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.TokenSecret == nil {
		cfg.TokenSecret = make([]byte, MinSecretLen)
		if _, err := rand.Read(cfg.TokenSecret); err != nil {
			return nil, fmt.Errorf("make token secret: %w", err)
		}
	}

	limits := []connect.ClientOption{
		connect.WithGRPC(),
		connect.WithReadMaxBytes(cfg.MaxMessageBytes),
		connect.WithSendMaxBytes(cfg.MaxMessageBytes),
		connect.WithCompressMinBytes(compressMinBytes),
	}
	presence, err := newReplicas(cfg.Presence, func(url string) presencepbconnect.PresenceClient {
		return presencepbconnect.NewPresenceClient(newH2CClient(), url, limits...)
	})
	if err != nil {
		return nil, fmt.Errorf("presence upstream: %w", err)
	}
	friends, err := newReplicas(cfg.Friends, func(url string) friendspbconnect.FriendsClient {
		return friendspbconnect.NewFriendsClient(newH2CClient(), url, limits...)
	})
	if err != nil {
		return nil, fmt.Errorf("friends upstream: %w", err)
	}

	ctx, stop := context.WithCancel(context.Background())
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger,
		tokens:   &tokens{secret: cfg.TokenSecret, ttl: cfg.TokenTTL, now: cfg.Now},
		presence: presence,
		friends:  friends,
		ctx:      ctx,
		stop:     stop,
		sessions: make(map[string]*session),
	}
	g.online = &hub[linkState]{
		stream: "presence connect", log: cfg.Logger, ctx: ctx,
		backoffMin: cfg.BackoffMin, backoffMax: cfg.BackoffMax,
		initial: linkOpening, lost: linkDown, open: openConnect(presence),
	}
	g.online.init()
	g.monitors = &hub[gatewayv1.UserStatus]{
		stream: "presence monitor", log: cfg.Logger, ctx: ctx,
		backoffMin: cfg.BackoffMin, backoffMax: cfg.BackoffMax,
		initial: gatewayv1.UserStatus_USER_STATUS_UNKNOWN,
		lost:    gatewayv1.UserStatus_USER_STATUS_UNKNOWN,
		open:    openMonitor(presence),
	}
	g.monitors.init()
	g.handler = g.routes()
	g.server = &http.Server{
		Addr:              cfg.Addr,
		Handler:           g.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		HTTP2: &http.HTTP2Config{
			// A client sizes the buffer of each request body it streams by the
			// largest frame the server accepts (up to 512 KiB): a small frame
			// keeps every long-lived stream's buffer small.
			MaxReadFrameSize: 16 << 10,
		},
	}
	g.server.Protocols = new(http.Protocols)
	g.server.Protocols.SetHTTP1(true)
	g.server.Protocols.SetUnencryptedHTTP2(true)
	return g, nil
}

// routes builds the gateway's HTTP handler.
func (g *Gateway) routes() http.Handler {
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(g.cfg.MaxMessageBytes),
		connect.WithSendMaxBytes(g.cfg.MaxMessageBytes),
		connect.WithCompressMinBytes(compressMinBytes),
	}
	services := []string{
		gatewayv1connect.SessionServiceName,
		presencepbconnect.PresenceName,
		friendspbconnect.FriendsName,
	}
	reflector := grpcreflect.NewStaticReflector(services...)

	mux := http.NewServeMux()
	mux.Handle(gatewayv1connect.NewSessionServiceHandler(&sessionService{g: g}, opts...))
	mux.Handle(presencepbconnect.NewPresenceHandler(&presenceRelay{g: g}, opts...))
	mux.Handle(friendspbconnect.NewFriendsHandler(&friendsRelay{g: g}, opts...))
	mux.Handle(grpcreflect.NewHandlerV1(reflector, opts...))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, opts...))
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(services...), opts...))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/", newWebHandler(g.log, web))
	return mux
}

// Handler returns the gateway's HTTP handler, for serving it elsewhere.
func (g *Gateway) Handler() http.Handler {
	return g.handler
}

// Run listens on the configured address and serves until Shutdown, or
// until ctx is done, which ends every stream and connection at once. It
// returns nil after either.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return g.Serve(ctx, ln)
}

// Serve is Run on a listener of the caller's.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	stopOnDone := context.AfterFunc(ctx, func() {
		g.stop()
		_ = g.server.Close()
	})
	defer stopOnDone()
	g.log.Info("gateway listening", "addr", ln.Addr().String(),
		"presence", g.cfg.Presence, "friends", g.cfg.Friends)
	if err := g.server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// Shutdown ends every session and upstream stream, then waits for the
// server's connections to close until ctx is done.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.stop()
	if err := g.server.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down server: %w", err)
	}
	return nil
}

// compressMinBytes is the smallest message worth compressing: gzip costs
// more CPU than it saves on the small messages of this API.
const compressMinBytes = 1024
