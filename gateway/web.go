package gateway

import (
	"embed"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
)

// web holds the built single-page app under web/dist, which the frontend's
// build writes. The folder always exists (a placeholder file is committed),
// so the gateway builds before the frontend does; it then says so at "/".
//
//go:embed web
var web embed.FS

// notBuilt is served in place of the app when it was not built into the
// binary.
const notBuilt = `The chat frontend is not built into this gateway binary.

Build it, then build the gateway again:

    ./task build:frontend          (or: cd frontend && npm ci && npm run build)
    go build -o bin/gateway ./cmd/gateway

The Connect, gRPC and gRPC-Web APIs work without it.
`

// newWebHandler serves the app's files from root's web/dist folder, or a
// page saying how to build them when they are not there.
func newWebHandler(log *slog.Logger, root fs.FS) http.Handler {
	dist, err := fs.Sub(root, "web/dist")
	if err == nil {
		_, err = fs.Stat(dist, "index.html")
	}
	if err != nil {
		log.Warn("frontend not built into the gateway; serving build instructions")
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(notBuilt))
		})
	}

	files := http.FileServerFS(dist)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Vite names every asset by its content hash.
		if strings.HasPrefix(r.URL.Path, "/assets/") {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	})
}
