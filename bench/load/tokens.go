package load

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/chatd/chatd/authn"
)

// UserName is the name of load user number i.
func UserName(prefix string, i int) string { return prefix + strconv.Itoa(i) }

// Mint signs a token for user name that expires at exp (whole seconds),
// with chatd's own claim code and the server's secret, so load runs do not
// wait on logins and their bcrypt.
func Mint(secret []byte, name string, exp time.Time) (string, error) {
	ttl := time.Until(exp.Truncate(time.Second))
	if ttl <= 0 {
		return "", fmt.Errorf("mint: exp %v is not in the future", exp)
	}
	tokens, err := authn.NewTokens(authn.TokenConfig{Secret: secret, TTL: ttl, SessionMax: ttl + time.Hour})
	if err != nil {
		return "", err
	}
	issued, err := tokens.Issue(&authn.User{ID: "load-" + name, Name: name})
	if err != nil {
		return "", err
	}
	return issued.Token, nil
}

// HTTPBase turns a ws:// or wss:// URL of /ws into the server's http(s)
// base URL.
func HTTPBase(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return "", fmt.Errorf("%q: the URL must start with ws:// or wss://", wsURL)
	}
	u.Path, u.RawQuery = "", ""
	return strings.TrimRight(u.String(), "/"), nil
}

// Login gets a token for name from POST /auth, registering the user first
// when register is set (an existing user, or registration being closed, is
// fine: the login then says whether the user exists). A 429 is waited out
// as its Retry-After says, until deadline. It returns the token and its exp.
func Login(client *http.Client, base, name, password string, register bool, deadline time.Time) (string, time.Time, error) {
	body, _ := json.Marshal(map[string]string{"username": name, "password": password})
	if register {
		status, _, err := post(client, base+"/register", body, deadline)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("register %s: %w", name, err)
		}
		if status != http.StatusCreated && status != http.StatusConflict && status != http.StatusForbidden {
			return "", time.Time{}, fmt.Errorf("register %s: status %d", name, status)
		}
	}
	status, resp, err := post(client, base+"/auth", body, deadline)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("log in %s: %w", name, err)
	}
	if status != http.StatusOK {
		return "", time.Time{}, fmt.Errorf("log in %s: status %d: %s", name, status, bytes.TrimSpace(resp))
	}
	var tok authn.TokenResponse
	if err := json.Unmarshal(resp, &tok); err != nil || tok.Token == "" {
		return "", time.Time{}, fmt.Errorf("log in %s: no token in %q", name, resp)
	}
	return tok.Token, time.Unix(tok.ExpiresAt, 0), nil
}

func post(client *http.Client, u string, body []byte, deadline time.Time) (int, []byte, error) {
	for {
		resp, err := client.Post(u, "application/json", bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests {
			return resp.StatusCode, data, nil
		}
		wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		d := time.Duration(max(wait, 1)) * time.Second
		if time.Now().Add(d).After(deadline) {
			return resp.StatusCode, data, fmt.Errorf("rate limited (429) past the deadline")
		}
		time.Sleep(d)
	}
}
