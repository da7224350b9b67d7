package funcmain

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/cloudchat/cloudchat/cloudstate/function"
)

func TestRejectsBadSettings(t *testing.T) {
	t.Parallel()
	none := func(*slog.Logger) []*function.Entity { return nil }
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"port not a number", []string{"-port", "http"}, "port"},
		{"port out of range", []string{"-port", "70000"}, "port"},
		{"bad log level", []string{"-log-level", "loud"}, "log level"},
		{"bad log format", []string{"-log-format", "xml"}, "log format"},
		{"no grace", []string{"-shutdown-timeout", "0s"}, "shutdown-timeout"},
		{"stray argument", []string{"extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Run("test", tt.args, none)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run(%q) = %v, want an error about %s", tt.args, err, tt.want)
			}
		})
	}
}
