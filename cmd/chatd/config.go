package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/chatd/chatd/authn"
)

// Config is everything chatd is told at start, from flags and CHATD_*
// environment variables.
type Config struct {
	Addr             string
	DataDir          string
	JWTSecret        string
	TokenTTL         time.Duration
	JWTLeeway        time.Duration
	SessionMax       time.Duration
	ExpiryWarning    time.Duration
	AllowedOrigins   string
	OpenRegistration bool
	MaxMessageBytes  int
	RateLimit        float64
	SendQueueBytes   int
	DrainTimeout     time.Duration
	NATS             string
	LogLevel         string
	LogFormat        string

	// Beyond the contract's table; documented in the README.
	History        string
	HistoryPerRoom int
	HistoryMaxAge  time.Duration
	MaxSockets     int
	MaxRooms       int
	PresenceLimit  int
	AuthRate       float64
	WSRateLimit    float64
	JWTPublicKey   string
	JWKS           string
	JWTIssuer      string
	JWTAudience    string
	BcryptCost     int
	PingInterval   time.Duration
	IdleTimeout    time.Duration
}

// newFlagSet declares chatd's flags on cfg.
func newFlagSet(name string, cfg *Config) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage:\n  chatd [flags]                         serve\n  chatd user add [--data-dir DIR] NAME  add a user; the password is the first line of stdin\n\nEvery flag can also be set with CHATD_<FLAG> (--token-ttl: CHATD_TOKEN_TTL); a flag wins.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Addr, "addr", ":3000", "listen address")
	fs.StringVar(&cfg.DataDir, "data-dir", "./chatd-data", "embedded store: users, history, revocations, generated secret")
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", "", "HS256 key, at least 32 bytes (default: generated once, kept in the data dir)")
	fs.StringVar(&cfg.JWTPublicKey, "jwt-public-key", "", "PEM file of an identity provider's public keys: its RS256 (RSA), ES256 (P-256) or EdDSA (Ed25519) tokens are accepted too")
	fs.StringVar(&cfg.JWKS, "jwks", "", "an identity provider's JWKS document (file or http(s) URL, loaded again every 10m): its RS256, ES256 or EdDSA tokens are accepted too")
	fs.StringVar(&cfg.JWTIssuer, "jwt-issuer", "", "the identity provider's iss, required of its tokens; needed with --jwt-public-key or --jwks, and not chatd (chatd's own tokens carry chatd)")
	fs.StringVar(&cfg.JWTAudience, "jwt-audience", authn.DefaultIssuer, "aud every token must hold; chatd's own tokens carry it")
	fs.DurationVar(&cfg.TokenTTL, "token-ttl", 15*time.Minute, "lifetime of issued tokens")
	fs.DurationVar(&cfg.JWTLeeway, "jwt-leeway", 0, "clock-skew allowance for exp, nbf and iat")
	fs.DurationVar(&cfg.SessionMax, "session-max", 24*time.Hour, "how long a chain of refreshes may extend one login")
	fs.DurationVar(&cfg.ExpiryWarning, "expiry-warning", 30*time.Second, "send the expiring frame this long before a socket's close (0: never)")
	fs.StringVar(&cfg.AllowedOrigins, "allowed-origins", "", "comma list of origins allowed to open /ws; * for any (default: the same host)")
	fs.BoolVar(&cfg.OpenRegistration, "open-registration", true, "whether POST /register creates accounts")
	fs.IntVar(&cfg.MaxMessageBytes, "max-message-bytes", 16384, "largest WebSocket message; larger closes 1009")
	fs.Float64Var(&cfg.RateLimit, "rate-limit", 20, "messages per second per socket (burst twice that)")
	fs.IntVar(&cfg.SendQueueBytes, "send-queue-bytes", 1<<20, "bytes queued to one socket before it is closed 4008")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 10*time.Second, "how long a graceful shutdown waits")
	fs.StringVar(&cfg.NATS, "nats", "", "NATS URL for cluster mode (empty: single node)")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", "", "console or json (default: console on a terminal, else json)")
	fs.StringVar(&cfg.History, "history", "bolt", "message store: bolt (durable, in the data dir) or memory")
	fs.IntVar(&cfg.HistoryPerRoom, "history-per-room", 10000, "messages kept per room")
	fs.DurationVar(&cfg.HistoryMaxAge, "history-max-age", 0, "drop messages older than this (0: keep by count only)")
	fs.IntVar(&cfg.MaxSockets, "max-sockets", 0, "open sockets before /ws answers 503 (0: no limit)")
	fs.IntVar(&cfg.MaxRooms, "max-rooms", 100, "rooms one socket may be in")
	fs.IntVar(&cfg.PresenceLimit, "presence-limit", 1000, "largest room whose members get presence join/leave events (0: none)")
	fs.Float64Var(&cfg.AuthRate, "auth-rate", 20, "POST /register and /auth requests per second per client address, burst twice that (0: no limit)")
	fs.Float64Var(&cfg.WSRateLimit, "ws-rate-limit", 0, "GET /ws requests per second per client address, burst twice that; past it 429 (0: no limit)")
	fs.IntVar(&cfg.BcryptCost, "bcrypt-cost", 10, "bcrypt cost of new password hashes (4-16)")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", 25*time.Second, "how often the server pings each socket")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 60*time.Second, "close a socket that sends nothing (not even a pong) this long")
	return fs
}

// parse fills cfg from args, with CHATD_<FLAG> variables for the flags the
// command line does not set: a flag wins over its variable. A bad flag is
// errUsage (the flag package has printed why); a bad variable is an error
// that says which.
func parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := "CHATD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" && !set[f.Name] {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// validate refuses settings chatd cannot run with.
func (c *Config) validate() error {
	var errs []error
	if c.JWTSecret != "" && len(c.JWTSecret) < authn.MinSecretBytes {
		errs = append(errs, fmt.Errorf("--jwt-secret is %d bytes; it must be at least %d (use a random value, e.g. `openssl rand -hex 32`)", len(c.JWTSecret), authn.MinSecretBytes))
	}
	if c.TokenTTL < time.Second {
		// exp is whole seconds: a shorter token would be expired when issued.
		errs = append(errs, errors.New("--token-ttl must be at least 1s"))
	}
	if c.JWTLeeway < 0 {
		errs = append(errs, errors.New("--jwt-leeway must not be negative"))
	}
	if c.SessionMax <= 0 {
		// Shorter than --token-ttl is allowed: it bounds refreshes, and the
		// login's own token still lives its TTL (README, Sessions).
		errs = append(errs, errors.New("--session-max must be positive"))
	}
	if c.MaxMessageBytes < 64 {
		errs = append(errs, errors.New("--max-message-bytes must be at least 64"))
	}
	if !(c.RateLimit > 0) || math.IsInf(c.RateLimit, 0) {
		errs = append(errs, errors.New("--rate-limit must be a positive number"))
	}
	if c.SendQueueBytes < 1024 {
		errs = append(errs, errors.New("--send-queue-bytes must be at least 1024"))
	}
	if c.History != "bolt" && c.History != "memory" {
		errs = append(errs, fmt.Errorf("--history %q: use bolt or memory", c.History))
	}
	if !(c.AuthRate >= 0) || math.IsInf(c.AuthRate, 0) {
		errs = append(errs, errors.New("--auth-rate must be a number, 0 or more (0: no limit)"))
	}
	if c.JWTAudience == "" {
		errs = append(errs, errors.New("--jwt-audience must not be empty"))
	}
	if c.JWTPublicKey != "" || c.JWKS != "" {
		if c.JWTIssuer == "" || c.JWTIssuer == authn.DefaultIssuer {
			errs = append(errs, errors.New("--jwt-issuer: give the identity provider's own iss (not chatd) with --jwt-public-key or --jwks"))
		}
	}
	if c.JWKS != "" && isURL(c.JWKS) {
		if u, err := url.Parse(c.JWKS); err != nil || !trustedURL(u) {
			errs = append(errs, fmt.Errorf("--jwks %s: fetch keys over https (plain http only from this machine)", redacted(c.JWKS)))
		}
	}
	if !(c.WSRateLimit >= 0) || math.IsInf(c.WSRateLimit, 0) {
		errs = append(errs, errors.New("--ws-rate-limit must be a number, 0 or more (0: no limit)"))
	}
	if c.ExpiryWarning < 0 {
		errs = append(errs, errors.New("--expiry-warning must not be negative (0: no expiring frame)"))
	}
	if c.PresenceLimit < 0 {
		errs = append(errs, errors.New("--presence-limit must not be negative (0: no presence events)"))
	}
	if c.MaxRooms < 1 {
		errs = append(errs, errors.New("--max-rooms must be at least 1"))
	}
	if c.MaxSockets < 0 {
		errs = append(errs, errors.New("--max-sockets must not be negative (0: no limit)"))
	}
	if c.PingInterval < time.Second || c.IdleTimeout < time.Second {
		errs = append(errs, errors.New("--ping-interval and --idle-timeout must be at least 1s"))
	} else if c.IdleTimeout <= c.PingInterval {
		// A quiet client answers pings only: it would be dropped before
		// the next one came.
		errs = append(errs, errors.New("--idle-timeout must be longer than --ping-interval"))
	}
	if c.DrainTimeout <= 0 {
		errs = append(errs, errors.New("--drain-timeout must be positive"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	for _, o := range c.origins() {
		if o != "*" && !strings.Contains(o, "://") {
			errs = append(errs, fmt.Errorf("--allowed-origins: %q is not an origin (scheme://host[:port], or *)", o))
		}
	}
	if c.HistoryPerRoom < 1 {
		errs = append(errs, errors.New("--history-per-room must be at least 1"))
	}
	if c.HistoryMaxAge < 0 || (c.HistoryMaxAge > 0 && c.HistoryMaxAge < time.Second) {
		errs = append(errs, errors.New("--history-max-age must be 0 (keep by count only) or at least 1s"))
	}
	if c.BcryptCost < 4 || c.BcryptCost > 16 {
		// Every login (and chatd's start) pays one hash: at 16 that is
		// seconds on a fast core already, and each step doubles it.
		errs = append(errs, errors.New("--bcrypt-cost must be 4-16"))
	}
	if c.NATS != "" {
		errs = append(errs, errors.New("--nats: cluster mode is not built yet; run without --nats for a single node"))
	}
	return errors.Join(errs...)
}

// origins splits --allowed-origins.
func (c *Config) origins() []string {
	var out []string
	for _, o := range strings.Split(c.AllowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, strings.TrimRight(o, "/"))
		}
	}
	return out
}
