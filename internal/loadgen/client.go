// Package loadgen drives the chat gateway the way the browser app does: it
// signs users in, opens their session streams, watches users and changes
// friends lists over the Connect protocol, and measures how long each step
// takes. It also measures presence flips straight against presence proxies.
//
// Calls are spread over several HTTP/2 (h2c) transports, as many browsers
// behind an HTTP/2 load balancer would arrive: each transport carries many
// streams on one connection and dials another only when the server's
// stream limit is reached.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1"
	"github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1/gatewayv1connect"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// Codec names how messages are encoded.
type Codec string

// The codecs a Client speaks.
const (
	// CodecJSON is the Connect protocol with JSON, what the browser app sends.
	CodecJSON Codec = "json"
	// CodecProto is the Connect protocol with binary protobuf.
	CodecProto Codec = "proto"
	// CodecGRPC is gRPC with binary protobuf, what the gateway sends its
	// upstreams.
	CodecGRPC Codec = "grpc"
)

// Config configures a Client.
type Config struct {
	// BaseURL is the server's URL, such as "http://127.0.0.1:3000".
	BaseURL string
	// Transports is the number of HTTP/2 transports calls are spread over
	// (default 8). Each holds at least one connection.
	Transports int
	// Codec is the protocol and encoding (default CodecJSON).
	Codec Codec
	// OpenTimeout bounds the wait for a session's first event (default 30s).
	OpenTimeout time.Duration
}

// Client calls one server over a pool of HTTP/2 transports. It is safe for
// concurrent use.
type Client struct {
	cfg        Config
	transports []*http.Transport
	// sessions make unary calls and streams the stream calls of the
	// session API.
	sessions []gatewayv1connect.SessionServiceClient
	streams  []gatewayv1connect.SessionServiceClient
	friends  []friendspbconnect.FriendsClient
	presence []presencepbconnect.PresenceClient
	dials    atomic.Int64
	next     atomic.Uint64
}

// New checks cfg and returns a Client. No connection is made until the
// first call.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("base url: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("base url %q: want http://host:port (cleartext HTTP/2)", cfg.BaseURL)
	}
	if cfg.Transports == 0 {
		cfg.Transports = 8
	}
	if cfg.Transports < 0 || cfg.Transports > 10000 {
		return nil, fmt.Errorf("transports: %d is not in 1..10000", cfg.Transports)
	}
	if cfg.Codec == "" {
		cfg.Codec = CodecJSON
	}
	// As a browser, the Connect codecs accept gzip on unary responses (fetch
	// always sends Accept-Encoding) but not on streams (connect-web never
	// asks for compressed stream messages). gRPC keeps connect-go's
	// defaults, as the gateway's own upstream clients do.
	var opts, streamOpts []connect.ClientOption
	switch cfg.Codec {
	case CodecJSON:
		opts = append(opts, connect.WithProtoJSON())
		streamOpts = append(opts, connect.WithAcceptCompression("gzip", nil, nil))
	case CodecProto:
		streamOpts = append(opts, connect.WithAcceptCompression("gzip", nil, nil))
	case CodecGRPC:
		opts = append(opts, connect.WithGRPC())
		streamOpts = opts
	default:
		return nil, fmt.Errorf("codec %q is not json, proto or grpc", cfg.Codec)
	}
	if cfg.OpenTimeout == 0 {
		cfg.OpenTimeout = 30 * time.Second
	}
	if cfg.OpenTimeout < 0 {
		return nil, fmt.Errorf("open timeout %v is negative", cfg.OpenTimeout)
	}

	c := &Client{cfg: cfg}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	for range cfg.Transports {
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		t := &http.Transport{
			Protocols: &protocols,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := dialer.DialContext(ctx, network, addr)
				if err == nil {
					c.dials.Add(1)
				}
				return conn, err
			},
		}
		hc := &http.Client{Transport: t}
		c.transports = append(c.transports, t)
		c.sessions = append(c.sessions,
			gatewayv1connect.NewSessionServiceClient(hc, cfg.BaseURL, opts...))
		c.streams = append(c.streams,
			gatewayv1connect.NewSessionServiceClient(hc, cfg.BaseURL, streamOpts...))
		c.friends = append(c.friends, friendspbconnect.NewFriendsClient(hc, cfg.BaseURL, opts...))
		c.presence = append(c.presence,
			presencepbconnect.NewPresenceClient(hc, cfg.BaseURL, streamOpts...))
	}
	return c, nil
}

// Dials returns the number of connections the client has dialed so far.
func (c *Client) Dials() int64 {
	return c.dials.Load()
}

// Close closes the client's idle connections. Open streams are ended by
// cancelling their contexts.
func (c *Client) Close() {
	for _, t := range c.transports {
		t.CloseIdleConnections()
	}
}

// pick returns the index of the transport for the next call.
func (c *Client) pick() int {
	return int(c.next.Add(1) % uint64(len(c.transports)))
}

// Friends returns a Friends client on the next transport.
func (c *Client) Friends() friendspbconnect.FriendsClient {
	return c.friends[c.pick()]
}

// Presence returns a Presence client on the next transport.
func (c *Client) Presence() presencepbconnect.PresenceClient {
	return c.presence[c.pick()]
}

// SignIn signs name in and returns its bearer token.
func (c *Client) SignIn(ctx context.Context, name string) (string, error) {
	res, err := c.sessions[c.pick()].SignIn(ctx,
		connect.NewRequest(&gatewayv1.SignInRequest{Name: name}))
	if err != nil {
		return "", fmt.Errorf("sign in %s: %w", name, err)
	}
	if res.Msg.GetToken() == "" {
		return "", fmt.Errorf("sign in %s: empty token", name)
	}
	return res.Msg.GetToken(), nil
}

// Authorize sets the bearer token of a request.
func Authorize(h http.Header, token string) {
	h.Set("Authorization", "Bearer "+token)
}

// errNoOpened is returned when a session stream's first event is not
// SessionOpened.
var errNoOpened = errors.New("first session event is not session_opened")
