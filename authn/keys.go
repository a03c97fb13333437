package authn

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
)

// PublicKey verifies tokens signed by someone else, an outside identity
// provider: Alg is the one algorithm it verifies (RS256, ES256 or EdDSA,
// decided by the key's type, never by a token's header), KeyID its JWKS
// kid ("" for a PEM key).
type PublicKey struct {
	Alg   string
	KeyID string
	Key   crypto.PublicKey
}

// minRSABits is the smallest RSA modulus accepted (RFC 7518 3.3).
const minRSABits = 2048

// ParsePEMKeys reads the public keys of PEM data: "PUBLIC KEY" (PKIX) or
// "RSA PUBLIC KEY" (PKCS #1) blocks holding RSA (RS256), ECDSA P-256
// (ES256) or Ed25519 (EdDSA) keys. Any other block or key is an error, as
// is data with no key.
func ParsePEMKeys(data []byte) ([]PublicKey, error) {
	var keys []PublicKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var key any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		default:
			return nil, fmt.Errorf("PEM block %d is a %q; want a PUBLIC KEY", n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		k, err := publicKey(key, "")
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key found")
	}
	return keys, nil
}

// publicKey pairs key with the algorithm its type verifies.
func publicKey(key any, kid string) (PublicKey, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return PublicKey{}, fmt.Errorf("an RSA key of %d bits; at least %d are required", k.N.BitLen(), minRSABits)
		}
		return PublicKey{Alg: "RS256", KeyID: kid, Key: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return PublicKey{}, fmt.Errorf("an ECDSA key on %s; ES256 needs P-256", k.Curve.Params().Name)
		}
		return PublicKey{Alg: "ES256", KeyID: kid, Key: k}, nil
	case ed25519.PublicKey:
		return PublicKey{Alg: "EdDSA", KeyID: kid, Key: k}, nil
	default:
		return PublicKey{}, fmt.Errorf("a %T key; want RSA, ECDSA P-256 or Ed25519", key)
	}
}

// jwk is the part of a JSON Web Key (RFC 7517, 7518, 8037) a signature
// check needs.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`   // RSA
	E   string `json:"e"`   // RSA
	Crv string `json:"crv"` // EC, OKP
	X   string `json:"x"`   // EC, OKP
	Y   string `json:"y"`   // EC

	KeyOps []string `json:"key_ops"`
	// Private members: a published set holding any has leaked its keys.
	D  string `json:"d"`
	P  string `json:"p"`
	Q  string `json:"q"`
	DP string `json:"dp"`
	DQ string `json:"dq"`
	QI string `json:"qi"`
}

// alg is the algorithm chatd would verify with j, "" if none: by its type
// and curve, and only if its own alg, use and key_ops agree.
func (j jwk) alg() string {
	var alg string
	switch {
	case j.Kty == "RSA":
		alg = "RS256"
	case j.Kty == "EC" && j.Crv == "P-256":
		alg = "ES256"
	case j.Kty == "OKP" && j.Crv == "Ed25519":
		alg = "EdDSA"
	default:
		return ""
	}
	if j.Alg != "" && j.Alg != alg && !(alg == "EdDSA" && j.Alg == "Ed25519") { // RFC 9864 names it Ed25519
		return ""
	}
	if j.Use != "" && j.Use != "sig" {
		return ""
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return ""
	}
	return alg
}

// ParseJWKS reads a JWKS document (RFC 7517 5). Keys chatd does not
// verify with (encryption keys, other curves or algorithms, a key_ops
// without verify) are skipped, since an identity provider's set often
// holds some; a key it would verify with but that does not parse, or is
// too weak, is an error, and so are a set with no such key and a set that
// holds private key material.
func ParseJWKS(data []byte) ([]PublicKey, error) {
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	var keys []PublicKey
	for i, j := range doc.Keys {
		if j.D != "" || j.P != "" || j.Q != "" || j.DP != "" || j.DQ != "" || j.QI != "" {
			return nil, fmt.Errorf("JWKS key %d (kid %q) holds private key material: the set is leaked, not published", i, j.Kid)
		}
		alg := j.alg()
		if alg == "" {
			continue
		}
		key, err := j.publicKey()
		if err != nil {
			return nil, fmt.Errorf("JWKS key %d (kid %q): %w", i, j.Kid, err)
		}
		k, err := publicKey(key, j.Kid)
		if err != nil {
			return nil, fmt.Errorf("JWKS key %d (kid %q): %w", i, j.Kid, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS: no RS256, ES256 or EdDSA signing key")
	}
	return keys, nil
}

func (j jwk) publicKey() (any, error) {
	switch {
	case j.Kty == "RSA":
		n, err := b64Int(j.N)
		if err != nil {
			return nil, fmt.Errorf("n: %w", err)
		}
		e, err := b64Int(j.E)
		if err != nil {
			return nil, fmt.Errorf("e: %w", err)
		}
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
			return nil, errors.New("e is not a usable RSA exponent")
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case j.Kty == "EC" && j.Crv == "P-256":
		x, err := b64Bytes(j.X, 32)
		if err != nil {
			return nil, fmt.Errorf("x: %w", err)
		}
		y, err := b64Bytes(j.Y, 32)
		if err != nil {
			return nil, fmt.Errorf("y: %w", err)
		}
		// The uncompressed point; ParseUncompressedPublicKey checks it is
		// on the curve.
		key, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, err
		}
		return key, nil
	case j.Kty == "OKP" && j.Crv == "Ed25519":
		x, err := b64Bytes(j.X, ed25519.PublicKeySize)
		if err != nil {
			return nil, fmt.Errorf("x: %w", err)
		}
		return ed25519.PublicKey(x), nil
	default:
		return nil, fmt.Errorf("kty %q", j.Kty) // alg() has ruled this out
	}
}

// b64Int decodes a base64url big-endian unsigned integer.
func b64Int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, errors.New("not base64url")
	}
	return new(big.Int).SetBytes(b), nil
}

// b64Bytes decodes base64url data of exactly size bytes.
func b64Bytes(s string, size int) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64url")
	}
	if len(b) != size {
		return nil, fmt.Errorf("%d bytes, want %d", len(b), size)
	}
	return b, nil
}
