package authn

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// ServiceConfig configures the HTTP side of authn.
type ServiceConfig struct {
	// OpenRegistration lets POST /register create accounts.
	OpenRegistration bool
	// LoginFailures is how many failed logins one username may have per
	// minute before /auth answers 429 (default 10).
	LoginFailures int
	// RequestsPerSecond and Burst bound /register and /auth requests per
	// client IP (defaults 20 and 40; negative RequestsPerSecond = no limit).
	RequestsPerSecond float64
	Burst             int
	// OnRevoke is called after a token was revoked by logout, so the
	// sockets opened with it can be closed.
	OnRevoke func(jti string)
	// Log receives one line per failed login and per logout.
	Log zerolog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Service serves /register, /auth, /auth/refresh and /auth/logout.
type Service struct {
	users    *Users
	tokens   *Tokens
	revoked  *Revocations
	cfg      ServiceConfig
	failures *failureWindow // failed logins per username, over the last minute
	perIP    *KeyedLimiter  // requests per client address
}

// NewService returns the HTTP handlers over users, tokens and revoked.
func NewService(users *Users, tokens *Tokens, revoked *Revocations, cfg ServiceConfig) *Service {
	if cfg.LoginFailures <= 0 {
		cfg.LoginFailures = 10
	}
	if cfg.RequestsPerSecond == 0 {
		cfg.RequestsPerSecond = 20
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 40
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ipLimit := rate.Limit(cfg.RequestsPerSecond)
	if cfg.RequestsPerSecond < 0 {
		ipLimit = rate.Inf
	}
	return &Service{
		users:    users,
		tokens:   tokens,
		revoked:  revoked,
		cfg:      cfg,
		failures: newFailureWindow(cfg.LoginFailures, time.Minute),
		perIP:    NewKeyedLimiter(ipLimit, cfg.Burst),
	}
}

// Register adds the service's routes to mux.
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc("/register", s.handleRegister)
	mux.HandleFunc("/auth", s.handleAuth)
	mux.HandleFunc("/auth/refresh", s.handleRefresh)
	mux.HandleFunc("/auth/logout", s.handleLogout)
}

// TokenResponse is the body of a successful /auth or /auth/refresh.
type TokenResponse struct {
	Token     string `json:"token"`
	TokenType string `json:"token_type"`
	ExpiresAt int64  `json:"expires_at"`
	ExpiresIn int64  `json:"expires_in"`
}

func (s *Service) handleRegister(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		WriteMethodNotAllowed(w, http.MethodPost)
		return
	}
	if !s.allowIP(w, r) {
		return
	}
	if !s.cfg.OpenRegistration {
		WriteError(w, http.StatusForbidden, "registration_disabled", "registration is closed on this server")
		return
	}
	creds, ok := readCredentials(w, r)
	if !ok {
		return
	}
	user, err := s.users.Add(creds.Username, creds.Password)
	switch {
	case errors.Is(err, ErrBadUsername), errors.Is(err, ErrBadPassword):
		WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, ErrUserExists):
		WriteError(w, http.StatusConflict, "username_taken", "that username is taken")
	case err != nil:
		s.cfg.Log.Error().Err(err).Msg("register")
		WriteError(w, http.StatusInternalServerError, "internal_error", "could not create the account")
	default:
		s.cfg.Log.Info().Str("user", user.Name).Msg("registered")
		writeJSON(w, http.StatusCreated, map[string]string{"username": user.Name})
	}
}

func (s *Service) handleAuth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		// Passwords never travel in URLs, so GET is refused outright.
		WriteMethodNotAllowed(w, http.MethodPost)
		return
	}
	if !s.allowIP(w, r) {
		return
	}
	creds, ok := readCredentials(w, r)
	if !ok {
		return
	}
	if creds.Username == "" || creds.Password == "" {
		WriteError(w, http.StatusBadRequest, "bad_request", "username and password are required")
		return
	}
	// Every attempt counts as a failure before the password is checked
	// (checking first would let concurrent guesses all through), and a
	// success takes it back. Names that cannot exist share one key, so
	// junk names cannot grow the limiter or reach the log.
	now := s.cfg.Now()
	key := creds.Username
	if !ValidUsername(key) {
		key = "\x00invalid"
	}
	succeeded, wait := s.failures.reserve(key, now)
	if succeeded == nil {
		WriteRetry(w, wait, "too many failed logins for this user; try again later")
		return
	}
	user, err := s.users.Check(creds.Username, creds.Password)
	if errors.Is(err, ErrInvalidCredentials) {
		s.cfg.Log.Info().Str("user", key).Str("ip", ClientIP(r)).Msg("failed login")
		WriteError(w, http.StatusUnauthorized, "invalid_credentials", "wrong username or password")
		return
	}
	succeeded()
	if err != nil {
		s.cfg.Log.Error().Err(err).Msg("login")
		WriteError(w, http.StatusInternalServerError, "internal_error", "could not log in")
		return
	}
	issued, err := s.tokens.Issue(user)
	if err != nil {
		s.cfg.Log.Error().Err(err).Msg("issue token")
		WriteError(w, http.StatusInternalServerError, "internal_error", "could not issue a token")
		return
	}
	s.writeToken(w, issued)
}

func (s *Service) handleRefresh(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.bearerPost(w, r)
	if !ok {
		return
	}
	issued, err := s.tokens.Refresh(claims)
	if err != nil {
		WriteTokenError(w, err)
		return
	}
	s.writeToken(w, issued)
}

func (s *Service) handleLogout(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.bearerPost(w, r)
	if !ok {
		return
	}
	// Keep the entry past exp by the leeway: until then Verify could still
	// accept the token.
	if err := s.revoked.Revoke(claims.ID, claims.Expiry().Add(s.tokens.Leeway())); err != nil {
		s.cfg.Log.Error().Err(err).Msg("logout")
		WriteError(w, http.StatusInternalServerError, "internal_error", "could not revoke the token")
		return
	}
	s.cfg.Log.Info().Str("user", claims.Name).Str("sid", claims.SessionID).Msg("logout")
	if s.cfg.OnRevoke != nil {
		s.cfg.OnRevoke(claims.ID)
	}
	w.WriteHeader(http.StatusNoContent)
}

// bearerPost checks that r is a POST and verifies its Authorization
// header's token, answering 405 or 401 itself when not.
func (s *Service) bearerPost(w http.ResponseWriter, r *http.Request) (*Claims, bool) {
	if r.Method != http.MethodPost {
		WriteMethodNotAllowed(w, http.MethodPost)
		return nil, false
	}
	if !ignoreBody(w, r) {
		return nil, false
	}
	claims, err := s.tokens.Verify(BearerToken(r.Header.Get("Authorization")))
	if err != nil {
		WriteTokenError(w, err)
		return nil, false
	}
	return claims, true
}

func (s *Service) writeToken(w http.ResponseWriter, issued *Issued) {
	exp := issued.Claims.Expiry().Unix()
	writeJSON(w, http.StatusOK, TokenResponse{
		Token:     issued.Token,
		TokenType: "Bearer",
		ExpiresAt: exp,
		ExpiresIn: max(0, exp-s.cfg.Now().Unix()),
	})
}

func (s *Service) allowIP(w http.ResponseWriter, r *http.Request) bool {
	ok, wait := s.perIP.Allow(ClientKey(r), s.cfg.Now())
	if !ok {
		WriteRetry(w, wait, "too many requests; slow down")
	}
	return ok
}

// WriteTokenError answers 401 with the contract's code for a token error
// (see Code) and a message that never repeats parser details.
func WriteTokenError(w http.ResponseWriter, err error) {
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	WriteError(w, http.StatusUnauthorized, Code(err), tokenMessage(err))
}

// tokenMessage is the human text for a token error; it never repeats parser
// details that would help an attacker.
func tokenMessage(err error) string {
	if errors.Is(err, ErrOutsideRefresh) {
		return "a token from the identity provider is refreshed by the identity provider"
	}
	switch Code(err) {
	case CodeMissingToken:
		return "no token was presented"
	case CodeTokenExpired:
		return "Your token is no longer valid. Please reauthenticate."
	case CodeTokenRevoked:
		return "this token was revoked by a logout"
	case CodeSessionExpired:
		return "the login session reached its maximum length; log in again"
	default:
		return "the token is not valid"
	}
}

// WriteRetry answers 429 rate_limited with a Retry-After of wait, in whole
// seconds (at least 1).
func WriteRetry(w http.ResponseWriter, wait time.Duration, message string) {
	secs := int((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(max(1, secs)))
	WriteError(w, http.StatusTooManyRequests, "rate_limited", message)
}
