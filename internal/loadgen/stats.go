package loadgen

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"time"
)

// Summary describes a set of latencies.
type Summary struct {
	N                  int
	Min, P50, P90, P99 time.Duration
	P999, Max, Mean    time.Duration
}

// Summarize returns the summary of ds, which it sorts in place. Quantiles
// use the nearest-rank method: the q quantile is the smallest sample with
// at least q of all samples at or below it.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return Summary{
		N:    len(ds),
		Min:  ds[0],
		P50:  Quantile(ds, 0.50),
		P90:  Quantile(ds, 0.90),
		P99:  Quantile(ds, 0.99),
		P999: Quantile(ds, 0.999),
		Max:  ds[len(ds)-1],
		Mean: sum / time.Duration(len(ds)),
	}
}

// Quantile returns the q quantile (0 < q ≤ 1) of sorted by the nearest-rank
// method, or 0 for no samples.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Result is the outcome of a closed-loop load.
type Result struct {
	// Calls counts the calls that succeeded, Errors those that failed.
	Calls, Errors int
	// FirstErr is the first failure, if any.
	FirstErr error
	// Elapsed is the time from the first call to the last answer.
	Elapsed time.Duration
	// Latency summarizes the successful calls.
	Latency Summary
}

// Rate returns the successful calls per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Calls) / r.Elapsed.Seconds()
}

// Load calls op from concurrency workers, each call right after the
// previous one returns, until d has passed or ctx is done, and measures
// each call. op is given its worker's index and a count of the worker's
// calls. Calls are not cut short at the end of d: ctx carries no deadline
// of Load's, so a server never sees the end of the run as a timeout, and
// the last calls count in full.
func Load(
	ctx context.Context, concurrency int, d time.Duration,
	op func(ctx context.Context, worker, call int) error,
) Result {
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		res Result
		all []time.Duration
	)
	start := time.Now()
	end := start.Add(d)
	for w := range concurrency {
		wg.Go(func() {
			var lat []time.Duration
			var errs int
			var first error
			for call := 0; ctx.Err() == nil && time.Now().Before(end); call++ {
				t0 := time.Now()
				err := op(ctx, w, call)
				took := time.Since(t0)
				switch {
				case err == nil:
					lat = append(lat, took)
				case ctx.Err() != nil:
					// A call cut short because the caller gave up counts
					// for nothing.
				default:
					errs++
					if first == nil {
						first = err
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			all = append(all, lat...)
			res.Errors += errs
			if res.FirstErr == nil {
				res.FirstErr = first
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Calls = len(all)
	res.Latency = Summarize(all)
	return res
}

// Progress writes line() and a newline to w every interval until ctx is
// done.
func Progress(ctx context.Context, w io.Writer, interval time.Duration, line func() string) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fmt.Fprintln(w, line())
		}
	}
}
