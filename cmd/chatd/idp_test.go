package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// idpToken is a token an outside identity provider signs for chatd.
func idpToken(t *testing.T, m jwt.SigningMethod, key any, kid, iss string) string {
	t.Helper()
	now := time.Now()
	tok := jwt.NewWithClaims(m, jwt.MapClaims{
		"iss": iss, "aud": "chatd", "sub": "idp-42", "name": "idp_carol", "jti": base64.RawURLEncoding.EncodeToString(big.NewInt(now.UnixNano()).Bytes()),
		"sid": "idp-session", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Minute).Unix(),
	})
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOutsideIdentityProvider: with --jwks (a URL) and --jwt-public-key (a
// PEM file), sockets open with RS256 and EdDSA tokens an identity provider
// signed, with its iss; its tokens with chatd's iss, and tokens of keys
// chatd was not given, are refused; chatd's own tokens keep working.
func TestOutsideIdentityProvider(t *testing.T) {
	const iss = "https://idp.example"
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var fetches atomic.Int32
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256",
			"n": base64.RawURLEncoding.EncodeToString(rsaKey.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(rsaKey.E)).Bytes()),
		}}})
	}))
	defer jwks.Close()
	der, err := x509.MarshalPKIXPublicKey(edKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(t.TempDir(), "idp.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}

	p := startChatd(t, t.TempDir(), "--jwks", jwks.URL, "--jwt-public-key", pemFile, "--jwt-issuer", iss)
	if fetches.Load() == 0 {
		t.Fatal("chatd started without fetching the JWKS")
	}
	for name, tok := range map[string]string{
		"RS256 from the JWKS": idpToken(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", iss),
		"EdDSA from the PEM":  idpToken(t, jwt.SigningMethodEdDSA, edKey, "", iss),
		"RS256 without a kid": idpToken(t, jwt.SigningMethodRS256, rsaKey, "", iss),
	} {
		c, err := p.dialWS(t, dialOpts{header: http.Header{"Authorization": {"Bearer " + tok}}})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if w, err := c.next(5 * time.Second); err != nil || w.typ() != "welcome" || w["user"] != "idp_carol" {
			t.Errorf("%s: first frame %v (%v), want the welcome of idp_carol", name, w, err)
		}
		c.conn.NetConn().Close()
	}

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	for name, tok := range map[string]string{
		"the provider's key, chatd's iss": idpToken(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", "chatd"),
		"a key chatd was not given":       idpToken(t, jwt.SigningMethodRS256, other, "", iss),
		"an unknown kid":                  idpToken(t, jwt.SigningMethodRS256, rsaKey, "rsa-2", iss),
	} {
		_, err := p.dialWS(t, dialOpts{header: http.Header{"Authorization": {"Bearer " + tok}}})
		if err == nil {
			t.Errorf("%s: the socket opened", name)
		}
	}

	// chatd does not refresh the provider's tokens (the provider does),
	// but a socket takes a fresh one from it in a refresh frame.
	rsaTok := idpToken(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", iss)
	status, body := postJSON(t, p.url("/auth/refresh"), nil, rsaTok)
	if status != http.StatusUnauthorized || !strings.Contains(string(body), `"invalid_token"`) {
		t.Errorf("/auth/refresh with the provider's token: %d %s, want 401 invalid_token", status, body)
	}
	c := p.dial(t, rsaTok, nil)
	if err := c.send(map[string]any{"type": "refresh", "token": idpToken(t, jwt.SigningMethodEdDSA, edKey, "", iss)}); err != nil {
		t.Fatal(err)
	}
	f, err := c.next(5 * time.Second)
	for err == nil && f.typ() == "presence" { // the earlier sockets' comings and goings
		f, err = c.next(5 * time.Second)
	}
	if err != nil || f.typ() != "refreshed" {
		t.Errorf("refresh frame with the provider's next token: %v (%v), want refreshed", f, err)
	}

	p.register(t, "own_alice", "alice-password")
	p.dial(t, p.login(t, "own_alice", "alice-password"), nil)
	p.stop()
}

// TestOutsideKeysMustLoad: chatd does not start without the keys it was
// told to use.
func TestOutsideKeysMustLoad(t *testing.T) {
	gone := httptest.NewServer(http.NotFoundHandler())
	defer gone.Close()
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	away := httptest.NewServer(http.RedirectHandler("http://192.0.2.1/jwks", http.StatusFound))
	defer away.Close()
	for _, args := range [][]string{
		{"--jwks", gone.URL, "--jwt-issuer", "https://idp.example", "404"},
		{"--jwks", away.URL, "--jwt-issuer", "https://idp.example", "redirect"},
		{"--jwks", "http://192.0.2.1/jwks", "--jwt-issuer", "https://idp.example", "https"},
		{"--jwt-public-key", bad, "--jwt-issuer", "https://idp.example", "PEM"},
		{"--jwt-public-key", filepath.Join(t.TempDir(), "missing.pem"), "--jwt-issuer", "https://idp.example", "missing.pem"},
		{"--jwt-public-key", bad, "--jwt-issuer", "chatd", "--jwt-issuer"},
		{"--jwt-public-key", bad, "--jwt-audience", "chatd", "--jwt-issuer"},
	} {
		code, out := runChatd(t, nil, "", append(chatdArgs(t.TempDir()), args[:4]...)...)
		requireCleanFailure(t, code, out, args[4])
	}
}
