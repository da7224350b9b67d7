package function

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

func TestInbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newInbox()
	msg := &protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Deleted{}}
	for range 3 {
		if !b.push(msg) {
			t.Fatal("push refused")
		}
	}
	b.close(io.EOF)
	for i := range 3 {
		if got, err := b.pop(ctx); got != msg || err != nil {
			t.Fatalf("pop %d: got %v, %v", i, got, err)
		}
	}
	if _, err := b.pop(ctx); !errors.Is(err, io.EOF) {
		t.Errorf("pop after the queue drained: got %v, want EOF", err)
	}

	// A full inbox closes with a protocol error, dropping what is queued.
	b = newInbox()
	for b.push(msg) {
	}
	if _, err := b.pop(ctx); !isProtocolError(err) {
		t.Errorf("pop from a full inbox: got %v, want a protocol error", err)
	}

	// pop gives up when its context ends.
	b = newInbox()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.pop(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("pop with a cancelled context: got %v", err)
	}
}
