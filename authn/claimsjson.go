package authn

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// UnmarshalJSON decodes claims for golang-jwt, which hands it the token's
// payload. encoding/json decodes the claims by reflection, and that was
// the largest part of verifying a token: a seventh of a handshake's CPU.
// The tokens chatd issues hold only a fixed set of plain values, so those
// are read here directly; anything else (another key or key case, an
// escape in a string, a fraction or exponent in a number, null, a nested
// value) goes to encoding/json, so the result is always what
// encoding/json would give. FuzzClaimsJSON checks that.
func (c *Claims) UnmarshalJSON(data []byte) error {
	var fast Claims
	if decodeClaims(data, &fast) {
		*c = fast
		return nil
	}
	return json.Unmarshal(data, (*plainClaims)(c))
}

// plainClaims is Claims without its UnmarshalJSON: encoding/json's way.
type plainClaims Claims

// decodeClaims reads data into c if it is an object of chatd's claim keys
// with plain values, and reports whether it was.
func decodeClaims(data []byte, c *Claims) bool {
	d := claimsDecoder{data: data}
	d.space()
	if !d.byte('{') {
		return false
	}
	d.space()
	if d.byte('}') {
		return d.end()
	}
	for {
		key, ok := d.str()
		if !ok {
			return false
		}
		d.space()
		if !d.byte(':') {
			return false
		}
		d.space()
		if !d.value(key, c) {
			return false
		}
		d.space()
		if d.byte('}') {
			return d.end()
		}
		if !d.byte(',') {
			return false
		}
		d.space()
	}
}

type claimsDecoder struct {
	data []byte
	i    int
}

func (d *claimsDecoder) space() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *claimsDecoder) byte(b byte) bool {
	if d.i < len(d.data) && d.data[d.i] == b {
		d.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (d *claimsDecoder) end() bool {
	d.space()
	return d.i == len(d.data)
}

// str reads a string without escapes or control characters, in valid
// UTF-8 (encoding/json would replace invalid bytes).
func (d *claimsDecoder) str() (string, bool) {
	if !d.byte('"') {
		return "", false
	}
	start, ascii := d.i, true
	for d.i < len(d.data) {
		b := d.data[d.i]
		switch {
		case b == '"':
			s := d.data[start:d.i]
			d.i++
			if !ascii && !utf8.Valid(s) {
				return "", false
			}
			return string(s), true
		case b == '\\' || b < 0x20:
			return "", false
		case b >= utf8.RuneSelf:
			ascii = false
		}
		d.i++
	}
	return "", false
}

// int reads an integer of at most 15 digits: exact as a float64 too, which
// is how golang-jwt reads a NumericDate.
func (d *claimsDecoder) int() (int64, bool) {
	start := d.i
	d.byte('-')
	digits := d.i
	for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
		d.i++
	}
	n := d.i - digits
	if n == 0 || n > 15 || (n > 1 && d.data[digits] == '0') {
		return 0, false
	}
	if d.i < len(d.data) {
		switch d.data[d.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	v, err := strconv.ParseInt(string(d.data[start:d.i]), 10, 64)
	return v, err == nil
}

// strs reads an array of strings.
func (d *claimsDecoder) strs() ([]string, bool) {
	if !d.byte('[') {
		return nil, false
	}
	out := []string{}
	d.space()
	if d.byte(']') {
		return out, true
	}
	for {
		s, ok := d.str()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		d.space()
		if d.byte(']') {
			return out, true
		}
		if !d.byte(',') {
			return nil, false
		}
		d.space()
	}
}

// value reads the value of key into c.
func (d *claimsDecoder) value(key string, c *Claims) bool {
	var ok bool
	switch key {
	case "iss":
		c.Issuer, ok = d.str()
	case "sub":
		c.Subject, ok = d.str()
	case "jti":
		c.ID, ok = d.str()
	case "name":
		c.Name, ok = d.str()
	case "sid":
		c.SessionID, ok = d.str()
	case "aud":
		if d.i < len(d.data) && d.data[d.i] == '[' {
			var aud []string
			aud, ok = d.strs()
			if len(aud) == 0 {
				aud = nil // as jwt.ClaimStrings decodes []
			}
			c.Audience = aud
		} else {
			var s string
			s, ok = d.str()
			c.Audience = jwt.ClaimStrings{s}
		}
	case "exp", "nbf", "iat":
		var secs int64
		secs, ok = d.int()
		date := jwt.NewNumericDate(time.Unix(secs, 0))
		switch key {
		case "exp":
			c.ExpiresAt = date
		case "nbf":
			c.NotBefore = date
		default:
			c.IssuedAt = date
		}
	case "auth_time":
		c.AuthTime, ok = d.int()
	case "rooms":
		c.Rooms, ok = d.strs()
	}
	return ok
}
