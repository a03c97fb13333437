package authn_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/golang-jwt/jwt/v5"
)

// signers are an outside identity provider's private keys, one per
// algorithm chatd verifies.
type signers struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
}

func newSigners(t *testing.T) signers {
	t.Helper()
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, d, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signers{rsa: r, ec: e, ed: d}
}

func pemOf(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwks is the providers' public keys as a JWKS document, with kids, and
// keys chatd must skip around them.
func (s signers) jwks(t *testing.T) []byte {
	t.Helper()
	ecPoint, err := s.ec.PublicKey.Bytes() // 0x04 || x || y
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "enc", "use": "enc", "n": b64(s.rsa.N.Bytes()), "e": "AQAB"},
		{"kty": "RSA", "kid": "r512", "alg": "RS512", "n": b64(s.rsa.N.Bytes()), "e": "AQAB"},
		{"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
		{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
		{"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "n": b64(s.rsa.N.Bytes()), "e": b64(big.NewInt(int64(s.rsa.E)).Bytes())},
		{"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(ecPoint[1:33]), "y": b64(ecPoint[33:])},
		{"kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": b64(s.ed.Public().(ed25519.PublicKey))},
	}}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParsePEMKeys(t *testing.T) {
	s := newSigners(t)
	keys, err := authn.ParsePEMKeys([]byte(pemOf(t, &s.rsa.PublicKey) + pemOf(t, &s.ec.PublicKey) + pemOf(t, s.ed.Public())))
	if err != nil {
		t.Fatal(err)
	}
	var algs []string
	for _, k := range keys {
		algs = append(algs, k.Alg)
	}
	if strings.Join(algs, ",") != "RS256,ES256,EdDSA" {
		t.Fatalf("algs %v", algs)
	}

	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(s.rsa)
	for name, data := range map[string]string{
		"RSA 1024":    pemOf(t, &small.PublicKey),
		"P-384":       pemOf(t, &p384.PublicKey),
		"private key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"no PEM":      "not a key",
	} {
		if _, err := authn.ParsePEMKeys([]byte(data)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseJWKS(t *testing.T) {
	s := newSigners(t)
	keys, err := authn.ParseJWKS(s.jwks(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, k.KeyID+":"+k.Alg)
	}
	if strings.Join(got, ",") != "r1:RS256,e1:ES256,d1:EdDSA" {
		t.Fatalf("keys %v, want the three signing keys and none of the others", got)
	}
	for name, doc := range map[string]string{
		"not JSON":       `{"keys":`,
		"no usable key":  `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`,
		"bad modulus":    `{"keys":[{"kty":"RSA","n":"!!","e":"AQAB"}]}`,
		"even exponent":  `{"keys":[{"kty":"RSA","n":"` + b64(s.rsa.N.Bytes()) + `","e":"Ag"}]}`,
		"off the curve":  `{"keys":[{"kty":"EC","crv":"P-256","x":"` + b64(make([]byte, 32)) + `","y":"` + b64(make([]byte, 32)) + `"}]}`,
		"short Ed25519":  `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}`,
		"small RSA":      `{"keys":[{"kty":"RSA","n":"` + b64(big.NewInt(1<<62+1).Bytes()) + `","e":"AQAB"}]}`,
		"empty key list": `{"keys":[]}`,
	} {
		if _, err := authn.ParseJWKS([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// outsideClaims are the claims an identity provider must put in a token
// for chatd: the same as chatd's own, with the provider's iss.
func outsideClaims(iss string, exp time.Time) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": iss, "aud": "chatd", "sub": "idp-user-7", "name": "carol",
		"jti": "j-" + b64([]byte(now.String())), "sid": "idp-session",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix(),
	}
}

func signWith(t *testing.T, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const idp = "https://idp.example"

func TestOutsideTokens(t *testing.T) {
	s := newSigners(t)
	keys, err := authn.ParseJWKS(s.jwks(t))
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte(strings.Repeat("k", 32))
	tokens, err := authn.NewTokens(authn.TokenConfig{Secret: secret, PublicKeys: keys, ExternalIssuer: idp})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Minute)
	good := outsideClaims(idp, exp)
	for _, tc := range []struct {
		name string
		m    jwt.SigningMethod
		key  any
		kid  string
	}{
		{"RS256", jwt.SigningMethodRS256, s.rsa, "r1"},
		{"RS256 without kid", jwt.SigningMethodRS256, s.rsa, ""},
		{"ES256", jwt.SigningMethodES256, s.ec, "e1"},
		{"EdDSA", jwt.SigningMethodEdDSA, s.ed, "d1"},
	} {
		c, err := tokens.Verify(signWith(t, tc.m, tc.key, tc.kid, good))
		if err != nil || c.Name != "carol" || c.Subject != "idp-user-7" {
			t.Errorf("%s: %v %v", tc.name, c, err)
		}
	}
	// chatd's own tokens still verify, with chatd's iss.
	own, err := tokens.Issue(&authn.User{ID: "u1", Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Verify(own.Token); err != nil {
		t.Fatalf("chatd's own token: %v", err)
	}

	rsaPEM := []byte(pemOf(t, &s.rsa.PublicKey))
	other := newSigners(t)
	for _, tc := range []struct {
		name  string
		token string
	}{
		{"the provider's key, chatd's iss", signWith(t, jwt.SigningMethodRS256, s.rsa, "r1", outsideClaims("chatd", exp))},
		{"chatd's secret, the provider's iss", signWith(t, jwt.SigningMethodHS256, secret, "", outsideClaims(idp, exp))},
		{"HS256 keyed with the public key (alg confusion)", signWith(t, jwt.SigningMethodHS256, rsaPEM, "r1", good)},
		{"an unknown kid", signWith(t, jwt.SigningMethodRS256, s.rsa, "r9", good)},
		{"a kid of another algorithm", signWith(t, jwt.SigningMethodRS256, s.rsa, "e1", good)},
		{"another provider's key", signWith(t, jwt.SigningMethodRS256, other.rsa, "", good)},
		{"RS512, not configured", signWith(t, jwt.SigningMethodRS512, s.rsa, "r512", good)},
		{"alg none", signWith(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", good)},
	} {
		if _, err := tokens.Verify(tc.token); !errors.Is(err, authn.ErrInvalidToken) {
			t.Errorf("%s: %v, want ErrInvalidToken", tc.name, err)
		}
	}
	expired := outsideClaims(idp, time.Now().Add(-time.Minute))
	if _, err := tokens.Verify(signWith(t, jwt.SigningMethodEdDSA, s.ed, "d1", expired)); !errors.Is(err, authn.ErrTokenExpired) {
		t.Errorf("expired EdDSA token: %v, want ErrTokenExpired", err)
	}

	// Without outside keys, only HS256 is accepted, whatever is set later.
	plain, err := authn.NewTokens(authn.TokenConfig{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	plain.SetPublicKeys(keys)
	if _, err := plain.Verify(signWith(t, jwt.SigningMethodRS256, s.rsa, "r1", outsideClaims("chatd", exp))); !errors.Is(err, authn.ErrInvalidToken) {
		t.Errorf("RS256 without configured keys: %v, want ErrInvalidToken", err)
	}
}

// The rules around outside keys that TestOutsideTokens does not reach.
func TestOutsideTokenRules(t *testing.T) {
	s := newSigners(t)
	pemKeys, err := authn.ParsePEMKeys([]byte(pemOf(t, &s.rsa.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte(strings.Repeat("k", 32))
	for _, iss := range []string{"", "chatd"} {
		if _, err := authn.NewTokens(authn.TokenConfig{Secret: secret, PublicKeys: pemKeys, ExternalIssuer: iss}); err == nil {
			t.Errorf("outside keys with the provider's iss %q: accepted, want the provider's own", iss)
		}
	}
	var unknown atomic.Int32
	tokens, err := authn.NewTokens(authn.TokenConfig{Secret: secret, PublicKeys: pemKeys, ExternalIssuer: idp, OnUnknownKey: func() { unknown.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Minute)

	// A PEM key has no kid: it verifies a token whatever kid it names.
	c, err := tokens.Verify(signWith(t, jwt.SigningMethodRS256, s.rsa, "some-kid", outsideClaims(idp, exp)))
	if err != nil || !c.External {
		t.Fatalf("a kid against a PEM key: %v %v", c, err)
	}
	// The provider's tokens are refreshed by the provider.
	if _, err := tokens.Refresh(c); !errors.Is(err, authn.ErrOutsideRefresh) {
		t.Errorf("Refresh of a provider's token: %v, want ErrOutsideRefresh", err)
	}

	badName := outsideClaims(idp, exp)
	badName["name"] = "<b>\u202eevil"
	numericKid := jwt.NewWithClaims(jwt.SigningMethodRS256, outsideClaims(idp, exp))
	numericKid.Header["kid"] = 7
	numeric, err := numericKid.SignedString(s.rsa)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{
		"a name that is not a username": signWith(t, jwt.SigningMethodRS256, s.rsa, "", badName),
		"a kid that is not a string":    numeric,
		"ES256 with only an RSA key":    signWith(t, jwt.SigningMethodES256, s.ec, "e1", outsideClaims(idp, exp)),
	} {
		if _, err := tokens.Verify(tok); !errors.Is(err, authn.ErrInvalidToken) {
			t.Errorf("%s: %v, want ErrInvalidToken", name, err)
		}
	}
	if unknown.Load() == 0 {
		t.Error("a kid no key has did not ask for the keys again")
	}
}

// JWKS members that decide whether a key is used at all.
func TestJWKSKeyFilters(t *testing.T) {
	s := newSigners(t)
	n, e := b64(s.rsa.N.Bytes()), b64(big.NewInt(int64(s.rsa.E)).Bytes())
	ed := b64(s.ed.Public().(ed25519.PublicKey))
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	keys, err := authn.ParseJWKS([]byte(`{"keys":[
		{"kty":"RSA","kid":"ops","key_ops":["encrypt"],"n":"` + n + `","e":"` + e + `"},
		{"kty":"RSA","kid":"ps","alg":"PS256","n":"` + b64(small.N.Bytes()) + `","e":"AQAB"},
		{"kty":"OKP","kid":"ed","alg":"Ed25519","crv":"Ed25519","x":"` + ed + `"},
		{"kty":"RSA","kid":"v","key_ops":["verify"],"n":"` + n + `","e":"` + e + `"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, k.KeyID)
	}
	if strings.Join(got, ",") != "ed,v" {
		t.Errorf("kept %v, want ed (alg Ed25519, RFC 9864) and v (key_ops verify)", got)
	}
	if _, err := authn.ParseJWKS([]byte(`{"keys":[{"kty":"RSA","n":"` + n + `","e":"` + e + `","d":"AQAB"}]}`)); err == nil {
		t.Error("a set with private key material was accepted")
	}
}
