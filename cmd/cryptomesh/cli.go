package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cryptomesh/cryptomesh/api/client"
	"github.com/cryptomesh/cryptomesh/identity"
)

// The client commands (apply, get, delete, export, token) talk to a running
// control plane through package api/client. This file holds what they
// share: the connection flags, argument handling, and turning failures
// into messages that say what to fix and exit codes scripts can rely on.

// Exit codes of the client commands, beyond exitOK, exitError, exitUsage.
const (
	exitNotFound = 3 // the entity does not exist (404)
	exitConflict = 4 // a conflict (409): still referenced, a duplicate id
	exitInvalid  = 5 // the server refused the input (400, 413, 415, 422)
)

// codedError ends a command with a given exit code.
type codedError struct {
	code int
	err  error
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

// clientFlags are the flags of every client command.
type clientFlags struct {
	server    string
	tokenFile string
	dataDir   string
	caFile    string
	timeout   time.Duration
}

// clientCommand starts the flag set of a command that talks to the control
// plane: the client flags and the usage text are set here, the command
// adds its own flags.
func clientCommand(name, synopsis string, stderr io.Writer) (*flag.FlagSet, *clientFlags) {
	cf := &clientFlags{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addClientFlags(fs, cf)
	fs.Usage = usageWithEnv(fs, synopsis)
	return fs, cf
}

func addClientFlags(fs *flag.FlagSet, cf *clientFlags) {
	fs.StringVar(&cf.server, "server", "http://127.0.0.1:19000", "URL of the control plane")
	fs.StringVar(&cf.tokenFile, "token-file", "", "file holding the admin token (default: admin-token in --data-dir)")
	fs.StringVar(&cf.dataDir, "data-dir", "./data", "data directory of a local `cryptomesh server`, where it keeps the admin token it created")
	fs.StringVar(&cf.caFile, "ca-file", "", "PEM bundle (or CA directory) to trust an https --server by (default: the CA in --data-dir, if any)")
	fs.DurationVar(&cf.timeout, "timeout", 5*time.Minute, "how long the command may take")
}

// tokenPath is the token file the command uses.
func (cf *clientFlags) tokenPath() string {
	if cf.tokenFile != "" {
		return cf.tokenFile
	}
	return filepath.Join(cf.dataDir, "admin-token")
}

// session is a connected client command.
type session struct {
	flags *clientFlags
	c     *client.Client
}

// connect reads the admin token and builds the client.
func connect(cf *clientFlags) (*session, error) {
	path := cf.tokenPath()
	token, err := client.ReadTokenFile(path)
	if err != nil {
		hint := "pass --token-file FILE (or set CRYPTOMESH_TOKEN_FILE)"
		if cf.tokenFile == "" {
			hint = "run the command where `cryptomesh server` keeps its data, or pass --data-dir DIR (CRYPTOMESH_DATA_DIR) or --token-file FILE (CRYPTOMESH_TOKEN_FILE)"
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no admin token: %s does not exist — %s", path, hint)
		}
		return nil, fmt.Errorf("no admin token: %w — %s", err, hint)
	}
	opts := []client.Option{client.WithToken(token), client.WithUserAgent("cryptomesh-cli")}
	trust, err := serverTrust(cf.server, cf.caFile, filepath.Join(cf.dataDir, "ca"))
	if err != nil {
		return nil, err
	}
	if trust != nil {
		opts = append(opts, client.WithRootCAs(trust))
	}
	c, err := client.New(cf.server, opts...)
	if err != nil {
		return nil, usageError{fmt.Errorf("--server: %w", err)}
	}
	return &session{flags: cf, c: c}, nil
}

// serverTrust is what an https server is trusted by: caFile when given,
// else the CA directory of a local server when it exists, else the
// system's roots (nil). Plain http needs none.
func serverTrust(server, caFile, localCA string) (*x509.CertPool, error) {
	if !strings.HasPrefix(strings.ToLower(server), "https://") {
		return nil, nil
	}
	path := caFile
	if path == "" {
		if _, err := os.Stat(filepath.Join(localCA, identity.CAStateFile)); err != nil {
			return nil, nil
		}
		path = localCA
	}
	pool, err := client.LoadRootCAs(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("--ca-file: %w", err)}
	}
	return pool, nil
}

// context bounds one command by --timeout.
func (s *session) context(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.flags.timeout)
}

// explain turns a failed call into a message that says what to fix, with
// the exit code scripts rely on.
func (s *session) explain(err error) error {
	if err == nil {
		return nil
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		msg := formatAPIError(ce)
		switch ce.Status {
		case http.StatusUnauthorized:
			return codedError{exitError, fmt.Errorf("401: the token in %s was refused — it is not an admin token of the control plane at %s; pass --token-file with a token it accepts, or --data-dir of the server it belongs to (%s)",
				s.flags.tokenPath(), s.c.BaseURL(), ce.Message)}
		case http.StatusForbidden:
			return codedError{exitError, fmt.Errorf("403: the token in %s may not do this — use an admin token (%s)", s.flags.tokenPath(), ce.Message)}
		case http.StatusNotFound:
			return codedError{exitNotFound, errors.New(msg)}
		case http.StatusConflict:
			return codedError{exitConflict, errors.New(msg)}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
			return codedError{exitInvalid, errors.New(msg)}
		}
		return codedError{exitError, fmt.Errorf("the control plane at %s failed: %s", s.c.BaseURL(), msg)}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return codedError{exitError, fmt.Errorf("no answer from the control plane at %s within %s (--timeout): %w", s.c.BaseURL(), s.flags.timeout, err)}
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return codedError{exitError, fmt.Errorf("the certificate of the control plane at %s is signed by a CA this command does not trust — pass --ca-file with its bundle (GET /api/v1/identity/bundle, or the server's --ca-dir): %w", s.c.BaseURL(), err)}
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return codedError{exitError, fmt.Errorf("cannot reach the control plane at %s — is `cryptomesh server` running? (pass --server URL or set CRYPTOMESH_SERVER for another address): %w", s.c.BaseURL(), err)}
	}
	return codedError{exitError, err}
}

// formatAPIError renders a refusal: the status and message, then each
// field on its own line as `path (line N): message`.
func formatAPIError(e *client.Error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d: %s", e.Status, e.Message)
	for _, f := range e.Fields {
		if f.Field == "" && f.Message == e.Message {
			continue
		}
		b.WriteString("\n  ")
		b.WriteString(f.String())
	}
	return b.String()
}

// parseCommand parses a client command's arguments: flags (given before,
// between or after the positional arguments, each also settable as its
// CRYPTOMESH_* variable) and between min and max positional arguments,
// which want describes ("KIND [ID]").
func parseCommand(fs *flag.FlagSet, args []string, min, max int, want string) ([]string, error) {
	flags, pos := splitArgs(fs, args)
	if err := parseFlags(fs, flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if len(pos) < min || len(pos) > max {
		fs.Usage()
		if want == "" {
			return nil, usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(pos, " "))}
		}
		return nil, usageError{fmt.Errorf("want %s, got %q", want, strings.Join(pos, " "))}
	}
	return pos, nil
}

// splitArgs separates flags (with their values) from positional
// arguments, so that `get functions -o json` works as well as
// `get -o json functions`. "--" ends the flags.
func splitArgs(fs *flag.FlagSet, args []string) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(positional, args[i+1:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil && !isBoolFlag(f) && i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return flags, positional
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// notFoundAs names the kind in a 404 about the entity a command named by
// id ("function 'f9' not found" rather than the server's "Resource").
func notFoundAs(err error, k cliKind, ids []string) error {
	var ce codedError
	if len(ids) == 1 && errors.As(err, &ce) && ce.code == exitNotFound {
		return codedError{exitNotFound, fmt.Errorf("404: %s '%s' not found", k.name, ids[0])}
	}
	return err
}
