package benchrun

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is the unit of the CPU times in /proc/<pid>/stat. Linux
// reports them in USER_HZ, which is 100 on every architecture it exposes to
// user space.
const clockTicks = 100

// procSample is one reading of a process's memory and CPU time.
type procSample struct {
	// RSS is the resident set size in bytes.
	RSS int64
	// CPUTicks is user plus system time in clock ticks.
	CPUTicks int64
	// Threads is the number of threads.
	Threads int
}

// readProc reads the sample of process pid from /proc.
func readProc(pid int) (procSample, error) {
	var s procSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read status: %w", err)
	}
	if s.RSS, s.Threads, err = parseStatus(status); err != nil {
		return s, fmt.Errorf("parse /proc/%d/status: %w", pid, err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read stat: %w", err)
	}
	if s.CPUTicks, err = parseStat(stat); err != nil {
		return s, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return s, nil
}

// parseStatus returns VmRSS in bytes and Threads from the text of
// /proc/<pid>/status.
func parseStatus(b []byte) (rss int64, threads int, err error) {
	var haveRSS, haveThreads bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		switch key {
		case "VmRSS":
			if len(fields) != 2 || fields[1] != "kB" {
				return 0, 0, fmt.Errorf("VmRSS %q: want a number of kB", value)
			}
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil || kb < 0 {
				return 0, 0, fmt.Errorf("VmRSS %q: want a number of kB", value)
			}
			rss, haveRSS = kb*1024, true
		case "Threads":
			n, err := strconv.Atoi(strings.TrimSpace(value))
			if err != nil || n < 0 {
				return 0, 0, fmt.Errorf("threads %q: not a count", value)
			}
			threads, haveThreads = n, true
		}
	}
	if !haveRSS || !haveThreads {
		return 0, 0, errors.New("no VmRSS or Threads line")
	}
	return rss, threads, nil
}

// parseStat returns utime plus stime, in clock ticks, from the text of
// /proc/<pid>/stat. The command name, field 2, is in parentheses and may
// hold spaces and parentheses itself, so fields are counted from the last
// closing parenthesis.
func parseStat(b []byte) (int64, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, errors.New("no command name")
	}
	// After the name come state (field 3) onwards; utime and stime are
	// fields 14 and 15.
	fields := strings.Fields(string(b[end+1:]))
	const utime, stime = 14 - 3, 15 - 3
	if len(fields) <= stime {
		return 0, fmt.Errorf("%d fields after the command name, want more than %d",
			len(fields), stime)
	}
	var total int64
	for _, f := range []string{fields[utime], fields[stime]} {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("cpu time %q: not a tick count", f)
		}
		total += n
	}
	return total, nil
}

// memTotal returns MemTotal in bytes from the text of /proc/meminfo.
func memTotal(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || key != "MemTotal" {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("MemTotal %q: want a number of kB", value)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || kb <= 0 {
			return 0, fmt.Errorf("MemTotal %q: want a number of kB", value)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no MemTotal line")
}

// cpuModel returns the first "model name" in the text of /proc/cpuinfo, or
// "unknown".
func cpuModel(r io.Reader) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(key) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "unknown"
}

// fileLimits is the open-file limit of a process.
type fileLimits struct {
	Soft, Hard uint64
}

// raiseFileLimit raises this process's soft open-file limit to its hard
// limit, which the children it starts inherit, and returns the limits
// before and after.
func raiseFileLimit() (before, after fileLimits, err error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return before, after, fmt.Errorf("get open-file limit: %w", err)
	}
	before = fileLimits{Soft: rl.Cur, Hard: rl.Max}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return before, before, fmt.Errorf("raise open-file limit: %w", err)
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return before, before, fmt.Errorf("get open-file limit: %w", err)
	}
	return before, fileLimits{Soft: rl.Cur, Hard: rl.Max}, nil
}

// processFileLimit reads the open-file limit of process pid from
// /proc/<pid>/limits.
func processFileLimit(pid int) (fileLimits, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return fileLimits{}, fmt.Errorf("read limits: %w", err)
	}
	return parseFileLimit(b)
}

// parseFileLimit returns the "Max open files" limits from the text of
// /proc/<pid>/limits.
func parseFileLimit(b []byte) (fileLimits, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Max open files")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) < 2 {
			return fileLimits{}, fmt.Errorf("max open files %q: want soft and hard", rest)
		}
		var l fileLimits
		for i, dst := range []*uint64{&l.Soft, &l.Hard} {
			if fields[i] == "unlimited" {
				*dst = ^uint64(0)
				continue
			}
			n, err := strconv.ParseUint(fields[i], 10, 64)
			if err != nil {
				return fileLimits{}, fmt.Errorf("max open files %q: not a number", fields[i])
			}
			*dst = n
		}
		return l, nil
	}
	return fileLimits{}, errors.New("no Max open files line")
}

// goStats are Go runtime figures of a process.
type goStats struct {
	Goroutines int64
	// HeapInuse is the bytes in in-use heap spans: the live heap and its
	// fragmentation, without the free memory the runtime keeps.
	HeapInuse int64
}

// fetchGoStats reads goStats from a Prometheus endpoint with the Go
// collector.
func fetchGoStats(ctx context.Context, url string) (goStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return goStats{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return goStats{}, fmt.Errorf("get metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return goStats{}, fmt.Errorf("get metrics: %s", resp.Status)
	}
	return parseGoStats(io.LimitReader(resp.Body, 4<<20))
}

// parseGoStats reads go_goroutines and go_memstats_heap_inuse_bytes from
// Prometheus text exposition.
func parseGoStats(r io.Reader) (goStats, error) {
	var g goStats
	var haveG, haveH bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		var dst *int64
		switch f[0] {
		case "go_goroutines":
			dst, haveG = &g.Goroutines, true
		case "go_memstats_heap_inuse_bytes":
			dst, haveH = &g.HeapInuse, true
		default:
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil || v < 0 {
			return goStats{}, fmt.Errorf("metric %s: %q is not a count", f[0], f[1])
		}
		*dst = int64(v)
	}
	if err := sc.Err(); err != nil {
		return goStats{}, fmt.Errorf("read metrics: %w", err)
	}
	if !haveG || !haveH {
		return goStats{}, errors.New("no go_goroutines or go_memstats_heap_inuse_bytes")
	}
	return g, nil
}
