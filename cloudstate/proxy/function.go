package proxy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol/protocolconnect"
)

// Protocol version and names this proxy announces in ProxyInfo.
const (
	protocolMajor = 0
	protocolMinor = 1
	proxyName     = "cloudchat-proxy"
)

// callTimeout bounds discover and reportError calls.
const callTimeout = 10 * time.Second

// maxSpecBytes bounds the entity spec discover returns.
const maxSpecBytes = 64 << 20

// maxReports bounds the reportError calls in flight; more are dropped (and
// logged), since reportError is only diagnostic.
const maxReports = 16

// backoff computes jittered exponential delays between retries.
type backoff struct {
	min, max time.Duration
}

// delay returns the wait before retry number attempt (0 for the first),
// doubling from min to max, with ±20% jitter.
func (b backoff) delay(attempt int) time.Duration {
	d := b.min
	for i := 0; i < attempt && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	jitter := 0.8 + 0.4*rand.Float64() //nolint:gosec // jitter needs no secure randomness
	return time.Duration(float64(d) * jitter)
}

// sleep waits for d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// function is the proxy's client of the user function: discovery, error
// reports and the Crdt.handle streams, over cleartext HTTP/2. It tracks
// whether the function is reachable: once a stream breaks because the
// function went away, new entities fail fast with Unavailable while a probe
// calls discover with backoff until the function answers again.
type function struct {
	log       *slog.Logger
	http      *http.Client
	discovery protocolconnect.EntityDiscoveryClient
	crdt      protocolconnect.CrdtClient
	info      *protocol.ProxyInfo
	backoff   backoff
	reports   chan struct{}
	onUp      func(bool)

	// mu guards the fields below.
	mu      sync.Mutex
	up      bool
	probing bool
	spec    *protocol.EntitySpec
}

// newFunction returns a client of the user function at addr.
func newFunction(cfg *Config, onUp func(bool)) *function {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	transport := &http.Transport{
		Protocols:   protocols,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 15 * time.Second,
			PingTimeout:     5 * time.Second,
		},
	}
	httpClient := &http.Client{Transport: transport}
	base := "http://" + cfg.FunctionAddr
	opts := []connect.ClientOption{
		connect.WithGRPC(),
		connect.WithReadMaxBytes(cfg.MaxMessageBytes),
		connect.WithSendMaxBytes(cfg.MaxMessageBytes),
		connect.WithCompressMinBytes(compressMinBytes),
	}
	// A spec's descriptors may exceed the limit on messages.
	discoveryOpts := []connect.ClientOption{
		connect.WithGRPC(),
		connect.WithReadMaxBytes(max(cfg.MaxMessageBytes, maxSpecBytes)),
		connect.WithSendMaxBytes(cfg.MaxMessageBytes),
		connect.WithCompressMinBytes(compressMinBytes),
	}
	return &function{
		log:       cfg.Logger,
		http:      httpClient,
		discovery: protocolconnect.NewEntityDiscoveryClient(httpClient, base, discoveryOpts...),
		crdt:      protocolconnect.NewCrdtClient(httpClient, base, opts...),
		info: &protocol.ProxyInfo{
			ProtocolMajorVersion: protocolMajor,
			ProtocolMinorVersion: protocolMinor,
			ProxyName:            proxyName,
			ProxyVersion:         cfg.Version,
			SupportedEntityTypes: []string{crdtEntityType},
		},
		backoff: backoff{min: cfg.RetryMin, max: cfg.RetryMax},
		reports: make(chan struct{}, maxReports),
		onUp:    onUp,
	}
}

// discover calls EntityDiscovery.discover once.
func (f *function) discover(ctx context.Context) (*protocol.EntitySpec, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := f.discovery.Discover(ctx, connect.NewRequest(proto.Clone(f.info).(*protocol.ProxyInfo)))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// discoverCatalog calls discover until the function answers with a valid
// spec, waiting with backoff between attempts, and returns its catalog. A
// spec it rejects is logged once per distinct problem and reported to the
// function. It returns nil when ctx is done.
func (f *function) discoverCatalog(ctx context.Context, errs func(string)) *catalog {
	var lastProblem string
	for attempt := 0; ; attempt++ {
		spec, err := f.discover(ctx)
		var problem string
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			problem = "user function not reachable"
			if problem != lastProblem {
				f.log.Info("waiting for user function", "err", err)
			}
		default:
			cat, err := newCatalog(spec)
			if err == nil {
				f.setUp(spec)
				return cat
			}
			problem = err.Error()
			if problem != lastProblem {
				f.log.Error("user function spec rejected", "err", err)
			}
			errs("discovery")
			f.report(ctx, "Discovery failed: "+problem)
		}
		lastProblem = problem
		if !sleep(ctx, f.backoff.delay(attempt)) {
			return nil
		}
	}
}

// setUp records a successful discover.
func (f *function) setUp(spec *protocol.EntitySpec) {
	f.mu.Lock()
	f.up = true
	if f.spec == nil {
		f.spec = spec
	}
	f.mu.Unlock()
	f.onUp(true)
}

// available reports whether the function is believed reachable.
func (f *function) available() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up
}

// markDown records that the function went away and starts probing for it,
// unless a probe runs already.
func (f *function) markDown(ctx context.Context, cause error) {
	f.mu.Lock()
	wasUp := f.up
	f.up = false
	start := !f.probing && ctx.Err() == nil
	if start {
		f.probing = true
	}
	f.mu.Unlock()
	if wasUp {
		f.log.Warn("user function unreachable", "err", cause)
		f.onUp(false)
	}
	if start {
		go f.probe(ctx)
	}
}

// probe calls discover with backoff until the function answers.
func (f *function) probe(ctx context.Context) {
	defer func() {
		f.mu.Lock()
		f.probing = false
		f.mu.Unlock()
	}()
	for attempt := 0; ; attempt++ {
		if !sleep(ctx, f.backoff.delay(attempt)) {
			return
		}
		spec, err := f.discover(ctx)
		if err != nil {
			continue
		}
		f.mu.Lock()
		changed := f.spec != nil && !sameSpec(f.spec, spec)
		f.up = true
		f.mu.Unlock()
		if changed {
			f.log.Warn("user function spec changed; restart the proxy to serve the new spec")
		}
		f.log.Info("user function reachable again")
		f.onUp(true)
		return
	}
}

// sameSpec reports whether two specs describe the same services.
func sameSpec(a, b *protocol.EntitySpec) bool {
	if !bytes.Equal(a.GetProto(), b.GetProto()) || len(a.GetEntities()) != len(b.GetEntities()) {
		return false
	}
	for i, e := range a.GetEntities() {
		if !proto.Equal(e, b.GetEntities()[i]) {
			return false
		}
	}
	return true
}

// report sends a diagnostic message to the function's reportError without
// waiting for it. Reports beyond maxReports in flight are dropped.
func (f *function) report(ctx context.Context, msg string) {
	select {
	case f.reports <- struct{}{}:
	default:
		f.log.Debug("report to user function dropped", "message", msg)
		return
	}
	go func() {
		defer func() { <-f.reports }()
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		req := connect.NewRequest(&protocol.UserFunctionError{Message: msg})
		if _, err := f.discovery.ReportError(ctx, req); err != nil {
			f.log.Debug("report error to user function", "err", err)
		}
	}()
}

// isUnreachable reports whether a stream error means the function went away
// rather than failed one stream.
func isUnreachable(err error) bool {
	return connect.CodeOf(err) == connect.CodeUnavailable && !errors.Is(err, context.Canceled)
}

// close releases the client's idle connections.
func (f *function) close() {
	f.http.CloseIdleConnections()
}
