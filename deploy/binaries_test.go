package deploy

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// repoRoot is the repository's root, seen from this package's directory.
const repoRoot = ".."

// binaryNames lists the binaries that the images and manifests run.
var binaryNames = []string{"presence", "friends", "proxy", "gateway"}

// portContract holds the default ports that the binaries promise (the shared
// table of binaries, flags and ports). The images' EXPOSE lines and the
// manifests' container ports are checked against these, and a default found
// in a main's source must agree with them.
var portContract = map[string]map[string]string{
	"presence": {"PORT": "8080"},
	"friends":  {"PORT": "8080"},
	"proxy": {
		"HTTP_PORT":          "9000",
		"METRICS_PORT":       "9090",
		"USER_FUNCTION_PORT": "8080",
		"CLUSTER_PORT":       "7946",
	},
	"gateway": {"PORT": "3000"},
}

// binary is what one main package reads from its command line and its
// environment, as found in its source.
type binary struct {
	name string
	// env maps each environment variable the main reads to its default,
	// or to "" when the source shows none.
	env map[string]string
	// flags maps each flag name to its default, or to "" when none shows.
	flags map[string]string
}

// defaultOf returns the default of env var name: the one in the source if
// there is one, else the flag of the same name's default, else the contract.
func (b binary) defaultOf(name string) string {
	if v := b.env[name]; v != "" {
		return v
	}
	if v := b.flags[flagNameFor(name)]; v != "" {
		return v
	}
	return portContract[b.name][name]
}

// flagNameFor maps an environment variable to the flag that usually goes with
// it: HTTP_PORT to http-port.
func flagNameFor(env string) string {
	return strings.ReplaceAll(strings.ToLower(env), "_", "-")
}

var (
	binariesOnce sync.Once
	binaries     map[string]binary
	binariesErr  map[string]error
)

// loadBinary returns what cmd/<name> reads, failing the test with a clear
// message when the main is missing or shows no environment lookups.
func loadBinary(t testing.TB, name string) binary {
	t.Helper()
	binariesOnce.Do(func() {
		binaries = map[string]binary{}
		binariesErr = map[string]error{}
		for _, n := range binaryNames {
			b, err := readBinary(filepath.Join(repoRoot, "cmd", n), n)
			if err != nil {
				binariesErr[n] = err
				continue
			}
			binaries[n] = b
		}
	})
	if err := binariesErr[name]; err != nil {
		t.Fatalf("binary %s: %v", name, err)
	}
	return binaries[name]
}

// readBinary parses the non-test Go files of a main package's directory.
func readBinary(dir, name string) (binary, error) {
	main := filepath.Join(dir, "main.go")
	if _, err := os.Stat(main); errors.Is(err, fs.ErrNotExist) {
		return binary{}, fmt.Errorf("%s does not exist yet: the images and manifests "+
			"run this binary, and its flags and environment are read from there", main)
	}
	srcs, err := packageSources(dir)
	if err != nil {
		return binary{}, err
	}
	// A main may leave reading its settings to a package of the module's
	// internal/ tree, such as the common main of the user functions.
	for _, src := range srcs {
		f, err := parser.ParseFile(token.NewFileSet(), "", src, parser.ImportsOnly)
		if err != nil {
			return binary{}, fmt.Errorf("parse imports: %w", err)
		}
		for _, imp := range f.Imports {
			path := strings.Trim(imp.Path.Value, `"`)
			rel, ok := strings.CutPrefix(path, modulePath+"/internal/")
			if !ok {
				continue
			}
			more, err := packageSources(filepath.Join(repoRoot, "internal", rel))
			if err != nil {
				return binary{}, err
			}
			srcs = append(srcs, more...)
		}
	}
	return parseBinary(name, srcs...)
}

// modulePath is the import path of the application module.
const modulePath = "github.com/cloudchat/cloudchat"

// packageSources returns the non-test Go sources of a package directory.
func packageSources(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, fmt.Errorf("list sources: %w", err)
	}
	var srcs []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read source: %w", err)
		}
		srcs = append(srcs, string(b))
	}
	return srcs, nil
}

var envNamePattern = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// flagFuncs are the flag package's functions and FlagSet methods that
// define a flag; the flag's name is the first string literal among their
// arguments, and its default the argument after the name, when the call has
// one that is a literal.
var flagFuncs = map[string]bool{
	"Bool": true, "BoolVar": true, "BoolFunc": true,
	"Duration": true, "DurationVar": true,
	"Float64": true, "Float64Var": true,
	"Func": true, "TextVar": true, "Var": true,
	"Int": true, "IntVar": true, "Int64": true, "Int64Var": true,
	"String": true, "StringVar": true,
	"Uint": true, "UintVar": true, "Uint64": true, "Uint64Var": true,
}

// parseBinary finds the environment variables and flags that a main reads.
// It recognises these shapes, in any combination:
//
//	os.Getenv("PORT"), os.LookupEnv("PORT")
//	envInt("PORT", 8080), envOr("HOST", "127.0.0.1"), cfg.FromEnv("PORT", ...)
//	flag.Int("port", 8080, "..."), fs.StringVar(&s, "host", "127.0.0.1", "...")
//
// An environment variable is an upper-case string literal passed to any call
// whose function name contains "env" (in any case); the call's one other
// literal argument, if it has exactly one, is its default. Flags are defined
// through the flag package or a FlagSet made by flag.NewFlagSet.
func parseBinary(name string, srcs ...string) (binary, error) {
	b := binary{name: name, env: map[string]string{}, flags: map[string]string{}}
	fset := token.NewFileSet()
	for i, src := range srcs {
		f, err := parser.ParseFile(fset, fmt.Sprintf("%s/%d.go", name, i), src,
			parser.SkipObjectResolution)
		if err != nil {
			return binary{}, fmt.Errorf("parse: %w", err)
		}
		flagSets := map[string]bool{}
		if pkg := flagPackageName(f); pkg != "" {
			flagSets[pkg] = true
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.AssignStmt:
					recordFlagSets(n.Lhs, n.Rhs, flagSets, pkg)
				case *ast.ValueSpec:
					lhs := make([]ast.Expr, len(n.Names))
					for i, id := range n.Names {
						lhs[i] = id
					}
					recordFlagSets(lhs, n.Values, flagSets, pkg)
				}
				return true
			})
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			fn, recv := callee(call)
			if strings.Contains(strings.ToLower(fn), "env") {
				recordEnv(b.env, call)
			}
			if flagFuncs[fn] && flagSets[recv] {
				recordFlag(b.flags, call)
			}
			return true
		})
	}
	if len(b.env) == 0 {
		return binary{}, errors.New("no environment lookup found in cmd/" + name +
			": expected calls such as os.Getenv(\"PORT\") or envInt(\"PORT\", 8080)")
	}
	return b, nil
}

// flagPackageName returns the name under which file f imports package flag,
// or "" when it does not.
func flagPackageName(f *ast.File) string {
	for _, imp := range f.Imports {
		if imp.Path.Value != `"flag"` {
			continue
		}
		if imp.Name != nil {
			return imp.Name.Name
		}
		return "flag"
	}
	return ""
}

// recordFlagSets notes the variables assigned from flag.NewFlagSet.
func recordFlagSets(lhs, rhs []ast.Expr, sets map[string]bool, flagPkg string) {
	for i, r := range rhs {
		call, ok := r.(*ast.CallExpr)
		if !ok || i >= len(lhs) {
			continue
		}
		if fn, recv := callee(call); fn == "NewFlagSet" && recv == flagPkg {
			if id, ok := lhs[i].(*ast.Ident); ok {
				sets[id.Name] = true
			}
		}
	}
}

// callee returns the called function's name and, for a selector such as
// flag.Int, the identifier before the dot.
func callee(call *ast.CallExpr) (fn, recv string) {
	switch f := call.Fun.(type) {
	case *ast.Ident:
		return f.Name, ""
	case *ast.SelectorExpr:
		if id, ok := f.X.(*ast.Ident); ok {
			return f.Sel.Name, id.Name
		}
		return f.Sel.Name, ""
	}
	return "", ""
}

func recordEnv(env map[string]string, call *ast.CallExpr) {
	var names, others []string
	for _, arg := range call.Args {
		lit, ok := arg.(*ast.BasicLit)
		if !ok {
			continue
		}
		v := literalValue(lit)
		if lit.Kind == token.STRING && envNamePattern.MatchString(v) && len(names) == 0 {
			names = append(names, v)
			continue
		}
		others = append(others, v)
	}
	if len(names) == 0 {
		return
	}
	def := ""
	if len(others) == 1 {
		def = others[0]
	}
	if env[names[0]] == "" {
		env[names[0]] = def
	}
}

func recordFlag(flags map[string]string, call *ast.CallExpr) {
	for i, arg := range call.Args {
		lit, ok := arg.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			continue
		}
		name := literalValue(lit)
		def := ""
		if i+1 < len(call.Args) {
			if d, ok := call.Args[i+1].(*ast.BasicLit); ok {
				def = literalValue(d)
			}
		}
		flags[name] = def
		return
	}
}

// literalValue returns a literal as written, strings unquoted.
func literalValue(lit *ast.BasicLit) string {
	if lit.Kind != token.STRING {
		return lit.Value
	}
	s, err := strconv.Unquote(lit.Value)
	if err != nil {
		return lit.Value
	}
	return s
}

// servesPath checks that the non-test sources of the package tree at dir
// (relative to the repository root) route path, as a string literal such as
// "/healthz" or "GET /healthz". A probe of a path that no handler serves
// would fail in the cluster and nowhere else.
func servesPath(dir, path string) error {
	root := filepath.Join(repoRoot, dir)
	found := false
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found {
			return err
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if ok && lit.Kind == token.STRING {
				v := literalValue(lit)
				if _, route, ok := strings.Cut(v, " "); ok {
					v = route
				}
				found = found || v == path
			}
			return !found
		})
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s/ does not exist yet: the manifests probe its %s", dir, path)
	}
	if err != nil {
		return fmt.Errorf("scan %s: %w", dir, err)
	}
	if !found {
		return fmt.Errorf("nothing under %s/ routes %s, which the manifests probe", dir, path)
	}
	return nil
}

func TestParseBinary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		src       string
		wantEnv   map[string]string
		wantFlags map[string]string
		wantErr   bool
	}{
		{
			name: "env helpers as flag defaults",
			src: `package main
import "flag"
func main() {
	port := flag.Int("port", envInt("PORT", 8080), "port (env PORT)")
	host := flag.String("host", envOr("HOST", "127.0.0.1"), "host (env HOST)")
	_ = os.Getenv("NODE_NAME")
	slog.String("addr", "x")
}`,
			wantEnv:   map[string]string{"PORT": "8080", "HOST": "127.0.0.1", "NODE_NAME": ""},
			wantFlags: map[string]string{"port": "", "host": ""},
		},
		{
			name: "flag set and lookups",
			src: `package main
import fl "flag"
func main() {
	fs := fl.NewFlagSet("proxy", fl.ContinueOnError)
	fs.IntVar(&c.HTTPPort, "http-port", 9000, "")
	fs.DurationVar(&c.Passivation, "passivation-timeout", 30*time.Second, "")
	if v, ok := os.LookupEnv("HTTP_PORT"); ok { _ = v }
	flag.Int("ignored", 1, "")
}`,
			wantEnv:   map[string]string{"HTTP_PORT": ""},
			wantFlags: map[string]string{"http-port": "9000", "passivation-timeout": ""},
		},
		{
			name:    "no environment",
			src:     "package main\nfunc main() { flag.Int(\"port\", 1, \"\") }",
			wantErr: true,
		},
		{
			name:    "broken source",
			src:     "package main\nfunc main() {",
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := parseBinary("test", tt.src)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseBinary: got no error, want one")
				}
				return
			}
			if err != nil {
				t.Fatalf("parseBinary: %v", err)
			}
			if !mapsEqual(b.env, tt.wantEnv) {
				t.Errorf("env: got %v, want %v", b.env, tt.wantEnv)
			}
			if !mapsEqual(b.flags, tt.wantFlags) {
				t.Errorf("flags: got %v, want %v", b.flags, tt.wantFlags)
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestBinariesKeepContract checks that every main reads the environment
// variables that the manifests rely on, with the promised default ports.
func TestBinariesKeepContract(t *testing.T) {
	t.Parallel()
	for _, name := range binaryNames {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := loadBinary(t, name)
			keys := make([]string, 0, len(portContract[name]))
			for k := range portContract[name] {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, env := range keys {
				want := portContract[name][env]
				def, ok := b.env[env]
				if !ok {
					t.Errorf("cmd/%s reads no %s; the manifests set it", name, env)
					continue
				}
				if def == "" {
					def = b.flags[flagNameFor(env)]
				}
				if def != "" && def != want {
					t.Errorf("cmd/%s: %s defaults to %s, the contract says %s",
						name, env, def, want)
				}
			}
		})
	}
}
