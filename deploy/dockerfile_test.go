package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	dfparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

const (
	// runtimeBase is the base of every final image: static binaries need no
	// libc, and its nonroot user is uid 65532.
	runtimeBase = "gcr.io/distroless/static-debian12:nonroot"
	goBase      = "golang:1.26"
	nodeBase    = "node:"
	// distDir is where the frontend's build lands and the gateway embeds it,
	// relative to the repository root.
	distDir = "gateway/web/dist"
)

// dockerfile is the parsed Dockerfile, its meta ARGs applied to FROM lines.
type dockerfile struct {
	stages []instructions.Stage
	byName map[string]*instructions.Stage
}

func parseDockerfile(t *testing.T, data []byte) dockerfile {
	t.Helper()
	res, err := dfparser.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parse Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile: %s", w.Short)
	}
	lint := linter.New(&linter.Config{
		Warn: func(rule, desc, url, msg string, loc []dfparser.Range) {
			line := 0
			if len(loc) > 0 {
				line = loc[0].Start.Line
			}
			t.Errorf("Dockerfile:%d: %s: %s", line, rule, msg)
		},
	})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("parse Dockerfile instructions: %v", err)
	}
	args := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				args[kv.Key] = *kv.Value
			}
		}
	}
	df := dockerfile{stages: stages, byName: map[string]*instructions.Stage{}}
	for i := range df.stages {
		s := &df.stages[i]
		s.BaseName = os.Expand(s.BaseName, func(k string) string { return args[k] })
		if s.Name != "" {
			if df.byName[s.Name] != nil {
				t.Errorf("Dockerfile: stage %s defined twice", s.Name)
			}
			df.byName[s.Name] = s
		}
	}
	return df
}

// root returns the external image a stage finally builds on.
func (df dockerfile) root(s *instructions.Stage) string {
	for range len(df.stages) {
		parent, ok := df.byName[s.BaseName]
		if !ok {
			break
		}
		s = parent
	}
	return s.BaseName
}

// runs returns the command lines of a stage's RUN instructions.
func runs(s *instructions.Stage) []string {
	var out []string
	for _, c := range s.Commands {
		if r, ok := c.(*instructions.RunCommand); ok {
			out = append(out, strings.Join(r.CmdLine, " "))
		}
	}
	return out
}

var cmdPackage = regexp.MustCompile(`\./cmd/([a-z0-9_-]+)`)

func loadDockerfile(t *testing.T) dockerfile {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	return parseDockerfile(t, data)
}

func TestDockerfileTargets(t *testing.T) {
	t.Parallel()
	df := loadDockerfile(t)
	for _, name := range binaryNames {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := df.byName[name]
			if s == nil {
				t.Fatalf("no target %s", name)
			}
			b := loadBinary(t, name)
			if s.BaseName != runtimeBase {
				t.Errorf("target %s builds on %s, want %s", name, s.BaseName, runtimeBase)
			}

			var user string
			var exposed []string
			var entry []string
			copies := map[string]*instructions.CopyCommand{}
			for _, c := range s.Commands {
				switch c := c.(type) {
				case *instructions.UserCommand:
					user = c.User
				case *instructions.ExposeCommand:
					exposed = append(exposed, c.Ports...)
				case *instructions.EntrypointCommand:
					if c.PrependShell {
						t.Errorf("target %s: ENTRYPOINT in shell form; the base has no shell",
							name)
					}
					entry = c.CmdLine
				case *instructions.CopyCommand:
					copies[c.DestPath] = c
				case *instructions.RunCommand:
					t.Errorf("target %s: RUN in a final stage; the base has no shell", name)
				}
			}
			if u, _, _ := strings.Cut(user, ":"); u != "nonroot" && u != "65532" {
				t.Errorf("target %s runs as user %q, want nonroot", name, user)
			}

			// EXPOSE lists the binary's default ports.
			want := exposedPorts(t, b)
			got := normalisePorts(exposed)
			if !slices.Equal(got, want) {
				t.Errorf("target %s exposes %v, the binary listens on %v", name, got, want)
			}

			// The entrypoint is the binary, copied from the stage that builds it.
			if len(entry) != 1 {
				t.Fatalf("target %s: ENTRYPOINT %q, want the binary alone", name, entry)
			}
			cp := copies[entry[0]]
			if cp == nil || cp.From == "" || len(cp.SourcePaths) != 1 {
				t.Fatalf("target %s: nothing is copied from a build stage to %s", name,
					entry[0])
			}
			if path.Base(cp.SourcePaths[0]) != name || path.Base(entry[0]) != name {
				t.Errorf("target %s runs %s copied from %s", name, entry[0], cp.SourcePaths[0])
			}
			from := df.byName[cp.From]
			if from == nil {
				t.Fatalf("target %s copies from unknown stage %s", name, cp.From)
			}
			builds := false
			for _, line := range runs(from) {
				if strings.Contains(line, "go build") &&
					slices.ContainsFunc(cmdPackage.FindAllStringSubmatch(line, -1),
						func(m []string) bool { return m[1] == name }) &&
					strings.Contains(line, "-o "+path.Dir(cp.SourcePaths[0])+"/") {
					builds = true
				}
			}
			if !builds {
				t.Errorf("target %s: stage %s does not build ./cmd/%s into %s", name,
					cp.From, name, path.Dir(cp.SourcePaths[0]))
			}
		})
	}
}

// exposedPorts returns the ports a binary listens on by default, as
// port/protocol, sorted.
func exposedPorts(t *testing.T, b binary) []string {
	t.Helper()
	var ports []string
	for _, env := range sortedKeys(portContract[b.name]) {
		if env == "USER_FUNCTION_PORT" {
			continue // a port the proxy dials, not one it listens on
		}
		p := b.defaultOf(env)
		portNumber(t, "cmd/"+b.name, env, p)
		ports = append(ports, p+"/tcp")
		if env == "CLUSTER_PORT" {
			ports = append(ports, p+"/udp") // memberlist gossips over UDP too
		}
	}
	slices.Sort(ports)
	return ports
}

func normalisePorts(ports []string) []string {
	out := make([]string, 0, len(ports))
	for _, p := range ports {
		if !strings.Contains(p, "/") {
			p += "/tcp"
		}
		out = append(out, strings.ToLower(p))
	}
	slices.Sort(out)
	return out
}

func TestDockerfileBuild(t *testing.T) {
	t.Parallel()
	df := loadDockerfile(t)
	var goBuilds, npmStages int
	for i := range df.stages {
		s := &df.stages[i]
		root := df.root(s)
		for _, c := range s.Commands {
			switch c := c.(type) {
			case *instructions.AddCommand:
				for _, src := range c.SourcePaths {
					if strings.Contains(src, "://") || strings.HasPrefix(src, "git@") {
						t.Errorf("stage %s: ADD %s fetches from the network; "+
							"builds must use only the context and pinned bases", s.Name, src)
					}
				}
			case *instructions.CopyCommand:
				if c.From != "" && df.byName[c.From] == nil {
					t.Errorf("stage %s: COPY --from=%s names no stage", s.Name, c.From)
				}
				if c.From == "" {
					for _, src := range c.SourcePaths {
						checkContextPath(t, s.Name, src)
					}
				}
			}
		}
		for _, line := range runs(s) {
			if strings.Contains(line, "go build") {
				goBuilds++
				checkGoBuild(t, s.Name, root, line)
			}
			if strings.Contains(line, "npm run build") {
				npmStages++
				if !strings.HasPrefix(root, nodeBase) {
					t.Errorf("stage %s builds the frontend on %s, want node", s.Name, root)
				}
				if !slices.ContainsFunc(runs(s), func(l string) bool {
					return strings.Contains(l, "npm ci")
				}) {
					t.Errorf("stage %s: npm run build without npm ci", s.Name)
				}
			}
		}
	}
	if goBuilds == 0 || npmStages == 0 {
		t.Errorf("Dockerfile: %d go build and %d npm run build steps; want both",
			goBuilds, npmStages)
	}
	checkFrontendIntoGateway(t, df)
}

// checkGoBuild checks one go build command: a static, reproducible build on
// the Go release of the module, of packages that exist.
func checkGoBuild(t *testing.T, stage, root, line string) {
	t.Helper()
	if !strings.HasPrefix(root, goBase) {
		t.Errorf("stage %s runs go build on %s, want %s", stage, root, goBase)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w"`} {
		if !strings.Contains(line, want) {
			t.Errorf("stage %s: go build without %s", stage, want)
		}
	}
	for _, m := range cmdPackage.FindAllStringSubmatch(line, -1) {
		main := filepath.Join(repoRoot, "cmd", m[1], "main.go")
		if _, err := os.Stat(main); err != nil {
			t.Errorf("stage %s builds ./cmd/%s, but %s is missing", stage, m[1], main)
		}
	}
}

// checkContextPath checks that a COPY source exists in the repository and
// survives .dockerignore.
func checkContextPath(t *testing.T, stage, src string) {
	t.Helper()
	if src == "." || src == "./" {
		return
	}
	rel := strings.TrimSuffix(strings.TrimPrefix(src, "./"), "/")
	if _, err := os.Stat(filepath.Join(repoRoot, rel)); err != nil {
		t.Errorf("stage %s copies %s, which is not in the repository", stage, src)
	}
	if excluded(t, rel) {
		t.Errorf("stage %s copies %s, which .dockerignore excludes", stage, src)
	}
}

// checkFrontendIntoGateway checks that the frontend's output is copied to
// where Vite writes it and the gateway embeds it.
func checkFrontendIntoGateway(t *testing.T, df dockerfile) {
	t.Helper()
	var copied bool
	for i := range df.stages {
		for _, c := range df.stages[i].Commands {
			cp, ok := c.(*instructions.CopyCommand)
			if !ok || cp.From == "" {
				continue
			}
			from := df.byName[cp.From]
			if from == nil || !strings.HasPrefix(df.root(from), nodeBase) {
				continue
			}
			copied = true
			dest := strings.TrimSuffix(strings.TrimPrefix(cp.DestPath, "./"), "/")
			if dest != distDir {
				t.Errorf("stage %s copies the frontend to %s, want %s", df.stages[i].Name,
					cp.DestPath, distDir)
			}
			for _, src := range cp.SourcePaths {
				if !strings.HasSuffix(strings.TrimSuffix(src, "/"), "/"+distDir) {
					t.Errorf("stage %s copies %s out of the frontend stage, want its %s",
						df.stages[i].Name, src, distDir)
				}
			}
		}
	}
	if !copied {
		t.Error("no stage copies the built frontend")
	}
	if err := checkViteOutDir(); err != nil {
		t.Error(err)
	}
	if err := checkGatewayEmbeds(); err != nil {
		t.Error(err)
	}
}

// checkViteOutDir checks that the Vite config writes to distDir.
func checkViteOutDir() error {
	for _, name := range []string{"vite.config.ts", "vite.config.mts", "vite.config.js"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, "frontend", name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "../"+distDir) {
			return fmt.Errorf("frontend/%s does not write to ../%s, which the image "+
				"build copies", name, distDir)
		}
		return nil
	}
	return fmt.Errorf("frontend has no vite.config.ts: the image build expects Vite "+
		"to write the app into %s", distDir)
}

// checkGatewayEmbeds checks that a package under gateway/ embeds distDir.
func checkGatewayEmbeds() error {
	root := filepath.Join(repoRoot, "gateway")
	found := false
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil,
			parser.ParseComments|parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir, _ := filepath.Rel(repoRoot, filepath.Dir(p))
		for _, g := range f.Comments {
			for _, c := range g.List {
				pats, ok := strings.CutPrefix(c.Text, "//go:embed ")
				if !ok {
					continue
				}
				for _, pat := range strings.Fields(pats) {
					pat = strings.TrimPrefix(pat, "all:")
					// Embedding a folder embeds what is under it.
					p := path.Join(filepath.ToSlash(dir), pat)
					if p == distDir || strings.HasPrefix(distDir, p+"/") {
						found = true
					}
				}
			}
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("gateway/ does not exist yet: the gateway image embeds %s", distDir)
	}
	if err != nil {
		return fmt.Errorf("scan gateway: %w", err)
	}
	if !found {
		return fmt.Errorf("no //go:embed of %s under gateway/; the image build puts "+
			"the web app there", distDir)
	}
	return nil
}

// ignoreMatcher reads the repository's .dockerignore once.
var ignoreMatcher = sync.OnceValues(func() (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pats, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, err
	}
	return patternmatcher.New(pats)
})

// excluded reports whether .dockerignore keeps a repository path out of the
// build context.
func excluded(t *testing.T, rel string) bool {
	t.Helper()
	pm, err := ignoreMatcher()
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	ok, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
	if err != nil {
		t.Fatalf(".dockerignore: match %s: %v", rel, err)
	}
	return ok
}

func TestDockerignore(t *testing.T) {
	t.Parallel()
	for _, p := range []string{
		".git/HEAD", "frontend/node_modules/vite/package.json", "bin/proxy",
		distDir + "/index.html", "deploy/go.mod", "tools/go.mod",
	} {
		if !excluded(t, p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}

	// Every Go source of the root module, and the frontend's sources, must
	// reach the build.
	count := 0
	err := filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if d.Name() == "node_modules" || d.Name() == ".git" || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil && rel != "." {
				return filepath.SkipDir // another module
			}
			return nil
		}
		needed := strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go") ||
			rel == "go.mod" || rel == "go.sum" ||
			strings.HasPrefix(rel, "frontend/") && !strings.HasPrefix(rel, "frontend/dist/")
		if !needed {
			return nil
		}
		count++
		if excluded(t, rel) {
			t.Errorf(".dockerignore excludes %s, which the build needs", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk repository: %v", err)
	}
	if count == 0 {
		t.Fatal("found no sources to check")
	}
}
