package api

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// tokenRecheck is how often, at most, token files are checked for
// changes. Rotation takes effect within this interval, without a restart.
const tokenRecheck = time.Second

// AdminTokens authenticates administrators by bearer token (SPEC §2:
// `--api-token-file`, several allowed for rotation, and `--api-token` for
// tests).
//
// Token files hold one token per line; blank lines and lines starting
// with '#' are ignored. A file is re-read when its identity, size or
// modification time changes, checked at most once per tokenRecheck, so
// that rotating a token is: add the new one, move clients over, remove the
// old one. If a file later disappears, becomes unreadable or empty, its
// tokens stop working (fail closed) until it is fixed: a credential the
// operator tried to revoke must not live on.
//
// Only SHA-256 digests of tokens are kept. A presented token is hashed and
// compared in constant time against every known digest, without an early
// exit, so timing reveals neither a prefix nor which token matched.
type AdminTokens struct {
	log      *slog.Logger
	now      func() time.Time
	literals [][sha256.Size]byte

	mu        sync.Mutex // guards files and lastCheck
	files     []*tokenFile
	lastCheck time.Time

	// digests is every accepted token, replaced as a whole on reload so
	// that Authenticate reads it without taking mu.
	digests atomic.Pointer[[][sha256.Size]byte]
}

type tokenFile struct {
	path    string
	info    fs.FileInfo // nil when the file could not be read
	digests [][sha256.Size]byte
}

// NewAdminTokens loads the token files and literal tokens. At least one
// token must be given; a file that cannot be read, is empty, or holds a
// malformed line is an error. log receives reload events (never token
// values); nil discards them.
func NewAdminTokens(files, literals []string, log *slog.Logger) (*AdminTokens, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &AdminTokens{log: log, now: time.Now}
	for i, tok := range literals {
		if err := checkToken(tok); err != nil {
			return nil, fmt.Errorf("literal admin token #%d: %w", i+1, err)
		}
		t.literals = append(t.literals, sha256.Sum256([]byte(tok)))
	}
	for _, path := range files {
		f := &tokenFile{path: path}
		info, digests, err := readTokenFile(path)
		if err != nil {
			return nil, err
		}
		f.info, f.digests = info, digests
		t.files = append(t.files, f)
	}
	if len(files) == 0 && len(literals) == 0 {
		return nil, errors.New("no admin token configured: give a token file or a token")
	}
	t.lastCheck = t.now()
	t.publish()
	return t, nil
}

// Authenticate accepts `Authorization: Bearer <admin token>`.
func (t *AdminTokens) Authenticate(r *http.Request) (Principal, error) {
	tok, ok := bearerToken(r)
	if !ok {
		return Principal{}, fmt.Errorf("no bearer token: %w", ErrUnauthenticated)
	}
	t.refresh()
	sum := sha256.Sum256([]byte(tok))
	match := 0
	for _, d := range *t.digests.Load() {
		match |= subtle.ConstantTimeCompare(sum[:], d[:])
	}
	if match != 1 {
		return Principal{}, fmt.Errorf("not an admin token: %w", ErrUnauthenticated)
	}
	return Principal{Kind: PrincipalAdmin, Name: "admin", Credential: CredentialAdminToken}, nil
}

// refresh re-reads token files that changed since they were last read.
func (t *AdminTokens) refresh() {
	if len(t.files) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if now.Sub(t.lastCheck) < tokenRecheck {
		return
	}
	t.lastCheck = now
	changed := false
	for _, f := range t.files {
		info, err := os.Stat(f.path)
		if err == nil && f.info != nil && sameVersion(info, f.info) {
			continue
		}
		if err != nil && f.info == nil {
			continue // still broken, already reported
		}
		changed = true
		info, digests, err := readTokenFile(f.path)
		if err != nil {
			if f.info != nil || len(f.digests) > 0 {
				t.log.Error("admin token file no longer usable; its tokens are refused until it is fixed", "error", err)
			}
			f.info, f.digests = nil, nil
			continue
		}
		f.info, f.digests = info, digests
		t.log.Info("admin token file reloaded", "path", f.path, "tokens", len(digests))
	}
	if changed {
		t.publish()
	}
}

// publish rebuilds the digest list. Called with mu held or before t is
// shared.
func (t *AdminTokens) publish() {
	all := append([][sha256.Size]byte(nil), t.literals...)
	for _, f := range t.files {
		all = append(all, f.digests...)
	}
	t.digests.Store(&all)
}

func sameVersion(a, b fs.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// readTokenFile reads and parses one token file. Errors name the file and
// the line, never the line's content.
func readTokenFile(path string) (fs.FileInfo, [][sha256.Size]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read admin token file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("read admin token file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("admin token file %s is not a regular file", path)
	}
	raw, err := readAllLimited(f, 1<<20)
	if err != nil {
		return nil, nil, fmt.Errorf("read admin token file %s: %w", path, err)
	}
	var digests [][sha256.Size]byte
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := checkToken(line); err != nil {
			return nil, nil, fmt.Errorf("admin token file %s, line %d: %w", path, n, err)
		}
		digests = append(digests, sha256.Sum256([]byte(line)))
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read admin token file %s: %w", path, err)
	}
	if len(digests) == 0 {
		return nil, nil, fmt.Errorf("admin token file %s holds no token", path)
	}
	return info, digests, nil
}

func readAllLimited(r io.Reader, limit int64) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return raw, nil
}

// checkToken rejects what cannot be a bearer token. The token itself is
// never part of the message.
func checkToken(tok string) error {
	switch {
	case tok == "":
		return errors.New("empty token")
	case strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return errors.New("the token contains whitespace or control characters")
	}
	return nil
}

// EnsureTokenFile makes sure path holds an admin token: when no file
// exists it creates one with a random 32-byte token (base64url), mode 0600,
// in a directory created with mode 0700, and reports created. An existing
// file is used as it is, unless group or others may access it: a token
// readable by other users is no secret, so the server refuses to start
// rather than trust it.
func EnsureTokenFile(path string) (created bool, err error) {
	for range 2 {
		info, err := os.Stat(path)
		if err == nil {
			if !info.Mode().IsRegular() {
				return false, fmt.Errorf("admin token file %s is not a regular file", path)
			}
			if perm := info.Mode().Perm(); perm&0o077 != 0 {
				return false, fmt.Errorf("admin token file %s is accessible by group or others (mode %04o); run chmod 600 %s", path, perm, path)
			}
			return false, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("check admin token file: %w", err)
		}
		err = createTokenFile(path)
		if errors.Is(err, fs.ErrExist) {
			continue // created concurrently by someone else: check theirs
		}
		if err != nil {
			return false, err
		}
		return true, nil
	}
	return false, fmt.Errorf("admin token file %s keeps appearing and disappearing", path)
}

func createTokenFile(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory for the admin token: %w", err)
	}
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return fmt.Errorf("generate admin token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(secret[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create admin token file: %w", err)
	}
	_, werr := f.WriteString(tok + "\n")
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		// A half-written token file would be found and trusted next start.
		_ = os.Remove(path)
		return fmt.Errorf("write admin token file %s: %w", path, werr)
	}
	// Make the new directory entry durable too, so that a crash cannot
	// lose a token the CLI may already have read.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
