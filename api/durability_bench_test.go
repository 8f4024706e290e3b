package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/api"
	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
)

// The benchmarks of this file report each figure as a ratio against a
// baseline measured in the same run, on the same disk and with the same
// load generator, with the absolute figures beside it. Run them with
// GOMAXPROCS=2 (make bench); the load generator shares the two cores with
// the server, as a client on the same machine would.

const benchToken = "bench-admin-token-0123456789abcdef"

// load runs n requests from `clients` goroutines over keep-alive
// connections and returns the rate achieved. Every request must succeed
// with the wanted status.
func load(b *testing.B, clients, n int, want int, req func(i int) *http.Request) float64 {
	b.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				resp, err := c.Do(req(i))
				if err != nil {
					failed.Store(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					failed.Store(fmt.Errorf("request %d: status %d, want %d", i, resp.StatusCode, want))
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// rawFdatasync measures write + fdatasync of a 512-byte record, one at a
// time, in dir: the ceiling of a store that syncs every write.
func rawFdatasync(b *testing.B, dir string, n int) float64 {
	b.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "raw"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rec := make([]byte, 512)
	start := time.Now()
	for range n {
		if _, err := f.Write(rec); err != nil {
			b.Fatal(err)
		}
		if err := fdatasync(f); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// benchServer runs the real API on a file store in dir, over loopback.
func benchServer(b *testing.B, dir string) (*httptest.Server, *registry.Registry, *filestore.Store) {
	b.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := filestore.Open(filepath.Join(dir, "registry"), filestore.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	reg, err := registry.Open(context.Background(), st, registry.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	tokens, err := api.NewAdminTokens(nil, []string{benchToken}, quiet)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := api.New(reg, api.WithLogger(quiet), api.WithAuthenticator(tokens))
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	b.Cleanup(func() { ts.Close(); reg.Close() })
	return ts, reg, st
}

func post(url, body string) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+benchToken)
	return req
}

// BenchmarkDurableCreates: durable creates per second with 64 concurrent
// HTTP clients ÷ raw write+fdatasync per second of a 512-byte record in
// the same directory (target ≥ 1.5: group commit must beat one fsync per
// write; goal ≥ 5,000 creates/s).
func BenchmarkDurableCreates(b *testing.B) {
	const clients, creates, syncs = 64, 20000, 2000
	var createRate, syncRate, perSync float64
	for i := range b.N {
		dir := b.TempDir()
		syncRate += rawFdatasync(b, dir, syncs)
		ts, _, st := benchServer(b, dir)
		before := st.Stats()
		url := ts.URL + "/api/v1/functions"
		createRate += load(b, clients, creates, http.StatusCreated, func(j int) *http.Request {
			return post(url, fmt.Sprintf(`{"function_id":"fn-%d-%d","image":"registry.example/ml/train:1","resources":{"cpu":2,"ram":"4GB"},"timeout":"30s"}`, i, j))
		})
		after := st.Stats()
		perSync += float64(after.Records-before.Records) / float64(max(1, after.Syncs-before.Syncs))
	}
	n := float64(b.N)
	b.ReportMetric(createRate/n, "creates/s")
	b.ReportMetric(syncRate/n, "raw-fdatasync/s")
	b.ReportMetric(createRate/syncRate, "ratio")
	b.ReportMetric(perSync/n, "records/fsync")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkGetByID: GET-by-id per second ÷ a bare net/http handler that
// returns the same bytes, driven by the same load generator (target ≥ 0.5;
// goal ≥ 30,000 GETs/s).
func BenchmarkGetByID(b *testing.B) {
	const clients, gets, entities = 64, 100000, 1000
	var apiRate, bareRate float64
	for range b.N {
		ts, _, _ := benchServer(b, b.TempDir())
		load(b, 16, entities, http.StatusCreated, func(j int) *http.Request {
			return post(ts.URL+"/api/v1/functions", fmt.Sprintf(`{"function_id":"fn-%d","resources":{"cpu":1,"ram":"1GB"}}`, j))
		})
		get := func(base string) func(j int) *http.Request {
			return func(j int) *http.Request {
				req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/v1/functions/fn-%d", base, j%entities), nil)
				req.Header.Set("Authorization", "Bearer "+benchToken)
				return req
			}
		}
		// The bare handler serves the very bytes the API returns.
		resp, err := http.DefaultClient.Do(get(ts.URL)(0))
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		}))
		bareRate += load(b, clients, gets, http.StatusOK, get(bare.URL))
		bare.Close()
		apiRate += load(b, clients, gets, http.StatusOK, get(ts.URL))
	}
	n := float64(b.N)
	b.ReportMetric(apiRate/n, "gets/s")
	b.ReportMetric(bareRate/n, "bare-gets/s")
	b.ReportMetric(apiRate/bareRate, "ratio")
	b.ReportMetric(0, "ns/op")
}
