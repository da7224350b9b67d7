package loadgen

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestQuantile(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = ms(i + 1)
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one sample", []time.Duration{ms(7)}, 0.99, ms(7)},
		{"median of two is the lower", []time.Duration{ms(1), ms(2)}, 0.5, ms(1)},
		{"p50 of 1..100", hundred, 0.50, ms(50)},
		{"p99 of 1..100", hundred, 0.99, ms(99)},
		{"p100 is the max", hundred, 1, ms(100)},
		{"tiny q is the min", hundred, 0.0001, ms(1)},
		{"p99 of ten is the max", hundred[:10], 0.99, ms(10)},
		{"p90 of ten", hundred[:10], 0.90, ms(9)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Quantile(tt.sorted, tt.q); got != tt.want {
				t.Errorf("Quantile(q=%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

func TestSummarizeSortsAndSummarizes(t *testing.T) {
	t.Parallel()
	ds := []time.Duration{ms(5), ms(1), ms(4), ms(2), ms(3)}
	got := Summarize(ds)
	want := Summary{N: 5, Min: ms(1), P50: ms(3), P90: ms(5), P99: ms(5), P999: ms(5),
		Max: ms(5), Mean: ms(3)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Summarize (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]time.Duration{ms(1), ms(2), ms(3), ms(4), ms(5)}, ds); diff != "" {
		t.Errorf("samples not sorted in place (-want +got):\n%s", diff)
	}
	if got := Summarize(nil); got != (Summary{}) {
		t.Errorf("Summarize(nil) = %+v, want zero", got)
	}
}

func TestLoadCountsCallsAndErrors(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		workers = map[int]bool{}
	)
	boom := errors.New("boom")
	res := Load(context.Background(), 4, 50*time.Millisecond,
		func(ctx context.Context, w, call int) error {
			if _, ok := ctx.Deadline(); ok {
				return errors.New("op got a deadline")
			}
			mu.Lock()
			workers[w] = true
			mu.Unlock()
			time.Sleep(time.Millisecond)
			if call%2 == 1 {
				return boom
			}
			return nil
		})
	if res.Calls == 0 || res.Errors == 0 {
		t.Fatalf("got %d calls and %d errors, want some of each", res.Calls, res.Errors)
	}
	// Every worker alternates success and failure, starting with success.
	if res.Errors > res.Calls || res.Calls > res.Errors+4 {
		t.Errorf("got %d calls and %d errors, want calls within 4 above errors",
			res.Calls, res.Errors)
	}
	if !errors.Is(res.FirstErr, boom) {
		t.Errorf("first error %v, want boom", res.FirstErr)
	}
	if len(workers) != 4 {
		t.Errorf("%d workers called, want 4", len(workers))
	}
	if res.Latency.N != res.Calls || res.Latency.Min < time.Millisecond {
		t.Errorf("latency %+v: want %d samples of at least 1ms", res.Latency, res.Calls)
	}
	if res.Elapsed < 50*time.Millisecond {
		t.Errorf("elapsed %v, want at least the 50ms asked for", res.Elapsed)
	}
	if res.Rate() <= 0 {
		t.Errorf("rate %v, want positive", res.Rate())
	}
}

func TestLoadStopsWhenCallerCancels(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	res := Load(ctx, 2, time.Hour, func(ctx context.Context, _, call int) error {
		if call == 3 {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	if res.Errors != 0 {
		t.Errorf("got %d errors, want the cancelled calls not counted: %v", res.Errors, res.FirstErr)
	}
	if res.Calls < 3 {
		t.Errorf("got %d calls, want at least the 3 before the cancel", res.Calls)
	}
}
