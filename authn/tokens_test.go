package authn_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/golang-jwt/jwt/v5"
)

// A signed token whose exp is no time at all (1e300 overflows to one
// before 1970, as do 0 and negative values) is malformed, not expired;
// a real past exp is expired.
func TestExpThatIsNoTime(t *testing.T) {
	secret := []byte(strings.Repeat("k", 32))
	tokens, err := authn.NewTokens(authn.TokenConfig{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	for _, exp := range []any{1e300, -5, 0} {
		c := outsideClaims(authn.DefaultIssuer, time.Now())
		c["exp"] = exp
		if _, err := tokens.Verify(signWith(t, jwt.SigningMethodHS256, secret, "", c)); !errors.Is(err, authn.ErrInvalidToken) {
			t.Errorf("exp %v: %v, want ErrInvalidToken", exp, err)
		}
	}
	past := outsideClaims(authn.DefaultIssuer, time.Now().Add(-time.Minute))
	if _, err := tokens.Verify(signWith(t, jwt.SigningMethodHS256, secret, "", past)); !errors.Is(err, authn.ErrTokenExpired) {
		t.Errorf("exp a minute ago: %v, want ErrTokenExpired", err)
	}
}
