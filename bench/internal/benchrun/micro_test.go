package benchrun

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sampleBench = `goos: linux
goarch: amd64
pkg: github.com/cloudchat/cloudchat/cloudstate/crdt
cpu: AMD EPYC
BenchmarkMerge/vote-2         	 1000000	       105.3 ns/op	      16 B/op	       1 allocs/op
BenchmarkMarshal/orset-10k-2  	     100	   1234567 ns/op	    168913 bytes	  262144 B/op	   3 allocs/op
    bench_test.go:12: a log line
PASS
ok  	github.com/cloudchat/cloudchat/cloudstate/crdt	1.234s
pkg: github.com/cloudchat/cloudchat/cloudstate/proxy
BenchmarkDynamicBinaryDecodeEncode-2   	 1000	  480.5 ns/op	  31.22 MB/s
BenchmarkBroken-2 --- FAIL
`

func TestParseBench(t *testing.T) {
	t.Parallel()
	got := parseBench(sampleBench)
	want := []BenchRow{
		{Pkg: "github.com/cloudchat/cloudchat/cloudstate/crdt", Name: "BenchmarkMerge/vote",
			Iters: 1000000, NsPerOp: 105.3, BytesPerOp: 16, AllocsPerOp: 1},
		{Pkg: "github.com/cloudchat/cloudchat/cloudstate/crdt", Name: "BenchmarkMarshal/orset-10k",
			Iters: 100, NsPerOp: 1234567, BytesPerOp: 262144, AllocsPerOp: 3,
			Extra: []string{"168913 bytes"}},
		{Pkg: "github.com/cloudchat/cloudchat/cloudstate/proxy",
			Name: "BenchmarkDynamicBinaryDecodeEncode", Iters: 1000, NsPerOp: 480.5,
			BytesPerOp: -1, AllocsPerOp: -1, Extra: []string{"31.22 MB/s"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseBench (-want +got):\n%s", diff)
	}
}

const sampleTop = `File: hotpath.test
Type: cpu
Time: 2026-01-02 10:00:00 UTC
Duration: 3.21s, Total samples = 4.50s (140.19%)
Showing nodes accounting for 4.20s, 93.33% of 4.50s total
      flat  flat%   sum%        cum   cum%
     0.90s 20.00% 20.00%      0.90s 20.00%  internal/runtime/syscall.Syscall6
     0.45s 10.00% 30.00%      1.20s 26.67%  runtime.mallocgc
     0.30s  6.67% 36.67%      0.50s 11.11%  net/http.(*http2Framer).ReadFrame (inline)
     0.20s  4.44% 41.11%      0.40s  8.89%  github.com/cloudchat/cloudchat/cloudstate/proxy.(*entity).run
     0.10s  2.22% 43.33%      0.30s  6.67%  google.golang.org/protobuf/internal/impl.(*MessageInfo).unmarshalPointer
     0.05s  1.11% 44.44%      0.05s  1.11%  connectrpc.com/connect.(*duplexHTTPCall).Send
     0.05s  1.11% 45.55%      0.05s  1.11%  slices.SortFunc[go.shape.[]github.com/x/y.T,go.shape.int]
`

func TestParseTopAndLayers(t *testing.T) {
	t.Parallel()
	total, funcs := parseTop(sampleTop)
	if total != "Duration: 3.21s, Total samples = 4.50s (140.19%)" {
		t.Errorf("total %q", total)
	}
	if len(funcs) != 7 {
		t.Fatalf("got %d functions, want 7: %+v", len(funcs), funcs)
	}
	want := ProfileFunc{Name: "net/http.(*http2Framer).ReadFrame", FlatPct: 6.67, CumPct: 11.11,
		Flat: "0.30s"}
	if funcs[2] != want {
		t.Errorf("third function %+v, want %+v", funcs[2], want)
	}

	got := layerShares(funcs)
	byName := map[string]float64{}
	for _, s := range got {
		byName[s.Name] = s.Pct
	}
	for name, pct := range map[string]float64{
		"system calls and sockets":               20.00,
		"Go runtime (scheduler, GC, allocation)": 10.00,
		"HTTP/2 and HTTP":                        6.67,
		"chat: cloudstate/proxy":                 4.44,
		"protobuf (binary and JSON)":             2.22,
		"connect-go":                             1.11,
		"other standard library":                 1.11,
	} {
		if diff := byName[name] - pct; diff > 0.001 || diff < -0.001 {
			t.Errorf("layer %q = %v, want %v", name, byName[name], pct)
		}
	}
	if got[0].Name != "system calls and sockets" {
		t.Errorf("largest layer %q, want system calls", got[0].Name)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Pct > got[i-1].Pct {
			t.Errorf("layers not sorted: %+v", got)
		}
	}
}

func TestFuncPackage(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"runtime.mallocgc":                                  "runtime",
		"internal/runtime/syscall.Syscall6":                 "internal/runtime/syscall",
		"net/http.(*http2Framer).ReadFrame":                 "net/http",
		"github.com/a/b/c.(*T).m.func1":                     "github.com/a/b/c",
		"slices.SortFunc[go.shape.[]github.com/x/y.T]":      "slices",
		"google.golang.org/protobuf/proto.MarshalOptions.x": "google.golang.org/protobuf/proto",
		"nodots": "nodots",
	} {
		if got := funcPackage(name); got != want {
			t.Errorf("funcPackage(%q) = %q, want %q", name, got, want)
		}
	}
}

const sampleHeapTop = `File: hold.test
Type: inuse_space
Showing nodes accounting for 338.30MB, 93.90% of 360.27MB total
Dropped 704 nodes (cum <= 1.80MB)
      flat  flat%   sum%        cum   cum%
  306.01MB 84.94% 84.94%   306.05MB 84.95%  net/http.(*http2clientStream).writeRequestBody
    6.41MB  1.78% 89.53%     6.41MB  1.78%  bufio.NewWriterSize (inline)
  512.50kB  0.14% 89.67%   512.50kB  0.14%  runtime.malg
`

func TestParseHeapTop(t *testing.T) {
	t.Parallel()
	total, funcs := parseTop(sampleHeapTop)
	if total != "Showing nodes accounting for 338.30MB, 93.90% of 360.27MB total" {
		t.Errorf("total %q", total)
	}
	if len(funcs) != 3 || funcs[1].Name != "bufio.NewWriterSize" || funcs[2].Flat != "512.50kB" {
		t.Fatalf("got %+v", funcs)
	}
	for s, want := range map[string]float64{
		"306.01MB": 306.01 * (1 << 20), "512.50kB": 512.5 * 1024, "12B": 12, "1.5GB": 1.5 * (1 << 30),
	} {
		if got, ok := parseBytes(s); !ok || got != want {
			t.Errorf("parseBytes(%q) = %v, %v; want %v", s, got, ok, want)
		}
	}
	for _, bad := range []string{"", "12", "x MB", "-1MB", "0.30s"} {
		if _, ok := parseBytes(bad); ok {
			t.Errorf("parseBytes(%q) succeeded", bad)
		}
	}
}
