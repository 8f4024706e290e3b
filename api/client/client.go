// Package client is the Go client of the CryptoMesh REST API (SPEC §2):
// typed create, get, list, update and delete for every entity kind, latest
// states, reports, mesh documents (apply, export) and the health probes.
//
// Every call takes a context.Context. Answers the server refuses come back
// as *Error, with the status, the server's message and, for invalid input
// and mesh documents, every offending field (with its YAML line). Failures
// to reach the server come back as the *url.Error of net/http.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// DefaultUserAgent is sent when WithUserAgent is not given.
const DefaultUserAgent = "cryptomesh-client"

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 1 << 20

// Client calls one control plane. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	http      *http.Client
	token     string
	userAgent string
}

type options struct {
	token      string
	tokenFile  string
	httpClient *http.Client
	rootCAs    *x509.CertPool
	userAgent  string
	errs       []error
}

// Option configures a Client.
type Option func(*options)

// WithToken sends token as `Authorization: Bearer <token>`.
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// WithTokenFile reads the bearer token from a token file when the client
// is created: its first line that is neither blank nor a '#' comment (the
// format of the server's `--api-token-file` and `<data-dir>/admin-token`).
func WithTokenFile(path string) Option {
	return func(o *options) { o.tokenFile = path }
}

// WithHTTPClient sets the http.Client that sends requests (TLS settings,
// proxies, timeouts). By default a client without a timeout is used:
// contexts bound every call.
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) {
		if c == nil {
			o.errs = append(o.errs, errors.New("WithHTTPClient: nil client"))
			return
		}
		o.httpClient = c
	}
}

// WithRootCAs trusts the control plane's HTTPS certificate by pool (its
// trust bundle; see LoadRootCAs) instead of the system's roots. It cannot
// be combined with WithHTTPClient, which brings its own TLS settings.
func WithRootCAs(pool *x509.CertPool) Option {
	return func(o *options) {
		if pool == nil {
			o.errs = append(o.errs, errors.New("WithRootCAs: nil pool"))
			return
		}
		o.rootCAs = pool
	}
}

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option {
	return func(o *options) { o.userAgent = ua }
}

// New returns a client of the control plane at baseURL, such as
// "http://127.0.0.1:19000". A trailing "/api/v1" is accepted and ignored.
func New(baseURL string, opts ...Option) (*Client, error) {
	o := &options{userAgent: DefaultUserAgent}
	for _, opt := range opts {
		opt(o)
	}
	u, err := url.Parse(baseURL)
	switch {
	case !strings.Contains(baseURL, "://"):
		o.errs = append(o.errs, fmt.Errorf("server URL %q: want http:// or https://, e.g. http://127.0.0.1:19000", baseURL))
	case err != nil:
		o.errs = append(o.errs, fmt.Errorf("server URL %q: %w", baseURL, err))
	case u.Scheme != "http" && u.Scheme != "https":
		o.errs = append(o.errs, fmt.Errorf("server URL %q: want http:// or https://", baseURL))
	case u.Host == "":
		o.errs = append(o.errs, fmt.Errorf("server URL %q has no host", baseURL))
	case u.RawQuery != "" || u.Fragment != "":
		o.errs = append(o.errs, fmt.Errorf("server URL %q: no query or fragment allowed", baseURL))
	default:
		u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/api/v1")
		u.RawPath = ""
	}
	if o.token != "" && o.tokenFile != "" {
		o.errs = append(o.errs, errors.New("give a token or a token file, not both"))
	}
	if o.rootCAs != nil && o.httpClient != nil {
		o.errs = append(o.errs, errors.New("give root CAs or an HTTP client, not both"))
	}
	token := o.token
	if o.tokenFile != "" && len(o.errs) == 0 {
		token, err = ReadTokenFile(o.tokenFile)
		if err != nil {
			o.errs = append(o.errs, err)
		}
	}
	if strings.ContainsAny(token, "\r\n") {
		o.errs = append(o.errs, errors.New("the token holds a line break"))
	}
	if len(o.errs) > 0 {
		return nil, fmt.Errorf("client: %w", errors.Join(o.errs...))
	}
	hc := o.httpClient
	switch {
	case hc != nil:
	case o.rootCAs != nil:
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: o.rootCAs, MinVersion: tls.VersionTLS12}
		hc = &http.Client{Transport: tr}
	default:
		hc = &http.Client{}
	}
	return &Client{base: u, http: hc, token: token, userAgent: o.userAgent}, nil
}

// ReadTokenFile returns the first token of a token file: its first line
// that is neither blank nor a '#' comment.
func ReadTokenFile(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			return line, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read token file %s: %w", path, err)
	}
	return "", fmt.Errorf("token file %s holds no token", path)
}

// BaseURL is the server's URL, as given to New (without /api/v1).
func (c *Client) BaseURL() string { return c.base.String() }

// Error is an answer the server refused: a status of 400 or more, with
// the message and field errors of the body `{"detail": {...}}`.
type Error struct {
	// Status is the HTTP status.
	Status int
	// Message is the server's message (or, for an answer not in the
	// API's error shape, the status text and the start of the body).
	Message string
	// Fields lists every offending field: a body's field path
	// (`resources.cpu`), a query parameter, or in a mesh document the
	// document path (`functions.load_data.resources.cpu`) and its line.
	Fields []FieldError
}

// FieldError is one offending field of an Error.
type FieldError struct {
	Field string `json:"field"`
	// Line is the line in a YAML mesh document; 0 when unknown.
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", e.Status, e.Message)
	for _, f := range e.Fields {
		b.WriteString("; ")
		b.WriteString(f.String())
	}
	return b.String()
}

// String renders a field error as `path (line N): message`.
func (f FieldError) String() string {
	switch {
	case f.Field == "":
		return f.Message
	case f.Line > 0:
		return fmt.Sprintf("%s (line %d): %s", f.Field, f.Line, f.Message)
	}
	return fmt.Sprintf("%s: %s", f.Field, f.Message)
}

// StatusOf returns the HTTP status of err's *Error, or 0 when err is not
// an answer of the server.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// errorFrom reads a refused answer.
func errorFrom(res *http.Response) *Error {
	raw, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
	var body struct {
		Detail *struct {
			Message string       `json:"message"`
			Errors  []FieldError `json:"errors"`
		} `json:"detail"`
	}
	if json.Unmarshal(raw, &body) == nil && body.Detail != nil && body.Detail.Message != "" {
		return &Error{Status: res.StatusCode, Message: body.Detail.Message, Fields: body.Detail.Errors}
	}
	msg := http.StatusText(res.StatusCode)
	if s := strings.TrimSpace(string(raw)); s != "" {
		if len(s) > 200 {
			s = s[:200] + "…"
		}
		msg += ": " + s
	}
	return &Error{Status: res.StatusCode, Message: msg}
}

// request is one call.
type request struct {
	method string
	path   string // under the base URL, escaped, e.g. /api/v1/roles/r1
	query  url.Values
	body   []byte
	ctype  string
	accept string
	// pass is a refusal status answered as a response rather than an
	// *Error, for routes whose refusal has its own body.
	pass int
}

// send performs a call and returns the answer of a 2xx status; any other
// status is an *Error and the body is closed.
func (c *Client) send(ctx context.Context, rq request) (*http.Response, error) {
	u := *c.base
	unescaped, err := url.PathUnescape(rq.path)
	if err != nil {
		return nil, fmt.Errorf("request path %q: %w", rq.path, err)
	}
	u.Path = c.base.Path + unescaped
	u.RawPath = c.base.EscapedPath() + rq.path
	u.RawQuery = rq.query.Encode()
	var body io.Reader
	if rq.body != nil {
		body = bytes.NewReader(rq.body)
	}
	req, err := http.NewRequestWithContext(ctx, rq.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("build request %s %s: %w", rq.method, rq.path, err)
	}
	if rq.body != nil {
		req.Header.Set("Content-Type", rq.ctype)
	}
	accept := rq.accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", c.userAgent)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, err // a *url.Error naming the method and URL
	}
	if res.StatusCode >= 400 && res.StatusCode != rq.pass {
		defer res.Body.Close()
		return nil, errorFrom(res)
	}
	return res, nil
}

// call performs a JSON call: in (if not nil) is the body, out (if not
// nil) receives the answer.
func (c *Client) call(ctx context.Context, method, path string, query url.Values, in, out any) (http.Header, error) {
	rq := request{method: method, path: path, query: query}
	if in != nil {
		raw, err := encodeBody(in)
		if err != nil {
			return nil, err
		}
		rq.body, rq.ctype = raw, "application/json"
	}
	res, err := c.send(ctx, rq)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		return res.Header, nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return nil, fmt.Errorf("decode the answer of %s %s: %w", method, path, err)
	}
	return res.Header, nil
}
