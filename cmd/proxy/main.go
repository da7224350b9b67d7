// Command proxy runs a Cloudstate proxy beside one user function; see
// package proxy. Each setting is a flag with an environment fallback; the
// flag wins.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudchat/cloudchat/cloudstate/cluster"
	"github.com/cloudchat/cloudchat/cloudstate/crdt"
	"github.com/cloudchat/cloudchat/cloudstate/proxy"
	"github.com/cloudchat/cloudchat/internal/logging"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(1)
	}
}

func run() error {
	hostname, _ := os.Hostname()
	def := fmt.Sprint
	var (
		httpHost = flag.String("http-host", env("HTTP_HOST", "0.0.0.0"),
			"address to serve clients and metrics on (env HTTP_HOST)")
		httpPort = flag.String("http-port", env("HTTP_PORT", "9000"),
			"port to serve clients on (env HTTP_PORT)")
		metricsPort = flag.String("metrics-port", env("METRICS_PORT", "9090"),
			"port of /metrics, /healthz and /readyz (env METRICS_PORT)")
		fnHost = flag.String("user-function-host", env("USER_FUNCTION_HOST", "127.0.0.1"),
			"user function host (env USER_FUNCTION_HOST)")
		fnPort = flag.String("user-function-port", env("USER_FUNCTION_PORT", "8080"),
			"user function port (env USER_FUNCTION_PORT)")
		nodeName = flag.String("node-name", env("NODE_NAME", hostname),
			"this node's name in the CRDTs (env NODE_NAME)")
		passivation = flag.String("passivation-timeout", env("PASSIVATION_TIMEOUT", "30s"),
			"idle time before an entity is stopped (env PASSIVATION_TIMEOUT)")
		maxMessage = flag.String("max-message-bytes",
			env("MAX_MESSAGE_BYTES", def(proxy.DefaultMaxMessageBytes)),
			"largest message accepted or sent (env MAX_MESSAGE_BYTES)")
		queue = flag.String("entity-queue-size",
			env("ENTITY_QUEUE_SIZE", def(proxy.DefaultEntityQueueSize)),
			"commands queued per entity (env ENTITY_QUEUE_SIZE)")
		maxStreams = flag.String("max-streams", env("MAX_STREAMS", def(proxy.DefaultMaxStreams)),
			"server-streamed calls open at once (env MAX_STREAMS)")
		maxEntities = flag.String("max-entities", env("MAX_ENTITIES", def(proxy.DefaultMaxEntities)),
			"entities active at once (env MAX_ENTITIES)")
		grace = flag.String("shutdown-timeout", env("SHUTDOWN_TIMEOUT", "15s"),
			"time to drain calls on shutdown (env SHUTDOWN_TIMEOUT)")
		level = flag.String("log-level", env("LOG_LEVEL", "info"),
			"debug, info, warn or error (env LOG_LEVEL)")
		logFormat = flag.String("log-format", env("LOG_FORMAT", "auto"),
			"text, json, or auto: text on a terminal, JSON elsewhere (env LOG_FORMAT)")
		clusterHost = flag.String("cluster-host", env("CLUSTER_HOST", ""),
			"address to replicate with other proxies on; default http-host (env CLUSTER_HOST)")
		clusterPort = flag.String("cluster-port", env("CLUSTER_PORT", ""),
			"port to replicate with other proxies on, "+def(defaultClusterPort)+
				" when cluster-join is set; empty: no cluster (env CLUSTER_PORT)")
		// Secrets are not flag defaults, so that -h never prints them.
		clusterKey = flag.String("cluster-key", "",
			"base64 AES key (16, 24 or 32 bytes) encrypting traffic between proxies (env CLUSTER_KEY)")
		clusterJoin = flag.String("cluster-join", env("CLUSTER_JOIN", ""),
			"comma-separated host:port seeds of the proxies of this service (env CLUSTER_JOIN)")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	logger, err := logging.New(os.Stderr, *logFormat, *level)
	if err != nil {
		return err
	}
	cfg := proxy.Config{
		Logger:   logger,
		NodeName: *nodeName,
		Version:  version(),
	}
	if cfg.HTTPAddr, err = hostPort("http-host/http-port", *httpHost, *httpPort); err != nil {
		return err
	}
	if cfg.MetricsAddr, err = hostPort("metrics-port", *httpHost, *metricsPort); err != nil {
		return err
	}
	if cfg.FunctionAddr, err = hostPort("user-function-host/port", *fnHost, *fnPort); err != nil {
		return err
	}
	cfg.PassivationTimeout, err = positiveDuration("passivation-timeout", *passivation)
	if err != nil {
		return err
	}
	shutdownTimeout, err := positiveDuration("shutdown-timeout", *grace)
	if err != nil {
		return err
	}
	for _, s := range []struct {
		name string
		v    string
		dst  *int
	}{
		{"max-message-bytes", *maxMessage, &cfg.MaxMessageBytes},
		{"entity-queue-size", *queue, &cfg.EntityQueueSize},
		{"max-streams", *maxStreams, &cfg.MaxStreams},
		{"max-entities", *maxEntities, &cfg.MaxEntities},
	} {
		n, err := strconv.Atoi(s.v)
		if err != nil || n < 1 {
			return fmt.Errorf("%s: %q is not a positive number", s.name, s.v)
		}
		*s.dst = n
	}

	var cl *cluster.Cluster
	if *clusterPort != "" || *clusterJoin != "" {
		if cfg.NodeName == "" {
			return errors.New("node-name: empty")
		}
		host := *clusterHost
		if host == "" {
			host = *httpHost
		}
		// A restarted proxy starts with no replicas, so it must not pass
		// for its former self: its votes would be taken for the old ones.
		cfg.NodeName += "-" + nonce()
		cfg.Replicas = proxy.NewReplicas(crdt.NodeID(cfg.NodeName))
		if cl, err = newCluster(cfg, host, *clusterPort, *clusterJoin, cmp.Or(*clusterKey, os.Getenv("CLUSTER_KEY"))); err != nil {
			return err
		}
	}
	p, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cl != nil {
		if err := cl.Start(ctx); err != nil {
			_ = p.Shutdown(ctx)
			return err
		}
	}
	runErr := p.Run(ctx)
	stop()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err = errors.Join(runErr, p.Shutdown(shutdownCtx))
	if cl != nil {
		err = errors.Join(err, cl.Shutdown(shutdownCtx))
	}
	return err
}

// defaultClusterPort is the port of the cluster when only seeds are given.
const defaultClusterPort = 7946

// newCluster makes the cluster node that replicates cfg.Replicas and sends
// it every local change.
func newCluster(cfg proxy.Config, host, port, join, key string) (*cluster.Cluster, error) {
	if port == "" {
		port = strconv.Itoa(defaultClusterPort)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return nil, fmt.Errorf("cluster-port: %q is not a number in 0..65535", port)
	}
	var seeds []string
	for _, s := range strings.Split(join, ",") {
		if s = strings.TrimSpace(s); s != "" {
			seeds = append(seeds, s)
		}
	}
	var secret []byte
	if key != "" {
		if secret, err = base64.StdEncoding.DecodeString(strings.TrimSpace(key)); err != nil {
			return nil, fmt.Errorf("cluster-key: not base64: %w", err)
		}
		if l := len(secret); l != 16 && l != 24 && l != 32 {
			return nil, fmt.Errorf("cluster-key: decodes to %d bytes, want 16, 24 or 32", l)
		}
	}
	cl, err := cluster.New(cluster.Config{
		NodeName:  cfg.NodeName,
		BindAddr:  host,
		BindPort:  n,
		Join:      seeds,
		SecretKey: secret,
		Store:     cfg.Replicas.Store(),
		Logger:    cfg.Logger.With("component", "cluster"),
	})
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	cfg.Replicas.OnChange(func(c proxy.Change) {
		b, err := proxy.EncodeChange(c)
		if err != nil {
			log.Error("encode change for other proxies", "key", c.Key, "err", err)
			return
		}
		cl.Broadcast(c.Key, b)
	})
	return cl, nil
}

// nonce returns a short random string that tells process lifetimes apart.
func nonce() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// env returns the environment variable name, or def when it is unset.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// hostPort joins and validates a host and a port.
func hostPort(name, host, port string) (string, error) {
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("%s: port %q is not a number in 0..65535", name, port)
	}
	if host == "" {
		return "", fmt.Errorf("%s: empty host", name)
	}
	return net.JoinHostPort(host, port), nil
}

// positiveDuration parses a duration that must be above zero.
func positiveDuration(name, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive duration such as 30s", name, v)
	}
	return d, nil
}

// version is the module version the binary was built from.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
