package imageverify

import (
	"errors"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus"
)

type v1Hash = v1.Hash

type metrics struct {
	latency   prometheus.Histogram
	decisions *prometheus.CounterVec
	cache     *prometheus.CounterVec
	requests  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mcp_warden_image_verification_seconds", Help: "Time to decide on an image, cache hits included.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcp_warden_image_decisions_total", Help: "Image decisions by reason (Allowed or the failed check)."}, []string{"reason"}),
		cache:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcp_warden_image_cache_total", Help: "Verification cache lookups by result (hit, miss)."}, []string{"result"}),
		requests:  prometheus.NewCounter(prometheus.CounterOpts{Name: "mcp_warden_registry_requests_total", Help: "HTTP requests sent to registries."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.latency, m.decisions, m.cache, m.requests} {
			_ = reg.Register(c)
		}
	}
	return m
}

func (m metrics) decision(err error) {
	reason := "Allowed"
	var d *Denial
	if errors.As(err, &d) {
		reason = string(d.Check)
	} else if err != nil {
		reason = "Error"
	}
	m.decisions.WithLabelValues(reason).Inc()
}
