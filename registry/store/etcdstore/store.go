package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/cryptomesh/cryptomesh/registry"
)

// Defaults, matching an etcd server started without flags.
const (
	// DefaultPrefix is where the store keeps its keys.
	DefaultPrefix = "/cryptomesh/"
	// DefaultMaxTxnOps is etcd's --max-txn-ops.
	DefaultMaxTxnOps = 128
	// DefaultMaxRequestBytes is etcd's --max-request-bytes.
	DefaultMaxRequestBytes = 1536 * 1024
	// DefaultCommitTimeout bounds how long a commit may stay unresolved
	// while etcd is unreachable.
	DefaultCommitTimeout = time.Minute
	// DefaultLogRetention is how many log entries below the newest
	// snapshot are kept.
	DefaultLogRetention = 1000
	// DefaultDialTimeout bounds Open's first contact with etcd.
	DefaultDialTimeout = 10 * time.Second
)

// attemptTimeout bounds one etcd call inside a retry loop, so that a
// connection that hangs without failing is noticed and retried.
const attemptTimeout = 5 * time.Second

// Option configures a Store.
type Option func(*config)

type config struct {
	prefix          string
	log             *slog.Logger
	tlsFiles        *tlsFiles
	dialTimeout     time.Duration
	commitTimeout   time.Duration
	maxTxnOps       int
	maxRequestBytes int
	retention       uint64
}

// WithPrefix sets the key prefix (default DefaultPrefix). Control planes
// that share a registry use the same prefix; unrelated ones on the same
// etcd use different ones.
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithLogger sets the logger for retries, conflicts and recovery.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithTLSFiles makes Open dial etcd over TLS with the CA bundle that
// verifies etcd's certificate and, when certFile and keyFile are given,
// a client certificate (etcd's --client-cert-auth). Empty names are
// unset; the files are read by Open.
func WithTLSFiles(caFile, certFile, keyFile string) Option {
	return func(c *config) { c.tlsFiles = &tlsFiles{ca: caFile, cert: certFile, key: keyFile} }
}

// WithDialTimeout bounds Open's first contact with etcd.
func WithDialTimeout(d time.Duration) Option { return func(c *config) { c.dialTimeout = d } }

// WithCommitTimeout bounds how long the store keeps retrying a commit
// whose outcome it does not know (etcd unreachable or the connection
// lost mid-request). Past it, the records' Wait fails and the registry
// stops accepting writes; a restarted control plane reads the outcome
// from etcd. Shorter outages are invisible to the registry: the commit is
// retried until it is resolved.
func WithCommitTimeout(d time.Duration) Option { return func(c *config) { c.commitTimeout = d } }

// WithTxnLimits matches the store to etcd's --max-txn-ops and
// --max-request-bytes, which bound the records one transaction carries
// and the size past which a record goes to blob chunks.
func WithTxnLimits(maxOps, maxRequestBytes int) Option {
	return func(c *config) { c.maxTxnOps, c.maxRequestBytes = maxOps, maxRequestBytes }
}

// WithLogRetention sets how many log entries below the newest snapshot
// are kept: a commit whose answer was lost is recognised by reading its
// log entry back, so the entries of the last moments must outlive the
// snapshot that covers them.
func WithLogRetention(n uint64) Option { return func(c *config) { c.retention = n } }

// Stats counts the work of a store since it was opened.
type Stats struct {
	Records   uint64 // records committed by this store
	Txns      uint64 // successful commit transactions; each carries a group of records
	Conflicts uint64 // records refused because another replica committed first
	Retries   uint64 // etcd calls retried after an error
	Blobs     uint64 // records written as blob chunks
	Resets    uint64 // re-listings delivered by Follow after a compaction
	Snapshots uint64 // snapshots written
}

// Store is a registry.Store, registry.Follower and registry.Snapshotter
// on etcd. See the package comment for the layout and why it is correct.
type Store struct {
	client    *clientv3.Client
	ownClient bool
	keys      keys
	log       *slog.Logger

	// Owned by the committer, which lowers them if etcd refuses a
	// transaction as too large.
	maxTxnOps     int
	maxTxnBytes   int // budget for one transaction's keys and values
	chunkSize     int // blob chunk size
	snapChunkSize int // snapshot chunk size; fixed, unlike the committer's limits
	commitTimeout time.Duration
	retention     uint64

	ctx    context.Context // cancelled by Close: aborts the committer
	cancel context.CancelFunc

	mu      sync.Mutex
	loaded  bool
	closing bool
	queue   []*pending
	wake    chan struct{}
	done    chan struct{} // closed when the committer has exited

	// Where Follow resumes; set by Load, then owned by Follow.
	next      uint64 // the registry revision to deliver next
	watchFrom int64  // the etcd revision to watch from

	records, txns, conflicts, retries, blobs, resets, snapshots atomic.Uint64
}

var (
	_ registry.Follower    = (*Store)(nil)
	_ registry.Snapshotter = (*Store)(nil)
)

// Open dials etcd at endpoints (host:port, or URLs) and returns a store
// that owns the client. It checks that etcd answers within the dial
// timeout, so that a wrong address fails at startup.
func Open(ctx context.Context, endpoints []string, opts ...Option) (*Store, error) {
	cfg := defaults()
	for _, o := range opts {
		o(&cfg)
	}
	if len(endpoints) == 0 {
		return nil, errors.New("etcdstore: no etcd endpoints")
	}
	var tlsCfg *tls.Config
	if cfg.tlsFiles != nil {
		var err error
		if tlsCfg, err = cfg.tlsFiles.load(); err != nil {
			return nil, err
		}
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: cfg.dialTimeout,
		// Keepalives notice a connection that died without a reset (a
		// partition), so watches and commits move on instead of hanging.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		TLS:                  tlsCfg,
		Logger:               zap.NewNop(),
		// gRPC's default reconnect backoff grows to two minutes; a control
		// plane should be back within seconds of etcd.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcdstore: connect to %v: %w", endpoints, err)
	}
	s, err := newStore(client, true, cfg)
	if err != nil {
		client.Close()
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancel()
	if _, err := client.Get(pctx, s.keys.head()); err != nil {
		s.Close()
		return nil, fmt.Errorf("etcdstore: reach etcd at %v: %w", endpoints, err)
	}
	return s, nil
}

// New returns a store on an existing client, which Close leaves open.
// Options that configure dialing are ignored.
func New(client *clientv3.Client, opts ...Option) (*Store, error) {
	cfg := defaults()
	for _, o := range opts {
		o(&cfg)
	}
	return newStore(client, false, cfg)
}

func defaults() config {
	return config{
		prefix:          DefaultPrefix,
		log:             slog.Default(),
		dialTimeout:     DefaultDialTimeout,
		commitTimeout:   DefaultCommitTimeout,
		maxTxnOps:       DefaultMaxTxnOps,
		maxRequestBytes: DefaultMaxRequestBytes,
		retention:       DefaultLogRetention,
	}
}

// requestSlack is what one etcd request needs beyond its keys and
// values: the transaction's framing, compares and the raft header.
const requestSlack = 8 << 10

func newStore(client *clientv3.Client, own bool, cfg config) (*Store, error) {
	switch {
	case cfg.prefix == "":
		return nil, errors.New("etcdstore: empty key prefix")
	case cfg.log == nil:
		return nil, errors.New("etcdstore: nil logger")
	case cfg.maxTxnOps < 2:
		return nil, fmt.Errorf("etcdstore: max txn ops %d: need room for a record and the head", cfg.maxTxnOps)
	case cfg.maxRequestBytes < 64<<10:
		return nil, fmt.Errorf("etcdstore: max request bytes %d is below 64 KiB", cfg.maxRequestBytes)
	case cfg.commitTimeout <= 0 || cfg.dialTimeout <= 0:
		return nil, errors.New("etcdstore: timeouts must be positive")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		client:        client,
		ownClient:     own,
		keys:          keys{prefix: cfg.prefix},
		log:           cfg.log,
		maxTxnOps:     cfg.maxTxnOps,
		maxTxnBytes:   cfg.maxRequestBytes - requestSlack,
		chunkSize:     (cfg.maxRequestBytes - requestSlack) * 2 / 3,
		snapChunkSize: (cfg.maxRequestBytes - requestSlack) * 2 / 3,
		commitTimeout: cfg.commitTimeout,
		retention:     cfg.retention,
		ctx:           ctx,
		cancel:        cancel,
		wake:          make(chan struct{}, 1),
		done:          make(chan struct{}),
	}
	go s.commitLoop()
	return s, nil
}

// Client returns the etcd client the store uses.
func (s *Store) Client() *clientv3.Client { return s.client }

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Records:   s.records.Load(),
		Txns:      s.txns.Load(),
		Conflicts: s.conflicts.Load(),
		Retries:   s.retries.Load(),
		Blobs:     s.blobs.Load(),
		Resets:    s.resets.Load(),
		Snapshots: s.snapshots.Load(),
	}
}

// pending is one appended record on its way to etcd.
type pending struct {
	rec  registry.Record
	enc  []byte // inline encoding
	done chan struct{}
	err  error
}

// Wait returns nil once the record is committed, a *registry.ConflictError
// if another replica committed first, or an error if the outcome could not
// be learned within the commit timeout. A ctx that ends first leaves the
// record to the committer, which still resolves it.
func (p *pending) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("etcdstore: waiting for revision %d to commit: %w", p.rec.Rev, ctx.Err())
	}
}

func (p *pending) finish(err error) {
	p.err = err
	close(p.done)
}

// Append queues rec for the committer. Records must carry an ID (the
// registry sets IDs for stores that are Followers).
func (s *Store) Append(rec registry.Record) (registry.Pending, error) {
	if rec.ID == "" {
		return nil, fmt.Errorf("etcdstore: append revision %d without a record ID", rec.Rev)
	}
	p := &pending{rec: rec, enc: appendRecord(nil, rec), done: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return nil, fmt.Errorf("etcdstore: append revision %d: %w", rec.Rev, registry.ErrStoreClosed)
	case !s.loaded:
		return nil, fmt.Errorf("etcdstore: append revision %d before Load", rec.Rev)
	}
	s.queue = append(s.queue, p)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return p, nil
}

// Head returns the revision of the newest committed record, read with
// etcd's default linearizable consistency.
func (s *Store) Head(ctx context.Context) (uint64, error) {
	resp, err := s.client.Get(ctx, s.keys.head())
	if err != nil {
		return 0, fmt.Errorf("etcdstore: read head: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	rev, _, err := parseHead(resp.Kvs[0].Value)
	return rev, err
}

// Close lets the committer finish what is queued (for at most the commit
// timeout), then stops it and closes the client if the store owns it.
func (s *Store) Close() error {
	s.mu.Lock()
	already := s.closing
	s.closing = true
	s.mu.Unlock()
	if already {
		<-s.done
		return nil
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(s.commitTimeout)
	select {
	case <-s.done:
		t.Stop()
	case <-t.C:
		s.log.Warn("etcdstore: closing with commits unresolved")
	}
	s.cancel()
	<-s.done
	if s.ownClient {
		if err := s.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("etcdstore: close client: %w", err)
		}
	}
	return nil
}

// backoff sleeps before retry n (from 1): 50 ms doubling to 2 s. It
// returns false if ctx ended first.
func backoff(ctx context.Context, n int) bool {
	d := 50 * time.Millisecond << min(n-1, 5)
	d = min(d, 2*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
