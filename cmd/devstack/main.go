// Command devstack runs the whole chat on one machine; see package devstack.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/cloudchat/cloudchat/internal/devstack"
)

func main() {
	replicas := flag.Int("replicas", envInt("REPLICAS", 1), "function and proxy pairs per service (env REPLICAS)")
	port := flag.Int("port", envInt("GATEWAY_PORT", 3000), "gateway HTTP port (env GATEWAY_PORT)")
	bin := flag.String("bin", "bin", "directory of the built binaries")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := devstack.Run(ctx, devstack.Config{
		BinDir:      *bin,
		Replicas:    *replicas,
		GatewayPort: *port,
		Output:      os.Stdout,
		Logger:      logger,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func envInt(name string, def int) int {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "devstack: %s=%q is not a number\n", name, v)
		os.Exit(2)
	}
	return n
}
