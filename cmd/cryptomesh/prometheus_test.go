package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPrometheusScrapesTheControlPlane checks /metrics with the real
// tools: promtool lints the exposition, and a real Prometheus server
// scrapes the real binary and answers queries over what it scraped.
func TestPrometheusScrapesTheControlPlane(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: run `make deps` (Debian package prometheus)")
	}
	prometheus, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: run `make deps` (Debian package prometheus)")
	}
	const token = "prometheus-test-token-0123456789"
	p := startServer(t, "--data-dir", t.TempDir(), "--api-token", token, "--apply", "../../examples/ml-pipeline/mesh.yaml")
	client := &http.Client{Timeout: 10 * time.Second}
	// Some API traffic, so the request metrics have series.
	if code, body, err := call(context.Background(), client, "GET", p.url+"/api/v1/functions/predict_online", token, ""); err != nil || code != http.StatusOK {
		t.Fatalf("get function: %d %v %s", code, err, body)
	}

	code, metrics, err := call(context.Background(), client, "GET", p.url+"/metrics", "", "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	if bytes.Contains(metrics, []byte(token)) {
		t.Fatal("/metrics contains the admin token")
	}
	lint := exec.Command(promtool, "check", "metrics")
	lint.Stdin = bytes.NewReader(metrics)
	if out, err := lint.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}

	// A real Prometheus scraping the server every 200 ms.
	dir := t.TempDir()
	target := strings.TrimPrefix(p.url, "http://")
	config := fmt.Sprintf("global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\nscrape_configs:\n  - job_name: cryptomesh\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	promAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs bytes.Buffer
	cmd := exec.CommandContext(ctx, prometheus,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr,
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()

	query := func(q string) (float64, bool) {
		resp, err := client.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return 0, false
		}
		defer resp.Body.Close()
		var out struct {
			Status string `json:"status"`
			Data   struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&out) != nil || out.Status != "success" || len(out.Data.Result) != 1 {
			return 0, false
		}
		var v float64
		s, _ := out.Data.Result[0].Value[1].(string)
		if _, err := fmt.Sscan(s, &v); err != nil {
			return 0, false
		}
		return v, true
	}
	for _, c := range []struct {
		query string
		want  float64
	}{
		{`up{job="cryptomesh"}`, 1},
		{`cryptomesh_registry_objects{kind="functions"}`, 11},
		{`cryptomesh_registry_objects{kind="roles"}`, 6},
		{`sum(cryptomesh_api_requests_total{route="/api/v1/functions/{id}",method="GET",code="200"})`, 1},
	} {
		deadline := time.Now().Add(60 * time.Second)
		for {
			if v, ok := query(c.query); ok && v == c.want {
				break
			}
			if time.Now().After(deadline) {
				v, _ := query(c.query)
				t.Fatalf("Prometheus never answered %s = %v (last %v)\n%s", c.query, c.want, v, logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
