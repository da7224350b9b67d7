// Package chattest runs the whole chat in the calling process, for tests
// and benchmarks of clients: the presence and friends user functions, a
// proxy beside each, and the gateway in front, all on free loopback ports.
package chattest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/cloudstate/proxy"
	"github.com/cloudchat/cloudchat/gateway"
	"github.com/cloudchat/cloudchat/services/friends"
	"github.com/cloudchat/cloudchat/services/presence"
)

// Chat is a running chat. Close stops it.
type Chat struct {
	// GatewayURL, PresenceURL and FriendsURL are the base URLs of the
	// gateway and of the two proxies.
	GatewayURL, PresenceURL, FriendsURL string
	stops                               []func()
}

// Start runs the chat and returns once every part is ready.
func Start() (*Chat, error) {
	c := &Chat{}
	var err error
	if c.PresenceURL, err = c.startService("presence",
		presence.NewEntity(presence.Config{})); err != nil {
		c.Close()
		return nil, err
	}
	if c.FriendsURL, err = c.startService("friends",
		friends.NewEntity(friends.Config{})); err != nil {
		c.Close()
		return nil, err
	}
	g, err := gateway.New(gateway.Config{
		Addr:        "127.0.0.1:0",
		Presence:    []string{hostOf(c.PresenceURL)},
		Friends:     []string{hostOf(c.FriendsURL)},
		MaxSessions: 1_000_000,
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("new gateway: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = g.Serve(ctx, ln)
	}()
	c.stops = append(c.stops, func() { cancel(); <-served })
	c.GatewayURL = "http://" + ln.Addr().String()
	if err := waitReady(c.GatewayURL + "/healthz"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func hostOf(url string) string {
	return url[len("http://"):]
}

// startService runs a user function and its proxy and returns the proxy's
// URL once it is ready.
func (c *Chat) startService(name string, entity *function.Entity) (string, error) {
	fn, err := function.New(function.Config{ServiceName: name})
	if err != nil {
		return "", fmt.Errorf("new %s function: %w", name, err)
	}
	if err := fn.Register(entity); err != nil {
		return "", fmt.Errorf("register %s: %w", name, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = fn.Serve(ln)
	}()
	c.stops = append(c.stops, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = fn.Shutdown(ctx)
		<-served
	})

	p, err := proxy.New(proxy.Config{
		HTTPAddr:     "127.0.0.1:0",
		MetricsAddr:  "127.0.0.1:0",
		FunctionAddr: ln.Addr().String(),
		NodeName:     name + "-1",
		MaxStreams:   1_000_000,
		MaxEntities:  1_000_000,
	})
	if err != nil {
		return "", fmt.Errorf("new %s proxy: %w", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = p.Run(ctx)
	}()
	c.stops = append(c.stops, func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = p.Shutdown(sctx)
		<-ran
	})
	if err := waitReady("http://" + p.MetricsAddr() + "/readyz"); err != nil {
		return "", err
	}
	return "http://" + p.HTTPAddr(), nil
}

// waitReady polls url until it answers 200, for at most 30 seconds.
func waitReady(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New(url + " not ready after 30s")
}

// Close stops every part, the gateway first.
func (c *Chat) Close() {
	for i := len(c.stops) - 1; i >= 0; i-- {
		c.stops[i]()
	}
	c.stops = nil
}
