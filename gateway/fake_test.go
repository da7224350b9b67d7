package gateway

import (
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// server is an HTTP server on a loopback port that speaks HTTP/1.1 and
// cleartext HTTP/2, and can be stopped and started again on the same port.
type server struct {
	t       *testing.T
	handler http.Handler
	addr    string

	mu sync.Mutex
	// srv is guarded by mu; nil while stopped.
	srv *http.Server
}

func startServer(t *testing.T, pattern string, handler http.Handler) *server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(pattern, handler)
	s := &server{t: t, handler: mux, addr: "127.0.0.1:0"}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// start serves on the server's address, the same one after a stop.
func (s *server) start() {
	s.t.Helper()
	var ln net.Listener
	var err error
	// The port of a server just stopped can stay busy for a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err = net.Listen("tcp", s.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("listen on %s: %v", s.addr, err)
	}
	s.addr = ln.Addr().String()
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// stop closes the listener and every connection at once, as a crash does.
func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}
