package ads

import (
	"testing"
	"time"
)

// TestDebouncer: a burst is translated once the registry has been quiet for
// the quiet period, or at the cap after its first change, whichever comes
// first; taking it starts afresh.
func TestDebouncer(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	tests := []struct {
		name    string
		changes []int // ms after t0
		due     int
	}{
		{"one change", []int{0}, 100},
		{"changes closer than quiet extend it", []int{0, 50, 120}, 220},
		{"a steady stream is capped", []int{0, 90, 180, 270, 360, 450, 540, 630, 720, 810, 900, 990}, 1000},
		{"the cap counts from the first change", []int{500, 1400}, 1500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := debouncer{quiet: 100 * time.Millisecond, maxWait: time.Second}
			for _, c := range tt.changes {
				d.add(ms(c))
			}
			if got := d.due(); !got.Equal(ms(tt.due)) {
				t.Fatalf("due at %v, want %v", got.Sub(t0), ms(tt.due).Sub(t0))
			}
			if first := d.take(); !first.Equal(ms(tt.changes[0])) || d.pending {
				t.Fatalf("take: first %v pending %v", first.Sub(t0), d.pending)
			}
			d.add(ms(5000))
			if got := d.due(); !got.Equal(ms(5100)) {
				t.Fatalf("after take: due %v", got.Sub(t0))
			}
		})
	}
}

// TestDebouncerStartsConvergenceAtCommit: a burst's convergence starts at
// the earliest registry commit folded into it, not when the change feed
// delivered it; without commit times it falls back to arrival.
func TestDebouncerStartsConvergenceAtCommit(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := debouncer{quiet: 100 * time.Millisecond, maxWait: time.Second}
	d.add(t0.Add(10 * time.Millisecond))
	d.committed(t0.Add(4 * time.Millisecond))
	d.add(t0.Add(30 * time.Millisecond))
	d.committed(t0.Add(2 * time.Millisecond))
	d.committed(time.Time{})
	if got := d.take(); !got.Equal(t0.Add(2 * time.Millisecond)) {
		t.Fatalf("convergence starts at %v, want the earliest commit", got.Sub(t0))
	}
	d.add(t0.Add(50 * time.Millisecond))
	if got := d.take(); !got.Equal(t0.Add(50 * time.Millisecond)) {
		t.Fatalf("without commit times: %v, want arrival", got.Sub(t0))
	}
}
