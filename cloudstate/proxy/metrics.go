package proxy

import (
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the proxy's Prometheus metrics, in a registry of its own so
// that several proxies can live in one process.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	entities prometheus.Gauge
	streams  prometheus.Gauge
	errors   *prometheus.CounterVec
	ready    prometheus.Gauge
}

func newMetrics() (*metrics, error) {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cloudstate_proxy_requests_total",
			Help: "Requests served, by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cloudstate_proxy_request_duration_seconds",
			Help:    "Time to serve a request (the whole call for server streams), by method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"method"}),
		entities: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cloudstate_proxy_active_entities",
			Help: "Entities with a live handle stream or in deleted mode.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cloudstate_proxy_open_streams",
			Help: "Server-streamed calls open at the front door.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cloudstate_proxy_errors_total",
			Help: "Errors by kind: discovery, protocol, entity_crash, function_failure, side_effect.",
		}, []string{"kind"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cloudstate_proxy_ready",
			Help: "1 while the user function is discovered and reachable.",
		}),
	}
	for _, c := range []prometheus.Collector{
		m.requests, m.latency, m.entities, m.streams, m.errors, m.ready,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// observe records one finished request.
func (m *metrics) observe(procedure string, err error, d time.Duration) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	m.requests.WithLabelValues(procedure, code).Inc()
	m.latency.WithLabelValues(procedure).Observe(d.Seconds())
}

// handler serves the metrics in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
