package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore/etcdtest"
)

// TestReplicasShareTheRegistryThroughEtcd runs three `cryptomesh server
// --store etcd` processes on one real etcd: writes through one are read
// through the others, racing creates have one winner, a replica killed
// with SIGKILL loses nothing it acknowledged, and an etcd outage makes
// writes fail with 5xx within the request timeout, with nothing lost or
// diverging once etcd is back.
func TestReplicasShareTheRegistryThroughEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary and etcd")
	}
	const token = "etcd-replicas-admin-token-0123456789"
	srv := etcdtest.Start(t)
	args := []string{"--store", "etcd", "--etcd-endpoints", srv.Endpoint(), "--api-token", token, "--request-timeout", "2s"}
	start := func() *proc { return startServer(t, append([]string{"--data-dir", t.TempDir()}, args...)...) }
	ps := []*proc{start(), start(), start()}
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(p *proc, id string) (int, error) {
		code, _, err := call(context.Background(), client, "POST", p.url+"/api/v1/roles", token,
			fmt.Sprintf(`{"role_id":%q,"name":"replicated","permissions":["execute"]}`, id))
		return code, err
	}

	// A write through one replica is read through the others.
	if code, err := post(ps[0], "first"); err != nil || code != http.StatusCreated {
		t.Fatalf("create through replica 0: %d %v", code, err)
	}
	for i, p := range ps[1:] {
		waitRole(t, client, p, token, "first", i+1)
	}

	// Racing creates of one id through two replicas: one 201, one 409.
	for i := range 10 {
		id := fmt.Sprintf("race-%d", i)
		codes := make([]int, 2)
		var wg sync.WaitGroup
		for j, p := range ps[1:] {
			wg.Go(func() {
				var err error
				if codes[j], err = post(p, id); err != nil {
					t.Errorf("race %d through replica %d: %v", i, j+1, err)
				}
			})
		}
		wg.Wait()
		slices.Sort(codes)
		if codes[0] != http.StatusCreated || codes[1] != http.StatusConflict {
			t.Fatalf("race %d: statuses %v, want one 201 and one 409", i, codes)
		}
	}

	// SIGKILL a replica in the middle of writes through it and the
	// others: whatever any replica acknowledged is there.
	acked := map[string]bool{"first": true}
	var ackMu sync.Mutex
	writes := func(ctx context.Context, round string, targets []*proc) (wait func() int) {
		var wg sync.WaitGroup
		var n atomic.Int64
		for w := range 12 {
			p := targets[w%len(targets)]
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					id := fmt.Sprintf("%s-w%d-%d", round, w, i)
					code, err := post(p, id)
					if err != nil {
						continue // the replica died mid-request: outcome unknown
					}
					switch {
					case code == http.StatusCreated:
						ackMu.Lock()
						acked[id] = true
						ackMu.Unlock()
						n.Add(1)
					case code >= 500:
						time.Sleep(20 * time.Millisecond)
					default:
						t.Errorf("write %s: status %d", id, code)
					}
				}
			})
		}
		return func() int { wg.Wait(); return int(n.Load()) }
	}
	ctx, cancel := context.WithCancel(context.Background())
	wait := writes(ctx, "kill", ps)
	time.Sleep(500 * time.Millisecond)
	ps[2].cmd.Process.Kill()
	<-ps[2].done
	time.Sleep(300 * time.Millisecond)
	cancel()
	if n := wait(); n == 0 {
		t.Fatal("no write acknowledged around the kill")
	}
	ps[2] = start()
	for i, p := range ps {
		waitAcked(t, client, p, token, acked, i)
	}

	// etcd goes away: writes fail with 5xx within the request timeout
	// (no hang) while reads are still served; then it comes back.
	ctx, cancel = context.WithCancel(context.Background())
	wait = writes(ctx, "outage", ps)
	time.Sleep(300 * time.Millisecond)
	srv.Kill(t)
	for i, p := range ps {
		began := time.Now()
		code, err := post(p, fmt.Sprintf("during-outage-%d", i))
		if err != nil || code < 500 || time.Since(began) > 6*time.Second {
			t.Fatalf("write through replica %d while etcd is down: %d %v after %s, want a 5xx within the timeout", i, code, err, time.Since(began))
		}
		if code, _, err := call(context.Background(), client, "GET", p.url+"/api/v1/roles/first", token, ""); err != nil || code != http.StatusOK {
			t.Fatalf("read through replica %d while etcd is down: %d %v", i, code, err)
		}
	}
	srv.Restart(t)
	time.Sleep(time.Second)
	cancel()
	wait()
	for i, p := range ps {
		if code, err := post(p, fmt.Sprintf("after-outage-%d", i)); err != nil || code != http.StatusCreated {
			t.Fatalf("write through replica %d after etcd came back: %d %v\n%s", i, code, err, p.Logs())
		}
		acked[fmt.Sprintf("after-outage-%d", i)] = true
	}
	for i, p := range ps {
		waitAcked(t, client, p, token, acked, i)
	}
	// All three hold the same roles: writes whose outcome was unknown
	// (5xx) went in everywhere or nowhere.
	want := roleIDs(t, client, ps[0], token)
	deadline := time.Now().Add(30 * time.Second)
	for i, p := range ps[1:] {
		for got := roleIDs(t, client, p, token); !slices.Equal(got, want); got = roleIDs(t, client, p, token) {
			if time.Now().After(deadline) {
				t.Fatalf("replica %d holds %d roles, replica 0 %d", i+1, len(got), len(want))
			}
			time.Sleep(50 * time.Millisecond)
			want = roleIDs(t, client, ps[0], token)
		}
	}
	t.Logf("%d writes acknowledged; %d roles on every replica", len(acked), len(want))
	for _, p := range ps {
		p.stop(t)
	}
}

func waitRole(t *testing.T, c *http.Client, p *proc, token, id string, replica int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, err := call(context.Background(), c, "GET", p.url+"/api/v1/roles/"+id, token, "")
		if err == nil && code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("role %s not visible through replica %d: %d %v", id, replica, code, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAcked waits until every acknowledged role is visible through p.
func waitAcked(t *testing.T, c *http.Client, p *proc, token string, acked map[string]bool, replica int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		have := map[string]bool{}
		for _, id := range roleIDs(t, c, p, token) {
			have[id] = true
		}
		var missing []string
		for id := range acked {
			if !have[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %d lacks %d acknowledged roles, e.g. %v", replica, len(missing), missing[:min(5, len(missing))])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func roleIDs(t *testing.T, c *http.Client, p *proc, token string) []string {
	t.Helper()
	var ids []string
	after := ""
	for {
		q := p.url + "/api/v1/roles?limit=10000"
		if after != "" {
			q += "&after=" + after
		}
		code, body, err := call(context.Background(), c, "GET", q, token, "")
		if err != nil || code != http.StatusOK {
			t.Fatalf("list roles: %d %v %s", code, err, body)
		}
		var page []struct {
			RoleID string `json:"role_id"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("decode roles: %v", err)
		}
		if len(page) == 0 {
			return ids
		}
		for _, r := range page {
			ids = append(ids, r.RoleID)
		}
		after = page[len(page)-1].RoleID
	}
}
