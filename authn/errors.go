// Package authn knows who a client is: users and their passwords, the tokens
// chatd issues and verifies, revocation, and the HTTP handlers for /register,
// /auth, /auth/refresh and /auth/logout.
package authn

import "errors"

// Token errors. Each maps to the error code of the same name in the wire
// contract (see Code).
var (
	ErrMissingToken   = errors.New("missing token")
	ErrInvalidToken   = errors.New("invalid token")
	ErrTokenExpired   = errors.New("token expired")
	ErrTokenRevoked   = errors.New("token revoked")
	ErrSessionExpired = errors.New("session expired")
	// ErrOutsideRefresh refuses to refresh an outside identity provider's
	// token; its code is invalid_token.
	ErrOutsideRefresh = errors.New("a token from the identity provider is refreshed there")
)

// User errors.
var (
	ErrUserExists         = errors.New("username taken")
	ErrInvalidCredentials = errors.New("invalid credentials")
	ErrBadUsername        = errors.New("username must be 3-32 characters of A-Za-z0-9_.-")
	ErrBadPassword        = errors.New("password must be 8-256 bytes")
)

// The wire contract's codes for token errors, in HTTP bodies and error
// frames alike.
const (
	CodeMissingToken   = "missing_token"
	CodeInvalidToken   = "invalid_token"
	CodeTokenExpired   = "token_expired"
	CodeTokenRevoked   = "token_revoked"
	CodeSessionExpired = "session_expired"
)

// Code returns the wire-contract error code for a token error, and
// CodeInvalidToken for anything it does not know, so a caller never leaks
// an internal error to a client.
func Code(err error) string {
	switch {
	case errors.Is(err, ErrMissingToken):
		return CodeMissingToken
	case errors.Is(err, ErrTokenExpired):
		return CodeTokenExpired
	case errors.Is(err, ErrTokenRevoked):
		return CodeTokenRevoked
	case errors.Is(err, ErrSessionExpired):
		return CodeSessionExpired
	default:
		return CodeInvalidToken
	}
}
