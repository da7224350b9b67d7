// Package functiontest drives a user function in tests the way a Cloudstate
// proxy does: over real gRPC on a loopback connection, with the generated
// protocol clients, one scripted step at a time.
//
// Serve starts a function.Server; NewProxy connects to it; Proxy.Open starts
// an entity stream, on which a test sends commands and the proxy's other
// messages and reads what the function answers. Every read waits at most
// Timeout, then fails the test.
package functiontest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/cloudstate/value"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol/protocolconnect"
)

// Timeout bounds every wait for the function.
const Timeout = 10 * time.Second

// Serve serves srv on a free loopback port until the test ends and returns
// its base URL.
func Serve(t testing.TB, srv *function.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// HTTPClient returns a client that speaks cleartext HTTP/2, as the proxy
// does to a user function.
func HTTPClient() *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &protocols}}
}

// Proxy is the proxy side of a user function's protocol services.
type Proxy struct {
	t         testing.TB
	Discovery protocolconnect.EntityDiscoveryClient
	Crdt      protocolconnect.CrdtClient
}

// NewProxy returns a proxy side for the function at baseURL, using gRPC.
func NewProxy(t testing.TB, baseURL string) *Proxy {
	hc := HTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	opts := []connect.ClientOption{
		connect.WithGRPC(),
		connect.WithReadMaxBytes(function.DefaultMaxMessageBytes),
		connect.WithSendMaxBytes(function.DefaultMaxMessageBytes),
	}
	return &Proxy{
		t:         t,
		Discovery: protocolconnect.NewEntityDiscoveryClient(hc, baseURL, opts...),
		Crdt:      protocolconnect.NewCrdtClient(hc, baseURL, opts...),
	}
}

// Discover calls discover as the proxy does at start.
func (p *Proxy) Discover() *protocol.EntitySpec {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	resp, err := p.Discovery.Discover(ctx, connect.NewRequest(&protocol.ProxyInfo{
		ProtocolMajorVersion: 0,
		ProtocolMinorVersion: 1,
		ProxyName:            "functiontest",
		ProxyVersion:         "0",
		SupportedEntityTypes: []string{function.EntityType},
	}))
	if err != nil {
		p.t.Fatalf("discover: %v", err)
	}
	return resp.Msg
}

// Open starts an entity stream and sends its init, with state if it is not
// nil.
func (p *Proxy) Open(service, entityID string, state *protocol.CrdtState) *Stream {
	p.t.Helper()
	s := p.OpenRaw()
	s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Init{Init: &protocol.CrdtInit{
		ServiceName: service,
		EntityId:    entityID,
		State:       state,
	}}})
	return s
}

// OpenRaw starts an entity stream and sends nothing.
func (p *Proxy) OpenRaw() *Stream {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Stream{
		t:      p.t,
		bidi:   p.Crdt.Handle(ctx),
		cancel: cancel,
		out:    make(chan *protocol.CrdtStreamOut, 1024),
		ended:  make(chan struct{}),
	}
	p.t.Cleanup(func() {
		s.Close()
		<-s.ended
	})
	go s.receive(ctx)
	return s
}

// Stream is one entity stream, seen from the proxy.
type Stream struct {
	t      testing.TB
	bidi   *connect.BidiStreamForClient[protocol.CrdtStreamIn, protocol.CrdtStreamOut]
	cancel context.CancelFunc
	out    chan *protocol.CrdtStreamOut
	// ended is closed when the function's side ends; err is its error then,
	// nil for a clean end.
	ended  chan struct{}
	err    error
	lastID int64
}

func (s *Stream) receive(ctx context.Context) {
	defer close(s.ended)
	for {
		msg, err := s.bidi.Receive()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.err = err
			}
			_ = s.bidi.CloseResponse()
			return
		}
		select {
		case s.out <- msg:
		case <-ctx.Done():
			return
		}
	}
}

// Send sends a message to the function.
func (s *Stream) Send(in *protocol.CrdtStreamIn) {
	s.t.Helper()
	if err := s.bidi.Send(in); err != nil {
		s.t.Fatalf("send %v: %v", in, err)
	}
}

// Command sends a command with the next id, 1 for the first, and returns
// the id.
func (s *Stream) Command(name string, payload proto.Message, streamed bool) int64 {
	s.t.Helper()
	s.lastID++
	s.CommandWithID(s.lastID, name, payload, streamed)
	return s.lastID
}

// CommandWithID sends a command with the given id.
func (s *Stream) CommandWithID(id int64, name string, payload proto.Message, streamed bool) {
	s.t.Helper()
	a, err := value.EncodeMessage(payload)
	if err != nil {
		s.t.Fatalf("encode payload: %v", err)
	}
	s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Command{Command: &protocol.Command{
		Id:       id,
		Name:     name,
		Payload:  a,
		Streamed: streamed,
	}}})
}

// Cancel tells the function that the client of streamed command id went
// away.
func (s *Stream) Cancel(id int64) {
	s.t.Helper()
	s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_StreamCancelled{
		StreamCancelled: &protocol.StreamCancelled{Id: id},
	}})
}

// State replaces the function's value with a full state.
func (s *Stream) State(st *protocol.CrdtState) {
	s.t.Helper()
	s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_State{State: st}})
}

// Changed sends a change made on another node.
func (s *Stream) Changed(d *protocol.CrdtDelta) {
	s.t.Helper()
	s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Changed{Changed: d}})
}

// Deleted tells the function that the entity was deleted on another node.
func (s *Stream) Deleted() {
	s.t.Helper()
	s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Deleted{
		Deleted: &protocol.CrdtDelete{},
	}})
}

// CloseSend half-closes the proxy's side, as the proxy does after a delete.
func (s *Stream) CloseSend() {
	s.t.Helper()
	if err := s.bidi.CloseRequest(); err != nil {
		s.t.Fatalf("close request: %v", err)
	}
}

// Close cancels the stream, as the proxy does when it passivates an entity.
func (s *Stream) Close() {
	s.cancel()
	// The HTTP/2 client notices the cancellation only once it is done
	// reading the request body.
	_ = s.bidi.CloseRequest()
}

// Next returns the function's next message.
func (s *Stream) Next() *protocol.CrdtStreamOut {
	s.t.Helper()
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	select {
	case msg := <-s.out:
		return msg
	case <-s.ended:
		select {
		case msg := <-s.out:
			return msg
		default:
		}
		s.t.Fatalf("stream ended while a message was expected: %v", s.err)
	case <-timer.C:
		s.t.Fatalf("no message from the function within %v", Timeout)
	}
	return nil
}

// Reply returns the next message, which must be the reply to command id.
func (s *Stream) Reply(id int64) *protocol.CrdtReply {
	s.t.Helper()
	msg := s.Next()
	r := msg.GetReply()
	if r == nil || r.GetCommandId() != id {
		s.t.Fatalf("got %v, want the reply to command %d", msg, id)
	}
	return r
}

// Streamed returns the next message, which must be a streamed message for
// command id.
func (s *Stream) Streamed(id int64) *protocol.CrdtStreamedMessage {
	s.t.Helper()
	msg := s.Next()
	m := msg.GetStreamedMessage()
	if m == nil || m.GetCommandId() != id {
		s.t.Fatalf("got %v, want a streamed message for command %d", msg, id)
	}
	return m
}

// CancelResponse returns the next message, which must answer the
// cancellation of command id.
func (s *Stream) CancelResponse(id int64) *protocol.CrdtStreamCancelledResponse {
	s.t.Helper()
	msg := s.Next()
	r := msg.GetStreamCancelledResponse()
	if r == nil || r.GetCommandId() != id {
		s.t.Fatalf("got %v, want the answer to the cancellation of command %d", msg, id)
	}
	return r
}

// Failure returns the next message, which must be a failure.
func (s *Stream) Failure() *protocol.Failure {
	s.t.Helper()
	msg := s.Next()
	f := msg.GetFailure()
	if f == nil {
		s.t.Fatalf("got %v, want a failure", msg)
	}
	return f
}

// Ended waits for the function to end the stream and returns how: nil for a
// clean end.
func (s *Stream) Ended() error {
	s.t.Helper()
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	select {
	case msg := <-s.out:
		s.t.Fatalf("got %v, want the end of the stream", msg)
	case <-s.ended:
		select {
		case msg := <-s.out:
			s.t.Fatalf("got %v, want the end of the stream", msg)
		default:
		}
		return s.err
	case <-timer.C:
		s.t.Fatalf("the function did not end the stream within %v", Timeout)
	}
	return nil
}

// Decode decodes a type.googleapis.com payload as a T.
func Decode[T proto.Message](t testing.TB, a *anypb.Any) T {
	t.Helper()
	var m T
	m = m.ProtoReflect().New().Interface().(T)
	if err := value.DecodeMessage(a, m); err != nil {
		t.Fatalf("decode payload: %v", err)
	}
	return m
}

// ReplyPayload returns the message a reply sends to the client.
func ReplyPayload[T proto.Message](t testing.TB, r interface {
	GetClientAction() *protocol.ClientAction
}) T {
	t.Helper()
	p := r.GetClientAction().GetReply().GetPayload()
	if p == nil {
		t.Fatalf("got client action %v, want a reply", r.GetClientAction())
	}
	return Decode[T](t, p)
}
