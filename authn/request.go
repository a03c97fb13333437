package authn

// What the handlers read from a request: its body, held to the rules every
// POST follows (PROTOCOL.md), and who sent it.

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
)

// MaxBodyBytes is the largest POST body accepted (413 beyond).
const MaxBodyBytes = 8 << 10

// credentials are the body of /register and /auth.
type credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// bodyType returns r's media type if it is one a POST body may have
// (JSON or a form); otherwise it answers 415 itself.
func bodyType(w http.ResponseWriter, r *http.Request) (string, bool) {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mediaType != "application/json" && mediaType != "application/x-www-form-urlencoded") {
		WriteError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json or application/x-www-form-urlencoded")
		return "", false
	}
	return mediaType, true
}

// readBody reads r's body up to MaxBodyBytes, answering 413 (or 400) itself
// when it cannot.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			WriteError(w, http.StatusRequestEntityTooLarge, "too_large", "the body is over 8 KiB")
		} else {
			WriteError(w, http.StatusBadRequest, "bad_request", "could not read the body")
		}
		return nil, false
	}
	return body, true
}

// ignoreBody reads the body of a POST that takes none (refresh and logout
// read only the Authorization header) and holds it to every POST's rules:
// 413 over 8 KiB, 415 when it is not empty and neither JSON nor a form.
func ignoreBody(w http.ResponseWriter, r *http.Request) bool {
	body, ok := readBody(w, r)
	if !ok {
		return false
	}
	if len(body) > 0 {
		_, ok = bodyType(w, r)
	}
	return ok
}

// readCredentials decodes a JSON or form body, answering 413, 415 or 400
// itself when it cannot.
func readCredentials(w http.ResponseWriter, r *http.Request) (credentials, bool) {
	var creds credentials
	mediaType, ok := bodyType(w, r)
	if !ok {
		return creds, false
	}
	body, ok := readBody(w, r)
	if !ok {
		return creds, false
	}
	if mediaType == "application/json" {
		if err := json.Unmarshal(body, &creds); err != nil {
			WriteError(w, http.StatusBadRequest, "bad_request", "the body is not a JSON object with username and password strings")
			return creds, false
		}
	} else {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			WriteError(w, http.StatusBadRequest, "bad_request", "the form body is malformed")
			return creds, false
		}
		creds.Username, creds.Password = form.Get("username"), form.Get("password")
	}
	return creds, true
}

// ClientKey is who r comes from, for rate limits: its IPv4 address, or
// the /64 network of its IPv6 address (a host usually holds a whole /64,
// and would otherwise get a bucket per address it cares to use).
func ClientKey(r *http.Request) string {
	ip := ClientIP(r)
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is6() || addr.Is4In6() {
		return ip
	}
	return netip.PrefixFrom(addr, 64).Masked().String()
}

// ClientIP is the peer address of r without its port. Headers such as
// X-Forwarded-For are not trusted: anyone can set them.
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
