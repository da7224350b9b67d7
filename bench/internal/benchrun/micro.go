package benchrun

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// microPackages hold the micro-benchmarks of CRDT merge and delta, entity
// key extraction and dynamic message encoding and decoding.
var microPackages = []string{"./cloudstate/crdt", "./cloudstate/proxy"}

// profiled are the benchmarks run under the CPU profiler: the proxy's
// unary round trip, and whole paths from a client through the gateway, the
// proxies and the functions, all in one process. benchtime, when set,
// replaces the run's ProfileTime; holding sessions is profiled over a fixed
// count so that the cost of the sessions already open shows.
var profiled = []struct{ pkg, bench, benchtime string }{
	{"./cloudstate/proxy", "BenchmarkUnaryRoundTrip", ""},
	{"./bench/internal/hotpath", "BenchmarkGetFriendsThroughGateway", ""},
	{"./bench/internal/hotpath", "BenchmarkAddThroughGateway", ""},
	{"./bench/internal/hotpath", "BenchmarkOpenSession", ""},
	{"./bench/internal/hotpath", "BenchmarkHoldSessions", holdProfileSessions},
}

// holdProfileSessions is the -benchtime of the CPU profile of opening and
// holding sessions.
const holdProfileSessions = "3000x"

// heapSessions is the number of sessions held for the heap profile.
const heapSessions = 500

// HeapProfile is what holding sessions costs, by allocation site.
type HeapProfile struct {
	Err string
	// Sessions were held in one process running the whole chat.
	Sessions int
	// Total is the heap in use at the end, per pprof.
	Total string
	// Top are the allocation sites with the most heap in use.
	Top []ProfileFunc
}

// heapProfile holds heapSessions sessions in one process running the
// whole chat and reads its heap profile.
func (r *runner) heapProfile(ctx context.Context, dir string) HeapProfile {
	res := HeapProfile{Sessions: heapSessions}
	stop := r.progress(ctx, func() string { return "  heap profile of held sessions" })
	defer stop()
	bin := filepath.Join(dir, "hold.test")
	heap := filepath.Join(dir, "hold.heap")
	out, err := r.goCmd(ctx, "test", "-run", "^$", "-bench", "^BenchmarkHoldSessions$",
		"-benchtime", fmt.Sprintf("%dx", heapSessions), "-memprofile", heap,
		"-memprofilerate", "4096", "-o", bin, "./bench/internal/hotpath")
	if err != nil {
		res.Err = fmt.Sprintf("go test: %v\n%s", err, tail(out, 10))
		return res
	}
	out, err = r.goCmd(ctx, "tool", "pprof", "-sample_index=inuse_space", "-top",
		"-nodecount=12", bin, heap)
	if err != nil {
		res.Err = fmt.Sprintf("go tool pprof: %v\n%s", err, tail(out, 10))
		return res
	}
	res.Total, res.Top = parseTop(out)
	return res
}

// parseBytes reads a pprof memory figure such as "306.01MB"; pprof's
// units step by 1024.
func parseBytes(s string) (float64, bool) {
	units := []struct {
		suffix string
		factor float64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v < 0 {
				return 0, false
			}
			return v * u.factor, true
		}
	}
	return 0, false
}

// BenchRow is one line of go test -bench output.
type BenchRow struct {
	Pkg, Name string
	Iters     int64
	NsPerOp   float64
	// BytesPerOp and AllocsPerOp are -1 when not reported.
	BytesPerOp, AllocsPerOp int64
	// Extra holds other metrics, such as "81.20 MB/s".
	Extra []string
}

// Profile is the CPU profile of one benchmark.
type Profile struct {
	Pkg, Bench, BenchTime string
	Err                   string
	// Row is the benchmark's result while profiled.
	Row *BenchRow
	// Total is pprof's summary line of the samples.
	Total string
	// Top are the functions with the most flat time, most first.
	Top []ProfileFunc
	// Layers are the shares of flat time by layer, most first.
	Layers []Share
}

// ProfileFunc is one function of a profile.
type ProfileFunc struct {
	Name            string
	FlatPct, CumPct float64
	// Flat is pprof's flat figure, such as "306.01MB" or "0.45s".
	Flat string
}

// Share is a named part of a whole, in percent.
type Share struct {
	Name string
	Pct  float64
}

// MicroResult holds the micro-benchmarks and profiles.
type MicroResult struct {
	Ran       bool
	Err       string
	BenchTime string
	Rows      []BenchRow
	Profiles  []Profile
	Heap      HeapProfile
}

// micro runs the micro-benchmarks, then each profiled benchmark.
func (r *runner) micro(ctx context.Context) MicroResult {
	res := MicroResult{Ran: true, BenchTime: r.cfg.BenchTime}
	stop := r.progress(ctx, func() string { return "  go test -bench: running" })
	args := append([]string{"test", "-run", "^$", "-bench", ".", "-benchmem",
		"-benchtime", r.cfg.BenchTime}, microPackages...)
	out, err := r.goCmd(ctx, args...)
	stop()
	res.Rows = parseBench(out)
	if err != nil {
		res.Err = fmt.Sprintf("go test: %v\n%s", err, tail(out, 10))
	}

	dir := filepath.Join(r.logDir, "profiles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.Err = joinErr(res.Err, err.Error())
		return res
	}
	for _, p := range profiled {
		bt := p.benchtime
		if bt == "" {
			bt = r.cfg.ProfileTime
		}
		res.Profiles = append(res.Profiles, r.profile(ctx, dir, p.pkg, p.bench, bt))
	}
	res.Heap = r.heapProfile(ctx, dir)
	return res
}

// profile runs one benchmark with the CPU profiler and reads the profile.
func (r *runner) profile(ctx context.Context, dir, pkg, bench, benchtime string) Profile {
	prof := Profile{Pkg: pkg, Bench: bench, BenchTime: benchtime}
	stop := r.progress(ctx, func() string { return "  profiling " + bench })
	defer stop()
	bin := filepath.Join(dir, bench+".test")
	cpu := filepath.Join(dir, bench+".cpu")
	out, err := r.goCmd(ctx, "test", "-run", "^$", "-bench", "^"+bench+"$", "-benchmem",
		"-benchtime", benchtime, "-cpuprofile", cpu, "-o", bin, pkg)
	if err != nil {
		prof.Err = fmt.Sprintf("go test: %v\n%s", err, tail(out, 10))
		return prof
	}
	if rows := parseBench(out); len(rows) > 0 {
		prof.Row = &rows[0]
	}
	out, err = r.goCmd(ctx, "tool", "pprof", "-top", "-nodecount=1000", bin, cpu)
	if err != nil {
		prof.Err = fmt.Sprintf("go tool pprof: %v\n%s", err, tail(out, 10))
		return prof
	}
	var funcs []ProfileFunc
	prof.Total, funcs = parseTop(out)
	prof.Layers = layerShares(funcs)
	prof.Top = funcs[:min(len(funcs), 12)]
	return prof
}

// goCmd runs the go command in the module's root and returns its
// combined output.
func (r *runner) goCmd(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = r.cfg.RepoDir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// procsSuffix is the "-N" that go test appends to benchmark names when
// GOMAXPROCS is not 1.
var procsSuffix = regexp.MustCompile(`-\d+$`)

// parseBench returns the benchmark lines of go test -bench output.
func parseBench(out string) []BenchRow {
	var rows []BenchRow
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		iters, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		row := BenchRow{Pkg: pkg, Name: procsSuffix.ReplaceAllString(f[0], ""), Iters: iters,
			BytesPerOp: -1, AllocsPerOp: -1}
		ok := true
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				ok = false
				break
			}
			switch f[i+1] {
			case "ns/op":
				row.NsPerOp = v
			case "B/op":
				row.BytesPerOp = int64(v)
			case "allocs/op":
				row.AllocsPerOp = int64(v)
			default:
				row.Extra = append(row.Extra, f[i]+" "+f[i+1])
			}
		}
		if ok {
			rows = append(rows, row)
		}
	}
	return rows
}

// parseTop returns the summary line and the functions of go tool pprof
// -top output.
func parseTop(out string) (string, []ProfileFunc) {
	var (
		total  string
		funcs  []ProfileFunc
		inBody bool
	)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		// CPU profiles lead with the duration and samples, heap profiles
		// with the nodes shown of the total.
		if total == "" && (strings.HasPrefix(line, "Duration:") ||
			strings.HasPrefix(line, "Showing nodes")) {
			total = strings.TrimSpace(line)
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 5 && f[0] == "flat" && f[1] == "flat%" {
			inBody = true
			continue
		}
		if !inBody || len(f) < 6 {
			continue
		}
		flat, err1 := parsePct(f[1])
		cum, err2 := parsePct(f[4])
		if err1 != nil || err2 != nil {
			continue
		}
		name := strings.TrimSuffix(strings.Join(f[5:], " "), " (inline)")
		funcs = append(funcs, ProfileFunc{Name: name, FlatPct: flat, CumPct: cum, Flat: f[0]})
	}
	return total, funcs
}

func parsePct(s string) (float64, error) {
	return strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
}

// funcPackage returns the import path of a function named by pprof, such
// as "net/http" for "net/http.(*http2Framer).ReadFrame".
func funcPackage(name string) string {
	if i := strings.IndexByte(name, '['); i >= 0 {
		name = name[:i]
	}
	slash := strings.LastIndexByte(name, '/')
	dot := strings.IndexByte(name[slash+1:], '.')
	if dot < 0 {
		return name
	}
	return name[:slash+1+dot]
}

// layer names the part of the stack a package belongs to.
func layer(pkg string) string {
	switch {
	case strings.HasPrefix(pkg, "github.com/cloudchat/cloudchat/"):
		return "chat: " + strings.TrimPrefix(pkg, "github.com/cloudchat/cloudchat/")
	case pkg == "syscall" || pkg == "internal/poll" || pkg == "net" ||
		strings.HasPrefix(pkg, "internal/runtime/syscall") ||
		strings.HasPrefix(pkg, "golang.org/x/sys"):
		return "system calls and sockets"
	case pkg == "runtime" || strings.HasPrefix(pkg, "internal/runtime/") ||
		strings.HasPrefix(pkg, "runtime/"):
		return "Go runtime (scheduler, GC, allocation)"
	case pkg == "net/http" || strings.HasPrefix(pkg, "golang.org/x/net/http2") ||
		strings.HasPrefix(pkg, "net/http/") || pkg == "vendor/golang.org/x/net/http2/hpack":
		return "HTTP/2 and HTTP"
	case strings.HasPrefix(pkg, "connectrpc.com/"):
		return "connect-go"
	case strings.HasPrefix(pkg, "google.golang.org/protobuf/"):
		return "protobuf (binary and JSON)"
	case pkg == "sync" || pkg == "sync/atomic" || pkg == "internal/sync":
		return "locks (sync)"
	case strings.HasPrefix(pkg, "compress/") || pkg == "hash/crc32":
		return "compression (gzip)"
	case strings.HasPrefix(pkg, "github.com/hashicorp/"):
		return "memberlist"
	}
	return "other standard library"
}

// layerShares sums the flat time of funcs by layer, most first.
func layerShares(funcs []ProfileFunc) []Share {
	sums := map[string]float64{}
	for _, f := range funcs {
		sums[layer(funcPackage(f.Name))] += f.FlatPct
	}
	var out []Share
	for name, pct := range sums {
		out = append(out, Share{Name: name, Pct: pct})
	}
	slices.SortFunc(out, func(a, b Share) int {
		if a.Pct != b.Pct {
			if a.Pct > b.Pct {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}
