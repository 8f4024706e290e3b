package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cryptomesh/cryptomesh/api"
	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/mesh"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
)

type serverConfig struct {
	addr          string
	dataDir       string
	store         string
	etcd          etcdConfig
	reqTimeout    time.Duration
	tokenFiles    listFlag
	tokens        listFlag
	insecure      bool
	corsOrigins   listFlag
	historyLimit  int
	maxApplyBytes int64
	applyFiles    listFlag
	snapshotEvery uint64
	logLevel      string
	logFormat     string
	shutdownGrace time.Duration
	identity      identityFlags
	xds           xdsFlags
}

type etcdConfig struct {
	endpoints     listFlag
	ca, cert, key string
	prefix        string
}

func serverFlags(cfg *serverConfig, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:19000", "address of the REST API and /metrics")
	fs.StringVar(&cfg.dataDir, "data-dir", "./data", "directory of the embedded store and the generated admin token")
	fs.StringVar(&cfg.store, "store", "embedded", "registry store: embedded, or etcd to share the registry between control-plane replicas")
	fs.Var(&cfg.etcd.endpoints, "etcd-endpoints", "etcd client addresses for --store etcd (host:port or URLs, comma-separated)")
	fs.StringVar(&cfg.etcd.ca, "etcd-ca", "", "PEM CA bundle that verifies etcd's certificate (enables TLS to etcd)")
	fs.StringVar(&cfg.etcd.cert, "etcd-cert", "", "PEM client certificate for etcd's --client-cert-auth (with --etcd-key)")
	fs.StringVar(&cfg.etcd.key, "etcd-key", "", "PEM key of --etcd-cert")
	fs.StringVar(&cfg.etcd.prefix, "etcd-prefix", etcdstore.DefaultPrefix, "etcd key prefix of the registry; replicas that share a registry use the same")
	fs.DurationVar(&cfg.reqTimeout, "request-timeout", 30*time.Second, "longest an API request may wait, e.g. for an unreachable etcd; a write still waiting is then answered 503 and may yet commit")
	fs.Var(&cfg.tokenFiles, "api-token-file", "file of admin tokens, one per line (repeatable, comma-separated; re-read when changed)")
	fs.Var(&cfg.tokens, "api-token", "an admin token given literally, for tests (repeatable)")
	fs.BoolVar(&cfg.insecure, "insecure", false, "serve plain HTTP on a non-loopback address instead of TLS")
	fs.Var(&cfg.corsOrigins, "cors-origins", "browser origins allowed to call the API (comma-separated)")
	fs.IntVar(&cfg.historyLimit, "history-limit", registry.DefaultHistoryLimit, "states and results kept per endpoint or function")
	fs.Int64Var(&cfg.maxApplyBytes, "max-apply-bytes", api.DefaultMaxApplyBytes, "size limit of a mesh document posted to /api/v1/apply")
	fs.Var(&cfg.applyFiles, "apply", "mesh documents to apply at start, before serving (repeatable; re-applying an unchanged document changes nothing)")
	fs.Uint64Var(&cfg.snapshotEvery, "snapshot-every", 10000, "write a store snapshot after this many revisions (0: never)")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&cfg.shutdownGrace, "shutdown-grace", 10*time.Second, "how long in-flight requests may finish after SIGTERM")
	addIdentityFlags(fs, &cfg.identity)
	addXDSFlags(fs, &cfg.xds)
	fs.Usage = usageWithEnv(fs, "cryptomesh server [flags]")
	return fs
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", format)}
}

// isLoopback reports whether addr's host only accepts local connections.
func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

func runServer(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg serverConfig
	fs := serverFlags(&cfg, stderr)
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	log, err := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return err
	}
	switch {
	case cfg.store != "embedded" && cfg.store != "etcd":
		return usageError{fmt.Errorf("--store %q: want embedded or etcd", cfg.store)}
	case cfg.store == "etcd" && len(cfg.etcd.endpoints) == 0:
		return usageError{errors.New("--store etcd needs --etcd-endpoints")}
	case cfg.reqTimeout <= 0:
		return usageError{fmt.Errorf("--request-timeout %s: must be positive", cfg.reqTimeout)}
	}
	local, err := isLoopback(cfg.addr)
	if err != nil {
		return usageError{err}
	}
	serveTLS, err := useTLS(local, cfg.insecure, cfg.identity.tls)
	if err != nil {
		return err
	}
	if !local && !serveTLS {
		log.Warn("serving plain HTTP beyond loopback (--insecure): tokens cross the network in clear text", "addr", cfg.addr)
	}
	if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}

	tokenFiles := []string(cfg.tokenFiles)
	if len(tokenFiles) == 0 && len(cfg.tokens) == 0 {
		path := filepath.Join(cfg.dataDir, "admin-token")
		created, err := api.EnsureTokenFile(path)
		if err != nil {
			return fmt.Errorf("admin token: %w", err)
		}
		abs, _ := filepath.Abs(path)
		if created {
			log.Info("created an admin token; send it as 'Authorization: Bearer <token>'", "token_file", abs)
		} else {
			log.Info("using the admin token", "token_file", abs)
		}
		tokenFiles = []string{path}
	}
	tokens, err := api.NewAdminTokens(tokenFiles, cfg.tokens, log)
	if err != nil {
		return fmt.Errorf("admin tokens: %w", err)
	}

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	store, err := openStore(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	reg, err := registry.Open(ctx, store,
		registry.WithLogger(log),
		registry.WithHistoryLimit(cfg.historyLimit),
		registry.WithSnapshotEvery(cfg.snapshotEvery),
		registry.WithRegisterer(promReg),
	)
	if err != nil {
		store.Close()
		return err
	}
	defer reg.Close()

	for _, path := range cfg.applyFiles {
		if err := applyAtStart(ctx, reg, path, log); err != nil {
			return err
		}
	}

	id, err := setupIdentity(ctx, cfg.identity, cfg.dataDir, reg, promReg, log)
	if err != nil {
		return err
	}
	defer id.close()
	maintainCtx, stopMaintain := context.WithCancel(ctx)
	defer stopMaintain()
	go id.maintain(maintainCtx, log)

	// xDS (serve_xds.go): ADS on --xds-addr until shutdown.
	xdsCtx, stopXDSRun := context.WithCancel(ctx)
	defer stopXDSRun()
	xdsSrv, err := startXDS(xdsCtx, cfg.xds, reg, id, promReg, log)
	if err != nil {
		return err
	}
	defer xdsSrv.stop(cfg.shutdownGrace)

	srv, err := api.New(reg,
		api.WithIdentity(id.api),
		api.WithReadiness("identity", id.ready),
		api.WithReadiness("xds", xdsSrv.ready),
		api.WithProxies(xdsSrv),
		api.WithLogger(log),
		api.WithRegisterer(promReg),
		api.WithGatherer(promReg),
		api.WithAuthenticator(tokens),
		api.WithCORSOrigins(cfg.corsOrigins),
		api.WithMaxApplyBytes(cfg.maxApplyBytes),
	)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.addr, err)
	}
	httpSrv := &http.Server{
		Handler:           withTimeout(srv.Handler(), cfg.reqTimeout),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	scheme := "http"
	if serveTLS {
		scheme = "https"
		httpSrv.TLSConfig = id.tlsConfig()
		go func() { serveErr <- httpSrv.ServeTLS(ln, "", "") }()
	} else {
		go func() { serveErr <- httpSrv.Serve(ln) }()
	}
	log.Info("serving API", "addr", ln.Addr().String(), "url", scheme+"://"+ln.Addr().String()+"/api/v1", "data_dir", cfg.dataDir)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "grace", cfg.shutdownGrace)
	case err := <-serveErr:
		runErr = fmt.Errorf("serve API: %w", err)
	case <-reg.Failed():
		runErr = fmt.Errorf("registry store failed: %w", reg.Err())
	case err := <-xdsSrv.done:
		runErr = fmt.Errorf("xDS server: %w", err)
	}
	xdsSrv.stop(cfg.shutdownGrace)
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.shutdownGrace)
	defer cancel()
	if err := httpSrv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("shutdown", "error", err)
	}
	if err := reg.Close(); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// openStore opens the registry's store: the embedded file store in the
// data directory, or etcd shared with other replicas.
func openStore(ctx context.Context, cfg serverConfig, log *slog.Logger) (registry.Store, error) {
	if cfg.store == "embedded" {
		return filestore.Open(filepath.Join(cfg.dataDir, "registry"), filestore.WithLogger(log))
	}
	opts := []etcdstore.Option{etcdstore.WithLogger(log), etcdstore.WithPrefix(cfg.etcd.prefix)}
	if cfg.etcd.ca != "" || cfg.etcd.cert != "" || cfg.etcd.key != "" {
		opts = append(opts, etcdstore.WithTLSFiles(cfg.etcd.ca, cfg.etcd.cert, cfg.etcd.key))
	}
	log.Info("using etcd", "endpoints", []string(cfg.etcd.endpoints), "prefix", cfg.etcd.prefix)
	return etcdstore.Open(ctx, cfg.etcd.endpoints, opts...)
}

// withTimeout gives each request a deadline, so that a write waiting on
// a store that cannot answer (etcd down) is answered 503 rather than
// left hanging; the registry keeps resolving the write in the background.
func withTimeout(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// applyAtStart applies a mesh document before the API serves, so that a
// development server (make run) comes up with an example system loaded.
func applyAtStart(ctx context.Context, reg *registry.Registry, path string, log *slog.Logger) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--apply: %w", err)
	}
	doc, err := mesh.Parse(data, 0)
	if err != nil {
		return fmt.Errorf("--apply %s: %w", path, err)
	}
	rep, err := mesh.Apply(ctx, reg, doc, false)
	if err != nil {
		return fmt.Errorf("--apply %s: %w", path, err)
	}
	for _, w := range rep.Warnings {
		log.Warn("applied document", "file", path, "warning", w)
	}
	log.Info("applied document", "file", path, "created", rep.Created, "updated", rep.Updated, "unchanged", rep.Unchanged)
	return nil
}
