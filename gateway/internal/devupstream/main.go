// Command devupstream serves an in-memory stand-in for the presence or the
// friends service, over gRPC, Connect and gRPC-Web, so that the gateway and
// its frontend can run before the real services and proxies are built:
//
//	devupstream -service presence -port 9002
//
// It keeps everything in memory and answers GET /healthz.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudchat/cloudchat/gateway/internal/fakeupstream"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devupstream:", err)
		os.Exit(1)
	}
}

func run() error {
	service := flag.String("service", "", "presence or friends")
	host := flag.String("host", env("HOST", "127.0.0.1"), "address to listen on (env HOST)")
	port := flag.String("port", env("PORT", "8080"), "port to listen on (env PORT)")
	flag.Parse()

	mux := http.NewServeMux()
	switch *service {
	case "presence":
		mux.Handle(presencepbconnect.NewPresenceHandler(fakeupstream.NewPresence()))
	case "friends":
		mux.Handle(friendspbconnect.NewFriendsHandler(fakeupstream.NewFriends()))
	default:
		return fmt.Errorf("service %q is not presence or friends", *service)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	srv := &http.Server{Addr: net.JoinHostPort(*host, *port), Handler: mux,
		ReadHeaderTimeout: 5 * time.Second}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	logger.Info("serving", "service", *service, "addr", srv.Addr)
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
