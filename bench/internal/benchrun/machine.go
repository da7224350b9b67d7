package benchrun

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// Machine describes where the run happened.
type Machine struct {
	Cores     int
	CPUModel  string
	MemTotal  int64
	Kernel    string
	GoVersion string
	// Commit is the git commit of RepoDir; Dirty is set when the work tree
	// has uncommitted changes.
	Commit string
	Dirty  bool
	// LoadStart and LoadEnd are /proc/loadavg's 1, 5 and 15 minute load
	// averages at the start and end of the run.
	LoadStart, LoadEnd string
	// FilesBefore and FilesAfter are the driver's open-file limits before
	// and after raising them; every child inherits FilesAfter.
	FilesBefore, FilesAfter fileLimits
	// FilesErr says why the limit could not be raised.
	FilesErr string
}

// machine describes this machine and raises the open-file limit.
func (r *runner) machine(ctx context.Context) Machine {
	m := Machine{
		Cores:     runtime.NumCPU(),
		GoVersion: runtime.Version(),
		CPUModel:  "unknown",
		LoadStart: loadAverage(),
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(f)
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		m.MemTotal, _ = memTotal(f)
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := r.git(ctx, "rev-parse", "HEAD"); err == nil {
		m.Commit = out
	}
	if out, err := r.git(ctx, "status", "--porcelain", "--untracked-files=no"); err == nil {
		m.Dirty = out != ""
	}
	var err error
	if m.FilesBefore, m.FilesAfter, err = raiseFileLimit(); err != nil {
		m.FilesErr = err.Error()
	}
	return m
}

func (r *runner) git(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = r.cfg.RepoDir
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// loadAverage returns the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
