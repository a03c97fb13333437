package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/rs/zerolog"
)

// outsideKeys are the sources of an outside identity provider's public
// keys: --jwt-public-key (a PEM file) and --jwks (a JWKS file or URL).
type outsideKeys struct {
	pemFile string
	jwks    string
	client  *http.Client
	every   time.Duration // how often the keys are loaded again
	gap     time.Duration // the least time between two loads on unknown kids
	again   chan struct{} // a token named an unknown kid: load soon
}

// jwksRefresh is how often the keys are loaded again, so that a provider's
// key rotation reaches chatd without a restart; a token with a kid chatd
// does not know brings the next load forward, but not to less than
// minReload after the last.
const (
	jwksRefresh = 10 * time.Minute
	minReload   = 30 * time.Second
)

func newOutsideKeys(pemFile, jwks string) *outsideKeys {
	return &outsideKeys{
		pemFile: pemFile,
		jwks:    jwks,
		client: &http.Client{
			Timeout: 10 * time.Second,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if !trustedURL(req.URL) {
					return fmt.Errorf("a redirect to %s, which is neither https nor loopback", req.URL.Redacted())
				}
				return nil
			},
		},
		every: jwksRefresh,
		gap:   minReload,
		again: make(chan struct{}, 1),
	}
}

// trustedURL reports whether keys may be fetched from u: over https, or
// plain http to this machine. Anyone on the path of a plain http fetch
// could hand chatd a key of their own.
func trustedURL(u *url.URL) bool {
	if u.Scheme == "https" {
		return true
	}
	if u.Scheme != "http" {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(u.Hostname())
	return err == nil && ip.IsLoopback()
}

// unknownKey asks for an early load; it never blocks.
func (o *outsideKeys) unknownKey() {
	select {
	case o.again <- struct{}{}:
	default:
	}
}

// maxJWKSBytes bounds a fetched JWKS document.
const maxJWKSBytes = 1 << 20

func (o *outsideKeys) configured() bool { return o.pemFile != "" || o.jwks != "" }

// load reads every source; any failure is an error (at start, chatd
// refuses to run without the keys it was told to use).
func (o *outsideKeys) load(ctx context.Context) ([]authn.PublicKey, error) {
	var keys []authn.PublicKey
	if o.pemFile != "" {
		data, err := os.ReadFile(o.pemFile)
		if err != nil {
			return nil, fmt.Errorf("--jwt-public-key: %w", err)
		}
		k, err := authn.ParsePEMKeys(data)
		if err != nil {
			return nil, fmt.Errorf("--jwt-public-key %s: %w", o.pemFile, err)
		}
		keys = append(keys, k...)
	}
	if o.jwks != "" {
		data, err := o.readJWKS(ctx)
		if err != nil {
			return nil, fmt.Errorf("--jwks %s: %w", redacted(o.jwks), err)
		}
		k, err := authn.ParseJWKS(data)
		if err != nil {
			return nil, fmt.Errorf("--jwks %s: %w", redacted(o.jwks), err)
		}
		keys = append(keys, k...)
	}
	return keys, nil
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://")
}

// redacted is s without a URL's password, for messages and logs.
func redacted(s string) string {
	if u, err := url.Parse(s); err == nil && isURL(s) {
		return u.Redacted()
	}
	return s
}

// readJWKS reads the --jwks file, or fetches the URL.
func (o *outsideKeys) readJWKS(ctx context.Context) ([]byte, error) {
	if !isURL(o.jwks) {
		return os.ReadFile(o.jwks)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.jwks, nil) // o.client bounds its time
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("the document is over %d bytes", maxJWKSBytes)
	}
	return data, nil
}

// refresh loads the keys into tokens again every o.every, and after an
// unknown kid (o.gap after the last load at the soonest), until ctx
// ends. A failed load keeps the keys in use, and says so.
func (o *outsideKeys) refresh(ctx context.Context, tokens *authn.Tokens, log zerolog.Logger) {
	tick := time.NewTicker(o.every)
	defer tick.Stop()
	last := time.Now()
	var soon <-chan time.Time // an early load is due then
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-o.again:
			if wait := time.Until(last.Add(o.gap)); wait > 0 {
				if soon == nil {
					soon = time.After(wait)
				}
				continue
			}
		case <-soon:
		}
		soon = nil
		last = time.Now()
		keys, err := o.load(ctx)
		if err != nil {
			log.Warn().Err(err).Msg("outside keys not reloaded; keeping the ones in use")
			continue
		}
		tokens.SetPublicKeys(keys)
		log.Debug().Int("keys", len(keys)).Msg("outside keys reloaded")
	}
}
