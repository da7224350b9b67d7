package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestFormats(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, format string
		json         bool
	}{
		{"text", "text", false},
		{"json", "json", true},
		{"auto off a terminal", "auto", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := New(&buf, tt.format, "info")
			if err != nil {
				t.Fatal(err)
			}
			log.Info("member joined", "node", "a")
			log.Debug("hidden")
			var m map[string]any
			isJSON := json.Unmarshal(buf.Bytes(), &m) == nil
			if isJSON != tt.json {
				t.Errorf("got %q, want JSON %v", buf.String(), tt.json)
			}
			if strings.Contains(buf.String(), "hidden") {
				t.Errorf("debug line logged at info level: %q", buf.String())
			}
		})
	}
}

func TestRejectsBadSettings(t *testing.T) {
	t.Parallel()
	if _, err := New(&bytes.Buffer{}, "xml", "info"); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := New(&bytes.Buffer{}, "text", "loud"); err == nil {
		t.Error("level loud accepted")
	}
}
