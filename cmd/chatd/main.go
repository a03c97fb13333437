// Command chatd is a chat server: users log in over HTTP, get a JWT, and
// hold a WebSocket that the token authenticates until it expires.
//
//	chatd [flags]                         serve (see --help)
//	chatd user add [--data-dir DIR] NAME  add a user; password on stdin
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/chatd/chatd/authn"
	"github.com/chatd/chatd/broker"
	"github.com/chatd/chatd/broker/boltstore"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/term"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stderr, os.Getenv); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "chatd:", err)
		}
		os.Exit(2)
	}
}

// errUsage means the flag package has already explained the problem.
var errUsage = errors.New("usage")

func run(args []string, stdin io.Reader, stderr io.Writer, getenv func(string) string) error {
	if len(args) >= 2 && args[0] == "user" && args[1] == "add" {
		return userAdd(args[2:], stdin, stderr, getenv)
	}
	var cfg Config
	fs := newFlagSet("chatd", &cfg)
	fs.SetOutput(stderr)
	if err := parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (did you mean `chatd user add NAME`?)", fs.Arg(0))
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	log, err := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return err
	}
	return serve(cfg, log)
}

// errStoreLocked means another process holds the store.
var errStoreLocked = errors.New("it is locked; is another chatd using this data dir?")

// openStore opens (creating) the one database file in dir, waiting at
// most wait for another process to let go of it.
func openStore(dir string, wait time.Duration) (*bolt.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: create data dir: %w", err)
	}
	path := filepath.Join(dir, "chatd.db")
	// The timeout turns "another chatd holds this file" into an error
	// instead of a silent hang.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: wait})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w", path, errStoreLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w (is it a chatd data file? move it away to start afresh)", path, err)
	}
	return db, nil
}

func newLogger(level, format string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || (lvl != zerolog.DebugLevel && lvl != zerolog.InfoLevel && lvl != zerolog.WarnLevel && lvl != zerolog.ErrorLevel) {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "console"
		}
	}
	switch format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format %q: use console or json", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func serve(cfg Config, log zerolog.Logger) error {
	// Signals are caught from the start: one that arrives while the store
	// opens must drain, not kill, once serving begins.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	a, err := newApp(cfg, log)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 5 * time.Second,  // slowloris on the upgrade request
		ReadTimeout:       15 * time.Second, // and on a dribbled body (gws clears it after the 101)
		MaxHeaderBytes:    16 << 10,
		IdleTimeout:       2 * time.Minute,
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		a.close()
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	// Written at every --log-level: with --addr 127.0.0.1:0 this line is
	// the only way to learn the address (PROTOCOL.md).
	always := log.Level(min(log.GetLevel(), zerolog.InfoLevel))
	always.Info().Str("component", "main").Str("addr", ln.Addr().String()).Str("data_dir", cfg.DataDir).
		Str("history", cfg.History).Msg("chatd listening")

	served := make(chan error, 1)
	// Upgrade requests are served by the broker's listener directly; the
	// http.Server gets every other connection.
	go func() { served <- srv.Serve(broker.NewListener(ln, a.handler, srv.ReadHeaderTimeout, log)) }()
	select {
	case err := <-served:
		a.close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stop()

	// The drain: /readyz and /ws answer 503 while every socket is closed
	// 1001; then the listener stops and requests in flight finish; then the
	// history flushes what still waits for a commit.
	log.Info().Str("component", "main").Dur("timeout", cfg.DrainTimeout).Msg("draining")
	drain, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	// The sockets get the drain less a reserve: sockets dropped at their
	// deadline may take a moment more to go, and the history's last
	// commit comes after them, all within --drain-timeout.
	sockets, cancelSockets := context.WithTimeout(drain, cfg.DrainTimeout-min(cfg.DrainTimeout/4, time.Second))
	defer cancelSockets()
	adminDone := make(chan struct{})
	go func() { // a user add in flight finishes, beside the sockets' drain
		defer close(adminDone)
		a.stopAdmin(sockets)
	}()
	if err := a.broker.Shutdown(sockets); err != nil {
		log.Warn().Str("component", "main").Err(err).Msg("drain timed out; remaining sockets dropped")
	}
	<-adminDone
	if err := srv.Shutdown(drain); err != nil {
		log.Warn().Str("component", "main").Err(err).Msg("requests still running at the drain timeout")
	}
	if err := a.close(); err != nil {
		return err
	}
	log.Info().Str("component", "main").Msg("stopped")
	return nil
}

// openHistory returns the message store --history asks for.
func openHistory(cfg Config, db *bolt.DB, log zerolog.Logger) (broker.History, error) {
	if cfg.History == "memory" {
		return broker.NewMemoryHistory(cfg.HistoryPerRoom, cfg.HistoryMaxAge), nil
	}
	h, err := boltstore.New(db, boltstore.Options{MaxPerRoom: cfg.HistoryPerRoom, MaxAge: cfg.HistoryMaxAge, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("open history: %w", err)
	}
	return h, nil
}

func writeStatus(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"status\":%q}\n", text)
}

// userAdd implements `chatd user add [--data-dir DIR] NAME`.
func userAdd(args []string, stdin io.Reader, stderr io.Writer, getenv func(string) string) error {
	var cfg Config
	fs := newFlagSet("chatd user add", &cfg)
	fs.SetOutput(stderr)
	if err := parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	const usage = "usage: chatd user add [--data-dir DIR] NAME (password on the first line of stdin)"
	if fs.NArg() == 0 {
		return errors.New(usage)
	}
	name := fs.Arg(0)
	if rest := fs.Args()[1:]; len(rest) > 0 {
		// Flags after the name (`user add NAME --data-dir DIR`) count too.
		if err := parse(fs, rest, getenv); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
		if fs.NArg() != 0 {
			return errors.New(usage)
		}
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return errors.New("read password: give it as the first line of standard input")
	}
	password := strings.TrimRight(line, "\r\n")
	err = addUserToServer(cfg.DataDir, name, password)
	if err == nil {
		fmt.Fprintf(stderr, "user %s added (by the chatd running on %s)\n", name, cfg.DataDir)
		return nil
	}
	if !errors.Is(err, errNoServer) {
		return fmt.Errorf("add user %s: %w", name, err)
	}
	// Other user adds may hold the store for their hashes meanwhile.
	db, err := openStore(cfg.DataDir, 30*time.Second)
	if errors.Is(err, errStoreLocked) {
		return fmt.Errorf("%w\n(a running chatd takes new users on %s, which it could not make: see its log)",
			err, filepath.Join(cfg.DataDir, adminSocket))
	}
	if err != nil {
		return err
	}
	defer db.Close()
	users, err := authn.NewUsers(db, cfg.BcryptCost)
	if err != nil {
		return err
	}
	if _, err := users.Add(name, password); err != nil {
		return fmt.Errorf("add user %s: %w", name, err)
	}
	fmt.Fprintf(stderr, "user %s added\n", name)
	return nil
}
