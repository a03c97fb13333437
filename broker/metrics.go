package broker

import "github.com/prometheus/client_golang/prometheus"

// metrics are the broker's Prometheus series.
type metrics struct {
	sockets     prometheus.Gauge
	handshakes  *prometheus.CounterVec // by result
	upgraded    prometheus.Counter     // handshakes{result="ok"}, resolved once: it is counted per handshake
	messages    prometheus.Counter
	deliveries  prometheus.Counter
	closes      *prometheus.CounterVec // by close code
	errorFrames *prometheus.CounterVec // error frames sent, by code
}

// newMetrics registers the broker's series with reg; parked counts the
// sockets whose read loop is parked.
func newMetrics(reg prometheus.Registerer, parked func() int) *metrics {
	m := &metrics{
		sockets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatd_sockets", Help: "Open authenticated WebSocket connections.",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatd_handshakes_total", Help: "WebSocket upgrade attempts by result.",
		}, []string{"result"}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatd_messages_total", Help: "Chat messages accepted and sequenced.",
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatd_deliveries_total", Help: "Message frames queued to sockets by fan-out.",
		}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatd_server_closes_total", Help: "Sockets closed by the server, by close code.",
		}, []string{"code"}),
		errorFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatd_errors_total", Help: "Error frames sent, by code.",
		}, []string{"code"}),
	}
	if reg != nil {
		reg.MustRegister(m.sockets, m.handshakes, m.messages, m.deliveries, m.closes, m.errorFrames)
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chatd_parked_sockets", Help: "Open sockets with nothing to read, held by the parker instead of a goroutine.",
		}, func() float64 { return float64(parked()) }))
	}
	m.upgraded = m.handshakes.WithLabelValues("ok")
	return m
}
