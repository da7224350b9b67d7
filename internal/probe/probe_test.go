package probe

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHTTP(t *testing.T) {
	t.Parallel()
	status := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
	}))
	defer srv.Close()
	check := HTTP(srv.URL)
	if err := check(context.Background()); err == nil {
		t.Error("probe passed on 503")
	}
	status = http.StatusOK
	if err := check(context.Background()); err != nil {
		t.Errorf("probe failed on 200: %v", err)
	}
}

func TestTCP(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := TCP(addr)(context.Background()); err != nil {
		t.Errorf("probe failed on a listener: %v", err)
	}
	ln.Close()
	if err := TCP(addr)(context.Background()); err == nil {
		t.Error("probe passed on a closed port")
	}
}
