package proxy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// harness runs a proxy in front of a fake function, both on loopback.
type harness struct {
	t      testing.TB
	fn     *fakeFn
	fnAddr string
	p      *Proxy
	base   string
	h2c    *http.Client
	h1     *http.Client
}

// newHarness starts fn (a fake serving spec when fn is nil) and a proxy in
// front of it, with short timings; mod adjusts the proxy's config.
func newHarness(t testing.TB, fn *fakeFn, mod func(*Config)) *harness {
	t.Helper()
	if fn == nil {
		fn = newFakeFn(chatSpec(t))
	}
	h := &harness{t: t, fn: fn}
	h.fnAddr = fn.start(t, "127.0.0.1:0")
	cfg := Config{
		Logger:       testLogger(),
		HTTPAddr:     "127.0.0.1:0",
		MetricsAddr:  "127.0.0.1:0",
		FunctionAddr: h.fnAddr,
		NodeName:     "node-1",
		RetryMin:     20 * time.Millisecond,
		RetryMax:     200 * time.Millisecond,
		CloseGrace:   300 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	h.start(cfg)
	return h
}

// start starts the proxy and makes the clients.
func (h *harness) start(cfg Config) {
	h.p = startProxy(h.t, cfg)
	h.base = "http://" + h.p.HTTPAddr()
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	h.h2c = &http.Client{Transport: &http.Transport{Protocols: protocols}}
	h.h1 = &http.Client{Transport: &http.Transport{}}
	h.t.Cleanup(h.h2c.CloseIdleConnections)
	h.t.Cleanup(h.h1.CloseIdleConnections)
}

// startProxy starts a proxy and stops it when the test ends.
func startProxy(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p
}

// waitReady polls /readyz until the proxy is ready.
func (h *harness) waitReady() {
	h.t.Helper()
	eventually(h.t, "proxy ready", func() error {
		res, err := h.h1.Get("http://" + h.p.MetricsAddr() + "/readyz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", res.Status)
		}
		return nil
	})
}

func (h *harness) friends(opts ...connect.ClientOption) friendspbconnect.FriendsClient {
	if len(opts) == 0 {
		opts = []connect.ClientOption{connect.WithGRPC()}
	}
	return friendspbconnect.NewFriendsClient(h.h2c, h.base, opts...)
}

func (h *harness) presence(opts ...connect.ClientOption) presencepbconnect.PresenceClient {
	if len(opts) == 0 {
		opts = []connect.ClientOption{connect.WithGRPC()}
	}
	return presencepbconnect.NewPresenceClient(h.h2c, h.base, opts...)
}

// eventually polls f until it returns nil, failing the test after a
// deadline with f's last error.
func eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitReport waits for a reportError message containing want.
func (h *harness) waitReport(want string) {
	h.t.Helper()
	eventually(h.t, "report "+want, func() error {
		for _, r := range h.fn.snapshotReports() {
			if strings.Contains(r, want) {
				return nil
			}
		}
		return fmt.Errorf("reports %q", h.fn.snapshotReports())
	})
}

// wantCode fails the test unless err carries code and, when given, a
// message containing msg.
func wantCode(t testing.TB, err error, code connect.Code, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("got code %v (%v), want %v", got, err, code)
	}
	if msg != "" && !strings.Contains(err.Error(), msg) {
		t.Fatalf("got error %q, want it to contain %q", err, msg)
	}
}

// initsFor returns the inits the fake saw for one entity.
func (h *harness) initsFor(entity string) []*protocol.CrdtInit {
	var out []*protocol.CrdtInit
	for _, in := range h.fn.snapshotInits() {
		if in.GetEntityId() == entity {
			out = append(out, in)
		}
	}
	return out
}
