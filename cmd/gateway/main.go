// Command gateway serves the chat's single-page app and its APIs; see package
// gateway. Each setting is a flag with an environment fallback; the flag wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudchat/cloudchat/gateway"
	"github.com/cloudchat/cloudchat/internal/logging"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run() error {
	host := flag.String("host", env("HOST", "0.0.0.0"), "address to listen on (env HOST)")
	port := flag.String("port", env("PORT", "3000"), "port to listen on (env PORT)")
	presence := flag.String("presence", env("PRESENCE", "presence:80"),
		"presence proxy host:port, comma-separated for replicas (env PRESENCE)")
	friends := flag.String("friends", env("FRIENDS", "friends:80"),
		"friends proxy host:port, comma-separated for replicas (env FRIENDS)")
	// Secrets are not flag defaults, so that -h never prints them.
	secret := flag.String("token-secret", "",
		"secret that signs tokens, at least 32 bytes; random when empty (env TOKEN_SECRET)")
	logLevel := flag.String("log-level", env("LOG_LEVEL", "info"),
		"debug, info, warn or error (env LOG_LEVEL)")
	logFormat := flag.String("log-format", env("LOG_FORMAT", "auto"),
		"text, json, or auto: text on a terminal, JSON elsewhere (env LOG_FORMAT)")
	maxSessions := flag.String("max-sessions", env("MAX_SESSIONS", "10000"),
		"sessions open at once; each holds one stream (env MAX_SESSIONS)")
	flag.Parse()

	logger, err := logging.New(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(*port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", *port)
	}
	sessions, err := strconv.Atoi(*maxSessions)
	if err != nil || sessions < 1 {
		return fmt.Errorf("max-sessions %q is not a positive number", *maxSessions)
	}
	presenceAddrs, err := gateway.ParseAddrs(*presence)
	if err != nil {
		return fmt.Errorf("presence: %w", err)
	}
	friendsAddrs, err := gateway.ParseAddrs(*friends)
	if err != nil {
		return fmt.Errorf("friends: %w", err)
	}
	var tokenSecret []byte
	if *secret == "" {
		*secret = os.Getenv("TOKEN_SECRET")
	}
	if *secret != "" {
		tokenSecret = []byte(*secret)
		if len(tokenSecret) < gateway.MinSecretLen {
			return fmt.Errorf("token secret is %d bytes, less than %d",
				len(tokenSecret), gateway.MinSecretLen)
		}
	} else {
		logger.Warn("no token secret set; using a random one, so tokens end with this process")
	}

	g, err := gateway.New(gateway.Config{
		Addr:        net.JoinHostPort(*host, *port),
		Presence:    presenceAddrs,
		Friends:     friendsAddrs,
		TokenSecret: tokenSecret,
		MaxSessions: sessions,
		Logger:      logger,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- g.Run(context.Background()) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}

	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return <-served
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
