package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"
)

// rotatingJWKS serves one RSA key under kid "k<N>", N the current key's
// number; fetched reports each fetch.
type rotatingJWKS struct {
	keys    []*rsa.PrivateKey
	current atomic.Int32
	fetched chan int32
}

func (j *rotatingJWKS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := j.current.Load()
	k := j.keys[n]
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "k" + string(rune('0'+n)), "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
	}}})
	select {
	case j.fetched <- n:
	default:
	}
}

// A provider's key rotation reaches chatd without a restart: on the
// periodic load, and sooner when a token names a kid chatd does not know.
func TestOutsideKeysReload(t *testing.T) {
	j := &rotatingJWKS{fetched: make(chan int32, 16)}
	for range 2 {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		j.keys = append(j.keys, k)
	}
	srv := httptest.NewServer(j)
	defer srv.Close()

	for _, tc := range []struct {
		name       string
		every, gap time.Duration
	}{
		{"periodic", 50 * time.Millisecond, time.Hour},
		{"on an unknown kid", time.Hour, 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j.current.Store(0)
			o := newOutsideKeys("", srv.URL)
			o.every, o.gap = tc.every, tc.gap
			keys, err := o.load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			<-j.fetched
			tokens, err := authn.NewTokens(authn.TokenConfig{
				Secret: []byte(strings.Repeat("s", 32)), PublicKeys: keys, ExternalIssuer: "idp", OnUnknownKey: o.unknownKey,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go o.refresh(ctx, tokens, zerolog.Nop())

			j.current.Store(1) // the provider rotates
			next := idpToken(t, jwt.SigningMethodRS256, j.keys[1], "k1", "idp")
			if _, err := tokens.Verify(next); err == nil {
				t.Fatal("the new key verified before chatd loaded it")
			}
			deadline := time.After(10 * time.Second)
		wait:
			for {
				select {
				case n := <-j.fetched:
					if n == 1 {
						break wait
					}
				case <-deadline:
					t.Fatal("chatd did not load the keys again")
				}
			}
			for _, err := tokens.Verify(next); err != nil; _, err = tokens.Verify(next) {
				select { // the load is fetched; SetPublicKeys follows
				case <-deadline:
					t.Fatalf("the new key never verified: %v", err)
				case <-time.After(time.Millisecond):
				}
			}
			if _, err := tokens.Verify(idpToken(t, jwt.SigningMethodRS256, j.keys[0], "k0", "idp")); err == nil {
				t.Error("the withdrawn key still verifies")
			}
		})
	}
}

// A JWKS document past the size cap is refused, not read whole.
func TestOutsideKeysSizeCap(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"keys":[],"pad":"` + strings.Repeat("x", maxJWKSBytes) + `"}`))
	}))
	defer srv.Close()
	if _, err := newOutsideKeys("", srv.URL).load(context.Background()); err == nil || !strings.Contains(err.Error(), "over") {
		t.Fatalf("load of an oversized JWKS: %v", err)
	}
}
