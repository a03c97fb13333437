package main

// `chatd user add` beside a running chatd. The store is one bbolt file,
// which one process at a time may open, so while chatd runs the command
// cannot add the user itself. The running chatd listens on a Unix socket
// in its data dir instead, and the command hands it the user to add. The
// socket lives in a directory of its own, made 0700 before the socket is:
// only chatd's user reaches it, from the moment it exists.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/rs/zerolog"
)

// adminSocket is the Unix socket's path in the data dir. Unix socket
// paths are short (107 bytes on Linux): in a data dir whose path is longer
// than about 90, chatd logs a warning and user add must wait for a stop.
const adminSocket = "admin/chatd.sock"

// userRequest is what `chatd user add` sends the running chatd.
type userRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// adminServer serves the admin socket of a running chatd.
type adminServer struct {
	srv  *http.Server
	path string
	done chan struct{}
}

// serveAdmin listens on the admin socket in dir and adds the users it is
// sent. chatd holds the store's lock, so a socket file left there is a
// crashed chatd's and is replaced.
func serveAdmin(dir string, users *authn.Users, log zerolog.Logger) (*adminServer, error) {
	path := filepath.Join(dir, adminSocket)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// Also when it was there already: nobody else may connect, not even
	// between the socket's creation and a chmod of it.
	if err := os.Chmod(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /users", func(w http.ResponseWriter, r *http.Request) {
		var req userRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 8<<10)).Decode(&req); err != nil {
			authn.WriteError(w, http.StatusBadRequest, "bad_request", "the body must be {\"username\",\"password\"}")
			return
		}
		if _, err := users.Add(req.Username, req.Password); err != nil {
			status, code := http.StatusInternalServerError, "internal_error"
			switch {
			case errors.Is(err, authn.ErrUserExists):
				status, code = http.StatusConflict, "username_taken"
			case errors.Is(err, authn.ErrBadUsername), errors.Is(err, authn.ErrBadPassword):
				status, code = http.StatusBadRequest, "bad_request"
			}
			authn.WriteError(w, status, code, err.Error())
			return
		}
		log.Info().Str("user", req.Username).Msg("user added by chatd user add")
		w.WriteHeader(http.StatusCreated)
	})
	a := &adminServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		path: path,
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		_ = a.srv.Serve(ln)
	}()
	return a, nil
}

// close stops the admin socket, letting a user being added finish until
// ctx ends, and removes its file.
func (a *adminServer) close(ctx context.Context) {
	if a.srv.Shutdown(ctx) != nil {
		_ = a.srv.Close()
	}
	<-a.done
	_ = os.Remove(a.path)
}

// errNoServer means no chatd answers on the data dir's admin socket.
var errNoServer = errors.New("no running chatd on this data dir")

// addUserToServer asks the chatd running on dir to add the user. It
// returns errNoServer when none answers there.
func addUserToServer(dir, name, password string) error {
	path := filepath.Join(dir, adminSocket)
	if _, err := os.Stat(path); err != nil {
		return errNoServer
	}
	client := &http.Client{
		Timeout: 30 * time.Second, // a bcrypt hash on a busy server
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
	body, _ := json.Marshal(userRequest{Username: name, Password: password})
	resp, err := client.Post("http://chatd/users", "application/json", strings.NewReader(string(body)))
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return errNoServer // a socket file without a chatd behind it
		}
		return fmt.Errorf("the running chatd did not answer (is it stopping?); the user may or may not have been added, so run this again: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusCreated {
		return nil
	}
	var e struct{ Error, Message string }
	_ = json.NewDecoder(io.LimitReader(resp.Body, 8<<10)).Decode(&e)
	switch e.Error {
	case "username_taken":
		return authn.ErrUserExists
	case "bad_request":
		return errors.New(e.Message)
	}
	return fmt.Errorf("the running chatd refused: %s (%s)", e.Message, e.Error)
}
