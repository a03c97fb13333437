package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
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
}

// jwksRefresh is how often the keys are loaded again, so that a provider's
// key rotation reaches chatd without a restart.
const jwksRefresh = 10 * time.Minute

// maxJWKSBytes bounds a fetched JWKS document.
const maxJWKSBytes = 1 << 20

func (o outsideKeys) configured() bool { return o.pemFile != "" || o.jwks != "" }

// load reads every source; any failure is an error (at start, chatd
// refuses to run without the keys it was told to use).
func (o outsideKeys) load(ctx context.Context) ([]authn.PublicKey, error) {
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
			return nil, fmt.Errorf("--jwks %s: %w", o.jwks, err)
		}
		k, err := authn.ParseJWKS(data)
		if err != nil {
			return nil, fmt.Errorf("--jwks %s: %w", o.jwks, err)
		}
		keys = append(keys, k...)
	}
	return keys, nil
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://")
}

// readJWKS reads the --jwks file, or fetches the URL.
func (o outsideKeys) readJWKS(ctx context.Context) ([]byte, error) {
	if !isURL(o.jwks) {
		return os.ReadFile(o.jwks)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.jwks, nil)
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

// refresh loads the keys into tokens again every jwksRefresh until ctx
// ends. A failed load keeps the keys in use, and says so.
func (o outsideKeys) refresh(ctx context.Context, tokens *authn.Tokens, log zerolog.Logger) {
	tick := time.NewTicker(jwksRefresh)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		keys, err := o.load(ctx)
		if err != nil {
			log.Warn().Err(err).Msg("outside keys not reloaded; keeping the ones in use")
			continue
		}
		tokens.SetPublicKeys(keys)
		log.Debug().Int("keys", len(keys)).Msg("outside keys reloaded")
	}
}
