package etcdtest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// fatalRecorder stands in for a test, to see how Binary fails.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestMissingEtcdFailsWithTheFix(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Binary(rec)
		t.Error("Binary returned without etcd on PATH")
	}()
	<-done
	if !strings.Contains(rec.msg, "make deps") {
		t.Fatalf("the failure does not name the fix: %q", rec.msg)
	}
}

func TestRestartKeepsTheData(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	if _, err := c.Put(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Kill(t)
	s.Restart(t)
	resp, err := c.Get(t.Context(), "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after a restart: %v %v", resp, err)
	}
}
