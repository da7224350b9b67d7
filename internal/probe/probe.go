// Package probe tells whether a process the project starts, in a test, a
// benchmark or the local stack, serves yet.
package probe

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Func reports nil once a process serves. Callers poll it until then; it
// gives up when ctx is done.
type Func func(ctx context.Context) error

// HTTP is a probe that wants 200 OK from a GET of url.
func HTTP(url string) Func {
	client := &http.Client{Timeout: time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, res.Status)
		}
		return nil
	}
}

// TCP is a probe that wants a TCP connection to addr to succeed.
func TCP(addr string) Func {
	return func(ctx context.Context) error {
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
}
