package benchrun

import (
	"os"
	"strings"
	"testing"
)

const sampleStatus = `Name:	gateway
Umask:	0022
State:	S (sleeping)
VmPeak:	 1268788 kB
VmSize:	 1268788 kB
VmHWM:	   52340 kB
VmRSS:	   48212 kB
RssAnon:	   30000 kB
Threads:	11
SigQ:	0/95537
`

func TestParseStatus(t *testing.T) {
	t.Parallel()
	rss, threads, err := parseStatus([]byte(sampleStatus))
	if err != nil {
		t.Fatal(err)
	}
	if rss != 48212*1024 || threads != 11 {
		t.Errorf("got rss %d, threads %d; want %d, 11", rss, threads, 48212*1024)
	}
	for _, bad := range []string{
		"Name: x\nThreads: 3\n",
		"VmRSS: 12 kB\n",
		"VmRSS: twelve kB\nThreads: 3\n",
		"VmRSS: 12 MB\nThreads: 3\n",
		"VmRSS: 12 kB\nThreads: -3\n",
	} {
		if _, _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		stat string
		want int64
	}{
		{"plain", "1234 (gateway) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 11 0 " +
			"900 1268788 12053 18446744073709551615", 325},
		{"name with spaces and parentheses", "77 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 3 4 0 0 20 0 1 0",
			7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseStat([]byte(tt.stat))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %d ticks, want %d", got, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 x 4 5", "1 x S"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) succeeded, want an error", bad)
		}
	}
}

func TestReadProcOfThisProcess(t *testing.T) {
	t.Parallel()
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.Threads < 1 || s.CPUTicks < 0 {
		t.Errorf("got %+v, want positive RSS and threads", s)
	}
	if _, err := readProc(-1); err == nil {
		t.Error("readProc(-1) succeeded, want an error")
	}
}

func TestMemTotalAndCPUModel(t *testing.T) {
	t.Parallel()
	got, err := memTotal(strings.NewReader("MemTotal:       24683520 kB\nMemFree: 1 kB\n"))
	if err != nil || got != 24683520*1024 {
		t.Errorf("memTotal = %d, %v; want %d", got, err, 24683520*1024)
	}
	if _, err := memTotal(strings.NewReader("MemFree: 1 kB\n")); err == nil {
		t.Error("memTotal without MemTotal succeeded")
	}
	info := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
	if got := cpuModel(strings.NewReader(info)); got != "AMD EPYC 7B13" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := cpuModel(strings.NewReader("")); got != "unknown" {
		t.Errorf("cpuModel of nothing = %q, want unknown", got)
	}
}

func TestParseFileLimit(t *testing.T) {
	t.Parallel()
	limits := "Limit                     Soft Limit           Hard Limit           Units\n" +
		"Max processes             95537                95537                processes\n" +
		"Max open files            1024                 524288               files\n"
	got, err := parseFileLimit([]byte(limits))
	if err != nil || got != (fileLimits{Soft: 1024, Hard: 524288}) {
		t.Errorf("got %+v, %v; want 1024/524288", got, err)
	}
	unl := "Max open files            unlimited            unlimited            files\n"
	got, err = parseFileLimit([]byte(unl))
	if err != nil || got.Soft != ^uint64(0) || limit(got.Hard) != "unlimited" {
		t.Errorf("got %+v, %v; want unlimited", got, err)
	}
	if _, err := parseFileLimit([]byte("Max processes 1 1 processes\n")); err == nil {
		t.Error("parseFileLimit without the line succeeded")
	}
}

func TestParseGoStats(t *testing.T) {
	t.Parallel()
	text := "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\n" +
		"go_goroutines 1234\ngo_memstats_heap_inuse_bytes 2.5165824e+07\n" +
		"go_memstats_heap_alloc_bytes 1e+07\n"
	got, err := parseGoStats(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if got != (goStats{Goroutines: 1234, HeapInuse: 25165824}) {
		t.Errorf("got %+v", got)
	}
	for _, bad := range []string{
		"go_goroutines 1\n",
		"go_goroutines x\ngo_memstats_heap_inuse_bytes 1\n",
	} {
		if _, err := parseGoStats(strings.NewReader(bad)); err == nil {
			t.Errorf("parseGoStats(%q) succeeded, want an error", bad)
		}
	}
}

func TestRaiseFileLimit(t *testing.T) {
	before, after, err := raiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	if after.Soft != before.Hard || after.Hard != before.Hard {
		t.Errorf("after %+v, want soft raised to the hard limit %d", after, before.Hard)
	}
	got, err := processFileLimit(os.Getpid())
	if err != nil || got != after {
		t.Errorf("/proc says %+v, %v; want %+v", got, err, after)
	}
}
