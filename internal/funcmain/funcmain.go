// Package funcmain is the common main of the project's user functions: it
// reads their settings from flags with environment fallbacks, serves the
// function and shuts it down on SIGINT or SIGTERM.
package funcmain

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/internal/logging"
)

// Run serves the user function name, whose entities entities returns, with
// the settings in args (the command line without the program name). It
// returns when the function stopped: after a signal, or on an error.
func Run(name string, args []string, entities func(*slog.Logger) []*function.Entity) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var (
		host  = fs.String("host", env("HOST", "127.0.0.1"), "address to listen on (env HOST)")
		port  = fs.String("port", env("PORT", "8080"), "port to listen on (env PORT)")
		level = fs.String("log-level", env("LOG_LEVEL", "info"),
			"debug, info, warn or error (env LOG_LEVEL)")
		format = fs.String("log-format", env("LOG_FORMAT", "auto"),
			"text, json, or auto: text on a terminal, JSON elsewhere (env LOG_FORMAT)")
		grace = fs.Duration("shutdown-timeout", 10*time.Second,
			"time to let handlers finish on shutdown")
	)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log, err := logging.New(os.Stderr, *format, *level)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(*port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port: %q is not a number in 1..65535", *port)
	}
	if *grace <= 0 {
		return fmt.Errorf("shutdown-timeout: %v is not positive", *grace)
	}

	srv, err := function.New(function.Config{
		Logger:         log,
		ServiceName:    name,
		ServiceVersion: version(),
	})
	if err != nil {
		return err
	}
	for _, e := range entities(log) {
		if err := srv.Register(e); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	addr := net.JoinHostPort(*host, *port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}

	stop()
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	return errors.Join(srv.Shutdown(shutdownCtx), <-served)
}

// env returns the environment variable name, or def when it is unset.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// version returns the module version the binary was built from.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
