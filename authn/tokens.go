package authn

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenBytes bounds the size of a token we agree to parse, before any
// parsing happens (CVE-2025-30204 was an allocation blow-up on huge inputs).
const MaxTokenBytes = 4096

// Claims are the claims of a chatd token.
type Claims struct {
	jwt.RegisteredClaims
	// Name is the username, shown to other users.
	Name string `json:"name"`
	// SessionID identifies the login; refreshed tokens keep it.
	SessionID string `json:"sid"`
	// AuthTime is when the login happened (unix seconds); a refresh chain
	// ends at AuthTime + the session maximum.
	AuthTime int64 `json:"auth_time,omitempty"`
	// Rooms, when not nil, are the only rooms this token may join.
	// omitzero, not omitempty: an empty list (no room at all) must survive
	// a refresh, not turn into "any room".
	Rooms []string `json:"rooms,omitzero"`
	// External is set by Verify for a token an outside identity provider
	// signed (not a claim): /auth/refresh leaves those to the provider.
	External bool `json:"-"`
}

// Expiry returns the token's exp as a time (zero if unset).
func (c *Claims) Expiry() time.Time {
	if c.RegisteredClaims.ExpiresAt == nil {
		return time.Time{}
	}
	return c.RegisteredClaims.ExpiresAt.Time
}

// MayJoin reports whether the token allows joining room.
func (c *Claims) MayJoin(room string) bool {
	if c.Rooms == nil {
		return true
	}
	for _, r := range c.Rooms {
		if r == room {
			return true
		}
	}
	return false
}

// TokenConfig configures Tokens. Zero fields take the defaults noted.
type TokenConfig struct {
	Secret   []byte // HS256 key, at least 32 bytes
	Issuer   string // iss of chatd's own (HS256) tokens; default DefaultIssuer
	Audience string // aud every token must hold, and chatd's own carry; default DefaultIssuer
	// PublicKeys verify tokens signed by an outside identity provider
	// (RS256, ES256, EdDSA); SetPublicKeys replaces them. Such a token must
	// carry ExternalIssuer (default Issuer) as its iss, and the same claims
	// as chatd's own.
	PublicKeys     []PublicKey
	ExternalIssuer string // required with PublicKeys, and not Issuer
	// OnUnknownKey, if set, is called when a token names a kid no outside
	// key has (the provider may have rotated): a hint to load the keys
	// again. It must not block.
	OnUnknownKey func()
	TTL          time.Duration // token lifetime; default 15m
	SessionMax   time.Duration // how long refreshes may extend a login; default 24h
	Leeway       time.Duration // clock-skew allowance for exp, nbf, iat
	// Revoked, if set, is consulted on every verification.
	Revoked interface{ IsRevoked(jti string) bool }
	// Now is the clock; default time.Now. Tests move it.
	Now func() time.Time
}

// Tokens issues and verifies chatd's JWTs. It is safe for concurrent use.
type Tokens struct {
	cfg    TokenConfig
	parser *jwt.Parser
	keys   atomic.Pointer[map[string][]PublicKey] // PublicKeys by Alg
}

// DefaultIssuer is the iss of chatd's own tokens, and the aud every token
// must hold unless configured otherwise (PROTOCOL.md).
const DefaultIssuer = "chatd"

// MinSecretBytes is the shortest HS256 key accepted (RFC 7518 3.2: a key at
// least as long as the hash).
const MinSecretBytes = 32

// NewTokens returns Tokens for cfg, or an error if the secret is too short.
func NewTokens(cfg TokenConfig) (*Tokens, error) {
	if len(cfg.Secret) < MinSecretBytes {
		return nil, fmt.Errorf("jwt secret is %d bytes; at least %d are required", len(cfg.Secret), MinSecretBytes)
	}
	if cfg.Issuer == "" {
		cfg.Issuer = DefaultIssuer
	}
	if cfg.Audience == "" {
		cfg.Audience = DefaultIssuer
	}
	if len(cfg.PublicKeys) > 0 && (cfg.ExternalIssuer == "" || cfg.ExternalIssuer == cfg.Issuer) {
		// The iss names who holds the key (RFC 8725 3.8): the provider's
		// tokens must not pass for chatd's own, or the reverse.
		return nil, fmt.Errorf("outside keys need the provider's own issuer, not %q", cfg.ExternalIssuer)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 15 * time.Minute
	}
	if cfg.SessionMax <= 0 {
		cfg.SessionMax = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// The strict options matter: golang-jwt's defaults accept tokens without
	// exp, with a foreign aud or with another HMAC algorithm (notes/security.md).
	// iss depends on who signed, so Verify checks it.
	methods := []string{jwt.SigningMethodHS256.Alg()}
	if len(cfg.PublicKeys) > 0 {
		methods = append(methods, jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg())
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithAudience(cfg.Audience),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithStrictDecoding(),
	)
	t := &Tokens{cfg: cfg, parser: parser}
	t.SetPublicKeys(cfg.PublicKeys)
	return t, nil
}

// SetPublicKeys replaces the outside identity provider's keys (a JWKS
// document fetched again). With none configured at NewTokens, only HS256
// is accepted whatever is set here.
func (t *Tokens) SetPublicKeys(keys []PublicKey) {
	byAlg := make(map[string][]PublicKey)
	for _, k := range keys {
		byAlg[k.Alg] = append(byAlg[k.Alg], k)
	}
	t.keys.Store(&byAlg)
}

// key picks what verifies tok: chatd's secret for HS256, else the outside
// keys of the token's algorithm (the key's type fixed that algorithm when
// it was loaded, so a token cannot pick another one for it), narrowed to
// its kid when it names one.
func (t *Tokens) key(tok *jwt.Token) (any, error) {
	alg := tok.Method.Alg()
	if alg == jwt.SigningMethodHS256.Alg() {
		return t.cfg.Secret, nil
	}
	var kid string
	if v, ok := tok.Header["kid"]; ok {
		if kid, ok = v.(string); !ok {
			return nil, errors.New("kid is not a string")
		}
	}
	var set jwt.VerificationKeySet
	for _, k := range (*t.keys.Load())[alg] {
		if kid == "" || k.KeyID == "" || k.KeyID == kid {
			set.Keys = append(set.Keys, k.Key)
		}
	}
	if len(set.Keys) == 0 {
		if kid != "" && t.cfg.OnUnknownKey != nil {
			t.cfg.OnUnknownKey()
		}
		return nil, fmt.Errorf("no %s key with kid %q", alg, kid)
	}
	return set, nil
}

// Leeway returns the configured clock-skew allowance.
func (t *Tokens) Leeway() time.Duration { return t.cfg.Leeway }

// Issued is a freshly signed token and its claims.
type Issued struct {
	Token  string
	Claims *Claims
}

// Issue signs a token for a new login of user.
func (t *Tokens) Issue(user *User) (*Issued, error) {
	now := t.cfg.Now()
	// The login's own token lives its full TTL: SessionMax bounds how far
	// refreshes extend a login, so a TTL longer than SessionMax leaves a
	// token that refresh answers with session_expired.
	return t.sign(user.ID, user.Name, randomID(), now.Unix(), nil, now, now.Add(t.cfg.TTL))
}

// Refresh signs a new token for the login that old belongs to. The new
// token's exp never passes the session's end; at or after that end Refresh
// fails with ErrSessionExpired. An outside provider's token is refused
// (ErrOutsideRefresh).
func (t *Tokens) Refresh(old *Claims) (*Issued, error) {
	if old.External {
		// Its login is the provider's, with no auth_time of chatd's to
		// bound a chain of chatd's own tokens.
		return nil, ErrOutsideRefresh
	}
	now := t.cfg.Now()
	login := old.AuthTime
	if login == 0 {
		// A token signed with chatd's secret elsewhere (a load tool, a
		// script) may carry no auth_time; its login was no later than its
		// iat, or than now. The new token carries that time on, so that a
		// chain of refreshes still ends.
		login = now.Unix()
		if old.IssuedAt != nil {
			login = min(login, old.IssuedAt.Unix())
		}
	}
	exp := now.Add(t.cfg.TTL)
	end := time.Unix(login, 0).Add(t.cfg.SessionMax)
	if !now.Before(end) {
		return nil, ErrSessionExpired
	}
	if exp.After(end) {
		exp = end
	}
	return t.sign(old.Subject, old.Name, old.SessionID, login, old.Rooms, now, exp)
}

func (t *Tokens) sign(sub, name, sid string, authTime int64, rooms []string, now, exp time.Time) (*Issued, error) {
	c := &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    t.cfg.Issuer,
			Audience:  jwt.ClaimStrings{t.cfg.Audience},
			Subject:   sub,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        randomID(),
		},
		Name:      name,
		SessionID: sid,
		AuthTime:  authTime,
		Rooms:     rooms,
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(t.cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("sign token: %w", err)
	}
	// NumericDate truncates to seconds; report the exp the token carries.
	c.RegisteredClaims.ExpiresAt = jwt.NewNumericDate(time.Unix(exp.Unix(), 0))
	return &Issued{Token: s, Claims: c}, nil
}

// Verify parses and checks a token: signature and algorithm (HS256 with
// chatd's secret, or an outside key's own algorithm), iss (chatd's, or the
// outside provider's), aud, exp, nbf, iat, the presence of sub, jti, sid
// and name, and revocation. The error is
// one of ErrMissingToken, ErrInvalidToken, ErrTokenExpired, ErrTokenRevoked.
func (t *Tokens) Verify(token string) (*Claims, error) {
	if token == "" {
		return nil, ErrMissingToken
	}
	if len(token) > MaxTokenBytes {
		return nil, ErrInvalidToken
	}
	c := new(Claims)
	tok, err := t.parser.ParseWithClaims(token, c, t.key)
	if err != nil {
		// Only a token whose signature verified can be "expired": golang-jwt
		// v5 stops at a bad signature, so ErrTokenExpired implies a good one.
		// An exp at or before 1970 is no time at all (a value like 1e300
		// overflows to one): the token is malformed, not expired.
		if errors.Is(err, jwt.ErrTokenExpired) && c.ExpiresAt != nil && c.ExpiresAt.Unix() > 0 {
			return nil, ErrTokenExpired
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	iss := t.cfg.Issuer
	if tok.Method.Alg() != jwt.SigningMethodHS256.Alg() {
		iss, c.External = t.cfg.ExternalIssuer, true
	}
	if c.Issuer != iss {
		return nil, fmt.Errorf("%w: iss %q, want %q", ErrInvalidToken, c.Issuer, iss)
	}
	if c.Subject == "" || c.ID == "" || c.SessionID == "" || c.Name == "" {
		return nil, fmt.Errorf("%w: missing sub, jti, sid or name", ErrInvalidToken)
	}
	if c.External && !ValidUsername(c.Name) {
		// Shown to other users as a username: the same rules as chatd's own.
		return nil, fmt.Errorf("%w: name is not a valid username", ErrInvalidToken)
	}
	if t.Revoked(c.ID) {
		return nil, ErrTokenRevoked
	}
	return c, nil
}

// Revoked reports whether the token jti has been revoked.
func (t *Tokens) Revoked(jti string) bool {
	return t.cfg.Revoked != nil && t.cfg.Revoked.IsRevoked(jti)
}

// BearerToken returns the token of an "Authorization: Bearer <token>" header
// value, or "" if there is none.
func BearerToken(header string) string {
	const prefix = "bearer "
	if len(header) > len(prefix) && strings.EqualFold(header[:len(prefix)], prefix) {
		return strings.TrimSpace(header[len(prefix):])
	}
	return ""
}

// randomID returns 128 random bits in hex.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux (Go 1.24+ panics instead)
	return hex.EncodeToString(b[:])
}
