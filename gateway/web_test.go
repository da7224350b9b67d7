package gateway

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestWebHandler(t *testing.T) {
	t.Parallel()
	built := fstest.MapFS{
		"web/dist/index.html":       {Data: []byte("<h1>host</h1>")},
		"web/dist/window.html":      {Data: []byte("<h1>window</h1>")},
		"web/dist/assets/app-1a.js": {Data: []byte("console.log(1)")},
	}
	notBuiltFS := fstest.MapFS{"web/README.md": {Data: []byte("placeholder")}}
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name     string
		root     fstest.MapFS
		path     string
		code     int
		body     string
		cacheHdr string
	}{
		{name: "index", root: built, path: "/", code: 200, body: "<h1>host</h1>", cacheHdr: "no-cache"},
		{name: "window", root: built, path: "/window.html", code: 200, body: "<h1>window</h1>"},
		{name: "asset", root: built, path: "/assets/app-1a.js", code: 200, body: "console.log(1)",
			cacheHdr: "public, max-age=31536000, immutable"},
		{name: "missing", root: built, path: "/nope", code: 404},
		{name: "not built", root: notBuiltFS, path: "/", code: 503, body: "not built"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			newWebHandler(log, tt.root).ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
			res := rec.Result()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.code {
				t.Errorf("status = %d, want %d", res.StatusCode, tt.code)
			}
			if !strings.Contains(string(body), tt.body) {
				t.Errorf("body = %q, want it to contain %q", body, tt.body)
			}
			if got := res.Header.Get("Cache-Control"); tt.cacheHdr != "" && got != tt.cacheHdr {
				t.Errorf("Cache-Control = %q, want %q", got, tt.cacheHdr)
			}
		})
	}
}

func TestParseAddrs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int
	}{
		{in: "presence:80", want: 1},
		{in: "127.0.0.1:9001, 127.0.0.1:9002", want: 2},
		{in: "[::1]:9000", want: 1},
		{in: "", want: -1},
		{in: "presence", want: -1},
		{in: ":80", want: -1},
		{in: "presence:0", want: -1},
		{in: "presence:99999", want: -1},
		{in: "a:1,", want: -1},
	}
	for _, tt := range tests {
		got, err := ParseAddrs(tt.in)
		if tt.want < 0 {
			if err == nil {
				t.Errorf("ParseAddrs(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || len(got) != tt.want {
			t.Errorf("ParseAddrs(%q) = %v, %v; want %d addresses", tt.in, got, err, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	bound := b.min
	for i := range 10 {
		d := b.next()
		if d < bound/2 || d > bound {
			t.Errorf("delay %d = %v, want within [%v, %v]", i, d, bound/2, bound)
		}
		bound = min(2*bound, b.max)
	}
	b.reset()
	if d := b.next(); d > b.min {
		t.Errorf("delay after reset = %v, want at most %v", d, b.min)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	ok := Config{Presence: []string{"p:80"}, Friends: []string{"f:80"}}
	tests := []struct {
		name   string
		modify func(*Config)
	}{
		{name: "short secret", modify: func(c *Config) { c.TokenSecret = []byte("short") }},
		{name: "no presence", modify: func(c *Config) { c.Presence = nil }},
		{name: "bad friends", modify: func(c *Config) { c.Friends = []string{"friends"} }},
		{name: "backoff inverted", modify: func(c *Config) {
			c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond
		}},
		{name: "negative timeout", modify: func(c *Config) { c.CallTimeout = -time.Second }},
	}
	if _, err := New(ok); err != nil {
		t.Fatalf("New(valid) = %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.modify(&cfg)
			if _, err := New(cfg); err == nil {
				t.Errorf("New accepted a bad config")
			}
		})
	}
}
