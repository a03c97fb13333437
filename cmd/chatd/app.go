package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/chatd/chatd/assets"
	"github.com/chatd/chatd/authn"
	"github.com/chatd/chatd/broker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// app is chatd wired together: the store, authn, the broker and the HTTP
// routes. Tests serve its handler with httptest.
type app struct {
	log     zerolog.Logger
	db      *bolt.DB
	history broker.History
	broker  *broker.Broker
	handler http.Handler

	admin    *adminServer       // `chatd user add` beside this chatd; nil if the socket could not be made
	stopKeys context.CancelFunc // ends the outside keys' reloading
	keysDone chan struct{}      // closed when the reloading has ended
}

// newApp opens the store in cfg.DataDir and builds every part.
func newApp(cfg Config, log zerolog.Logger) (a *app, err error) {
	db, err := openStore(cfg.DataDir, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	secret := []byte(cfg.JWTSecret)
	if len(secret) == 0 {
		if secret, err = authn.LoadOrCreateSecret(db); err != nil {
			return nil, err
		}
	}
	revoked, err := authn.NewRevocations(db, nil)
	if err != nil {
		return nil, err
	}
	outside := newOutsideKeys(cfg.JWTPublicKey, cfg.JWKS)
	publicKeys, err := outside.load(context.Background())
	if err != nil {
		return nil, err
	}
	tokens, err := authn.NewTokens(authn.TokenConfig{
		Secret: secret, TTL: cfg.TokenTTL, SessionMax: cfg.SessionMax, Leeway: cfg.JWTLeeway, Revoked: revoked,
		Audience: cfg.JWTAudience, PublicKeys: publicKeys, ExternalIssuer: cfg.JWTIssuer, OnUnknownKey: outside.unknownKey,
	})
	if err != nil {
		return nil, err
	}
	users, err := authn.NewUsers(db, cfg.BcryptCost)
	if err != nil {
		return nil, err
	}
	history, err := openHistory(cfg, db, log)
	if err != nil {
		return nil, err
	}
	admin, err := serveAdmin(cfg.DataDir, users, log.With().Str("component", "admin").Logger())
	if err != nil {
		// chatd serves without it; `chatd user add` then waits for a stop.
		log.Warn().Str("component", "admin").Err(err).Msg("chatd user add will not reach this chatd")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := cfg.brokerOptions()
	opts.Verifier, opts.History, opts.Log, opts.Metrics = tokens, history, log, reg
	b := broker.New(opts)
	authRate := cfg.AuthRate
	if authRate == 0 {
		authRate = -1 // authn's "no limit"
	}
	auth := authn.NewService(users, tokens, revoked, authn.ServiceConfig{
		OpenRegistration:  cfg.OpenRegistration,
		RequestsPerSecond: authRate,
		Burst:             max(1, int(2*cfg.AuthRate)),
		OnRevoke:          b.Revoke,
		Log:               log.With().Str("component", "authn").Logger(),
	})

	mux := http.NewServeMux()
	auth.Register(mux)
	mux.Handle("/ws", b)
	mux.Handle("/healthz", readOnly(func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, http.StatusOK, "ok")
	}))
	mux.Handle("/readyz", readOnly(func(w http.ResponseWriter, r *http.Request) {
		if b.Draining() {
			writeStatus(w, http.StatusServiceUnavailable, "draining")
			return
		}
		writeStatus(w, http.StatusOK, "ready")
	}))
	mux.Handle("/metrics", readOnly(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}).ServeHTTP))
	mux.Handle("/", assets.Handler())

	ctx, stopKeys := context.WithCancel(context.Background())
	keysDone := make(chan struct{})
	if outside.configured() {
		go func() {
			defer close(keysDone)
			outside.refresh(ctx, tokens, log.With().Str("component", "authn").Logger())
		}()
	} else {
		close(keysDone)
	}
	return &app{
		log:      log,
		db:       db,
		history:  history,
		broker:   b,
		handler:  accessLog(log.With().Str("component", "http").Logger(), mux),
		admin:    admin,
		stopKeys: stopKeys,
		keysDone: keysDone,
	}, nil
}

// close flushes the history and closes the store. Every acked message is
// already stored; this writes those still waiting for their commit.
func (a *app) close() error {
	a.stopKeys()
	<-a.keysDone // no reload logs after close
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	a.stopAdmin(ctx)
	a.broker.Close()
	herr := a.history.Close()
	derr := a.db.Close()
	if herr != nil {
		return fmt.Errorf("flush history: %w", herr)
	}
	if derr != nil {
		return fmt.Errorf("close store: %w", derr)
	}
	return nil
}

// stopAdmin closes the admin socket, letting a user add in flight finish
// until ctx ends.
func (a *app) stopAdmin(ctx context.Context) {
	if a.admin != nil {
		a.admin.close(ctx)
		a.admin = nil
	}
}

// readOnly serves GET and HEAD with h, and answers any other method 405.
func readOnly(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			authn.WriteMethodNotAllowed(w, "GET, HEAD")
			return
		}
		h(w, r)
	})
}

// brokerOptions are the broker's settings from the flags.
func (c *Config) brokerOptions() broker.Options {
	return broker.Options{
		AllowedOrigins:  c.origins(),
		MaxMessageBytes: c.MaxMessageBytes,
		RateLimit:       c.RateLimit,
		UpgradeRate:     c.WSRateLimit,
		SendQueueBytes:  c.SendQueueBytes,
		ExpiryWarning:   zeroIsNone(c.ExpiryWarning),
		Leeway:          c.JWTLeeway,
		MaxRooms:        c.MaxRooms,
		PresenceLimit:   zeroIsNone(c.PresenceLimit),
		MaxSockets:      c.MaxSockets,
		PingInterval:    c.PingInterval,
		IdleTimeout:     c.IdleTimeout,
	}
}

// zeroIsNone turns a flag's 0, which means "none" on the command line,
// into the negative value that means it to the broker (whose zero option
// is "the default").
func zeroIsNone[T int | time.Duration](v T) T {
	if v == 0 {
		return -1
	}
	return v
}
