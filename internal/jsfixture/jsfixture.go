// Package jsfixture runs the chat's friends user function written against
// the original Cloudstate JavaScript library (npm "cloudstate" 0.0.3), so that
// tests can check a Go proxy against the library the protocol was first
// served by. The function lives in friends-js/: an ORSet of friend names per
// user, with Add, Remove and GetFriends as in proto/cloudstate/samples/chat/
// friends/friends.proto. It needs a one-time set-up (./task deps:js, which
// runs setup.sh): Node.js 20, the pinned npm packages, protoc and the
// compiled descriptor set.
//
// # What the JavaScript library does on the wire
//
// Observed by the tests of this package against the library as installed.
//
// Discovery: EntitySpec.proto is the file user-function.desc verbatim, a
// FileDescriptorSet with every import (google/protobuf/descriptor.proto,
// cloudstate/entity_key.proto, the friends file). One entity: type
// "cloudstate.crdt.Crdt", service "cloudstate.samples.chat.friends.Friends",
// persistence id "Friends" (the last segment of the service name).
// ServiceInfo names the library "cloudstate" version "0.0.3", the service
// after the fixture's package.json ("friends-js", "0.0.0") and the runtime
// as the process title and Node version ("/usr/bin/node v20.20.2").
// reportError is answered with Empty.
//
// Set elements: a string is Any{type_url "p.cloudstate.io/string", value
// 0x0A, varint length, UTF-8 bytes}, field 1 always written, so "bob" is
// 0A 03 62 6F 62 and the empty string is 0A 00 (not empty bytes).
//
// State actions, in the reply to the command that made the change:
//   - create with the full ORSetState, only when the stream's init carried no
//     state and the very first command on the stream changes the set;
//   - update with an ORSetDelta otherwise, including for an entity that has
//     no state yet when a command that changed nothing (GetFriends) came
//     first: the default value then counts as existing;
//   - no state action when the command changed nothing (GetFriends, adding a
//     name already there, removing one not there);
//   - removing the last element sends update{cleared: true} rather than
//     removed.
//
// Replies: every command's reply carries client_action.reply with the output
// message as Any "type.googleapis.com/<full name>"; Add and Remove answer
// cloudstate.samples.chat.friends.Empty with empty value bytes. Incoming
// state replaces the value and changed deltas are applied (cleared, then
// removed, then added) without any answer.
//
// Failures:
//   - an unknown command name gets CrdtStreamOut.failure{command_id, "Unknown
//     command named <name>"} and the stream stays open;
//   - a payload that does not decode gets CrdtStreamOut.failure{command_id,
//     "Error handling command '<name>': <error>"}, then the library ends its
//     side of the stream (gRPC status OK);
//   - a message before init, a second init, an init for an unknown service,
//     or a changed delta with no value to apply it to get
//     CrdtStreamOut.failure with command_id 0, then the library ends its side
//     (status OK).
//
// The friends handlers never call the library's ctx.fail; by the library's
// code that would answer with a CrdtReply whose client_action.failure
// carries the command id and message, and no state action.
//
// Half-close: when the proxy ends its side of a handle stream, the library
// notes it and never ends its own side; the proxy must cancel the call.
//
// The function runs with DEBUG=cloudstate*, so its output, logged when a
// test fails, traces every message it handles.
package jsfixture

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fnDir is the fixture's directory relative to the module root.
const fnDir = "internal/jsfixture/friends-js"

// startTimeout bounds how long the function may take to listen.
const startTimeout = 30 * time.Second

// outputLimit is how much of the function's output is kept for the log.
const outputLimit = 512 << 10

// Function is a running JavaScript friends user function. Kill and the
// accessors may be called from any goroutine; Restart not concurrently with
// itself.
type Function struct {
	dir  string
	node string
	port int
	out  *tailBuffer

	// mu guards proc, the current process; nil while killed.
	mu   sync.Mutex
	proc *process
}

// process is one run of node.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // how it exited; read after done is closed
}

// Start starts the JavaScript friends user function on 127.0.0.1:port and
// returns once it accepts connections. With port 0 it picks a free port. The
// function is killed when the test ends, and its output goes to the test log
// if the test failed. Start fails the test when the fixture is not set up.
func Start(t testing.TB, port int) *Function {
	t.Helper()
	if port < 0 || port > 65535 {
		t.Fatalf("jsfixture: port %d out of range", port)
	}
	dir, node, err := locate()
	if err != nil {
		t.Fatalf("JS fixture not set up: run ./task deps:js (%v)", err)
	}
	f := &Function{dir: dir, node: node, out: &tailBuffer{max: outputLimit}}
	t.Cleanup(func() {
		f.Kill()
		if t.Failed() {
			t.Logf("JS friends function output:\n%s", f.Output())
		}
	})

	// A port picked here may be taken by someone else before node binds it,
	// so a few attempts are made with fresh ports.
	attempts := 1
	if port == 0 {
		attempts = 3
	}
	for i := range attempts {
		f.port = port
		if port == 0 {
			if f.port, err = freePort(); err != nil {
				t.Fatalf("jsfixture: %v", err)
			}
		}
		if err = f.launch(); err == nil {
			return f
		}
		t.Logf("jsfixture: attempt %d: %v", i+1, err)
	}
	t.Fatalf("jsfixture: start JS friends function: %v", err)
	return nil
}

// Port returns the port the function listens on.
func (f *Function) Port() int { return f.port }

// Addr returns the function's address, "127.0.0.1:port".
func (f *Function) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(f.port)) }

// URL returns the function's base URL for an HTTP/2 cleartext client.
func (f *Function) URL() string { return "http://" + f.Addr() }

// Output returns what the function has written to stdout and stderr,
// across restarts, trimmed to the most recent part.
func (f *Function) Output() string { return f.out.String() }

// Kill ends the function at once with SIGKILL, as a crash would, and waits
// until it has exited. Killing a killed function does nothing.
func (f *Function) Kill() {
	f.mu.Lock()
	p := f.proc
	f.proc = nil
	f.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill() // fails only when it has exited already
	<-p.done
}

// Restart kills the function if it runs and starts it again on the same
// port, returning once it accepts connections; it fails t, from t's
// goroutine, if the function does not come back. All entities of the new
// process start empty.
func (f *Function) Restart(t testing.TB) {
	t.Helper()
	f.Kill()
	if err := f.launch(); err != nil {
		t.Fatalf("jsfixture: restart JS friends function: %v", err)
	}
}

// launch starts node and waits until it listens.
func (f *Function) launch() error {
	fmt.Fprintf(f.out, "--- node index.js on %s ---\n", f.Addr())
	from := f.out.Written()
	cmd := exec.Command(f.node, "index.js")
	cmd.Dir = f.dir
	cmd.Env = append(os.Environ(),
		"HOST=127.0.0.1",
		"PORT="+strconv.Itoa(f.port),
		"DEBUG=cloudstate*",
		"DEBUG_COLORS=false",
	)
	cmd.Stdout = f.out
	cmd.Stderr = f.out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	f.mu.Lock()
	f.proc = p
	f.mu.Unlock()

	// The grpc stand-in prints this line once the port is bound; dialling
	// as well makes sure it is this process that answers.
	ready := "grpc shim: listening on " + f.Addr()
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			f.Kill()
			return fmt.Errorf("node exited before listening: %v", p.err)
		case <-deadline.C:
			f.Kill()
			return fmt.Errorf("node not listening on %s after %v", f.Addr(), startTimeout)
		case <-tick.C:
		}
		if !strings.Contains(f.out.Since(from), ready) {
			continue
		}
		conn, err := net.DialTimeout("tcp", f.Addr(), time.Second)
		if err == nil {
			_ = conn.Close()
			return nil
		}
	}
}

// locate finds the fixture's directory, from the working directory up to
// the module root, and checks that it has been set up.
func locate() (dir, node string, err error) {
	node, err = exec.LookPath("node")
	if err != nil {
		return "", "", fmt.Errorf("find node: %w", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", "", fmt.Errorf("get working directory: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		candidate := filepath.Join(d, filepath.FromSlash(fnDir))
		if _, err := os.Stat(filepath.Join(candidate, "index.js")); err == nil {
			dir = candidate
			break
		}
		if filepath.Dir(d) == d {
			return "", "", fmt.Errorf("no %s above %s", fnDir, wd)
		}
	}
	for _, need := range []string{
		"node_modules/cloudstate/package.json",
		"node_modules/cloudstate/protoc/bin/protoc",
		"node_modules/cloudstate/protoc/include/google/protobuf/any.proto",
		"user-function.desc",
	} {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(need))); err != nil {
			return "", "", fmt.Errorf("missing %s", need)
		}
	}
	return dir, node, nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("find free port: listener has no TCP address")
	}
	return addr.Port, nil
}

// tailBuffer keeps the last max bytes written to it. It is safe for
// concurrent use.
type tailBuffer struct {
	max int

	// mu guards buf and written.
	mu      sync.Mutex
	buf     []byte
	written int64 // bytes ever written
}

// Write appends p, dropping the oldest bytes beyond the limit.
func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	b.written += int64(len(p))
	return len(p), nil
}

// Written returns how many bytes were ever written.
func (b *tailBuffer) Written() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.written
}

// Since returns what is still kept of the bytes written after the first n.
func (b *tailBuffer) Since(n int64) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	start := int64(len(b.buf)) - (b.written - n)
	start = max(start, 0)
	return string(b.buf[start:])
}

// String returns everything kept.
func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
