package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// echoFriends answers GetFriends with the entity id and command name, and
// Monitor with online true, then false, then the end of the stream.
func echoFriends(s *fnStream, cmd *protocol.Command) bool {
	switch cmd.GetName() {
	case "GetFriends":
		s.reply(cmd.GetId(), &friendspb.FriendsList{
			Friends: []string{cmd.GetEntityId(), cmd.GetName(), strconv.FormatBool(cmd.GetStreamed())},
		}, nil, false)
		return true
	case "Monitor":
		s.reply(cmd.GetId(), &presencepb.OnlineStatus{Online: true}, nil, true)
		s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamedMessage{
			StreamedMessage: &protocol.CrdtStreamedMessage{
				CommandId:    cmd.GetId(),
				ClientAction: replyAction(&presencepb.OnlineStatus{Online: false}),
			}}})
		s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamedMessage{
			StreamedMessage: &protocol.CrdtStreamedMessage{CommandId: cmd.GetId(), EndStream: true},
		}})
		return true
	}
	return false
}

func newEchoHarness(t testing.TB, mod func(*Config)) *harness {
	fn := newFakeFn(chatSpec(t))
	fn.hook = echoFriends
	h := newHarness(t, fn, mod)
	h.waitReady()
	return h
}

func TestUnaryOverEveryProtocol(t *testing.T) {
	t.Parallel()
	h := newEchoHarness(t, nil)
	want := []string{"alice", "GetFriends", "false"}
	clients := map[string][]connect.ClientOption{
		"grpc":             {connect.WithGRPC()},
		"grpc-web":         {connect.WithGRPCWeb()},
		"connect-json-get": {connect.WithProtoJSON(), connect.WithHTTPGet()},
		"connect-binary":   {},
	}
	for name, opts := range clients {
		t.Run(name, func(t *testing.T) {
			httpClient := h.h1
			if name == "grpc" {
				httpClient = h.h2c
			}
			client := friendspbconnect.NewFriendsClient(httpClient, h.base, opts...)
			res, err := client.GetFriends(context.Background(),
				connect.NewRequest(&friendspb.User{User: "alice"}))
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Msg.GetFriends(); !slices.Equal(got, want) {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
	t.Run("connect-json-post", func(t *testing.T) {
		res, err := h.h1.Post(h.base+"/"+friendsService+"/GetFriends", "application/json",
			strings.NewReader(`{"user":"alice"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body struct{ Friends []string }
		if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK || !slices.Equal(body.Friends, want) {
			t.Errorf("got %s %q, want 200 %q", res.Status, body.Friends, want)
		}
	})
}

func TestServerStreamOverEveryProtocol(t *testing.T) {
	t.Parallel()
	h := newEchoHarness(t, nil)
	for name, opts := range map[string][]connect.ClientOption{
		"grpc":     {connect.WithGRPC()},
		"grpc-web": {connect.WithGRPCWeb()},
		"connect":  {connect.WithProtoJSON()},
	} {
		t.Run(name, func(t *testing.T) {
			httpClient := h.h1
			if name == "grpc" {
				httpClient = h.h2c
			}
			client := presencepbconnect.NewPresenceClient(httpClient, h.base, opts...)
			stream, err := client.Monitor(context.Background(),
				connect.NewRequest(&presencepb.User{Name: "bob"}))
			if err != nil {
				t.Fatal(err)
			}
			var got []bool
			for stream.Receive() {
				got = append(got, stream.Msg().GetOnline())
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream ended with %v", err)
			}
			if !slices.Equal(got, []bool{true, false}) {
				t.Errorf("got %v, want [true false]", got)
			}
		})
	}
	t.Run("connect-json-framing", func(t *testing.T) {
		body := frame(0, []byte(`{"name":"bob"}`))
		req, err := http.NewRequest(http.MethodPost, h.base+"/"+presenceService+"/Monitor",
			bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/connect+json")
		res, err := h.h1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		frames := readFrames(t, res.Body)
		if len(frames) != 3 || frames[2].flags != 2 {
			t.Fatalf("got %d frames %+v, want 2 messages and an end frame", len(frames), frames)
		}
		var first, second map[string]any
		if err := json.Unmarshal(frames[0].data, &first); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(frames[1].data, &second); err != nil {
			t.Fatal(err)
		}
		if first["online"] != true || len(second) != 0 {
			t.Errorf("got %v then %v, want online true then {}", first, second)
		}
		if string(frames[2].data) != "{}" {
			t.Errorf("end frame %s, want {}", frames[2].data)
		}
	})
}

type envelope struct {
	flags byte
	data  []byte
}

func frame(flags byte, data []byte) []byte {
	out := []byte{flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(len(data)))
	return append(out, data...)
}

func readFrames(t *testing.T, r io.Reader) []envelope {
	t.Helper()
	var out []envelope
	for {
		var head [5]byte
		if _, err := io.ReadFull(r, head[:]); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, binary.BigEndian.Uint32(head[1:]))
		if _, err := io.ReadFull(r, data); err != nil {
			t.Fatal(err)
		}
		out = append(out, envelope{flags: head[0], data: data})
	}
}

func TestReflectionListsUserServices(t *testing.T) {
	t.Parallel()
	h := newEchoHarness(t, nil)
	client := grpcreflect.NewClient(h.h2c, h.base, connect.WithGRPC())
	stream := client.NewStream(context.Background())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range names {
		got = append(got, string(n))
	}
	if want := []string{friendsService, presenceService}; !slices.Equal(got, want) {
		t.Errorf("services %q, want %q", got, want)
	}
	files, err := stream.FileContainingSymbol(friendsService)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, f.GetName())
	}
	for _, want := range []string{"cloudstate/samples/chat/friends/friends.proto",
		"cloudstate/entity_key.proto", "google/protobuf/descriptor.proto"} {
		if !slices.Contains(paths, want) {
			t.Errorf("files %q lack %s", paths, want)
		}
	}
	nums, err := stream.AllExtensionNumbers("google.protobuf.FieldOptions")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(nums, entityKeyOption) {
		t.Errorf("extensions of FieldOptions %v lack %d", nums, entityKeyOption)
	}

	// The v1alpha service answers too, as older grpcurl versions use it.
	res, err := h.h2c.Post(h.base+"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
		"application/grpc", bytes.NewReader(frame(0, nil)))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/grpc" {
		t.Errorf("v1alpha: %s %q", res.Status, res.Header.Get("Content-Type"))
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	h := newEchoHarness(t, nil)
	client := grpchealth.NewClient(h.h2c, h.base, connect.WithGRPC())
	for _, svc := range []string{"", friendsService} {
		res, err := client.Check(context.Background(), &grpchealth.CheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("check %q: %v", svc, err)
		}
		if res.Status != grpchealth.StatusServing {
			t.Errorf("check %q: %v, want serving", svc, res.Status)
		}
	}
	_, err := client.Check(context.Background(), &grpchealth.CheckRequest{Service: "nope.Nope"})
	wantCode(t, err, connect.CodeNotFound, "")
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	h := newEchoHarness(t, func(c *Config) { c.MaxMessageBytes = 1024 })
	ctx := context.Background()

	_, err := h.friends().GetFriends(ctx, connect.NewRequest(&friendspb.User{}))
	wantCode(t, err, connect.CodeInvalidArgument, "entity key field user is empty")

	_, err = h.friends().Add(ctx, connect.NewRequest(&friendspb.Friend{
		User: "alice", Friend: strings.Repeat("x", 2048)}))
	wantCode(t, err, connect.CodeResourceExhausted, "")

	_, err = h.presence().Monitor(ctx, connect.NewRequest(&presencepb.User{}))
	if err == nil {
		stream, _ := h.presence().Monitor(ctx, connect.NewRequest(&presencepb.User{}))
		for stream.Receive() {
		}
		err = stream.Err()
	}
	wantCode(t, err, connect.CodeInvalidArgument, "entity key field name is empty")

	tests := []struct {
		name, path, contentType, body string
		status                        int
		code                          string
	}{
		{"malformed json", "/GetFriends", "application/json", `{"user":`, 400, "invalid_argument"},
		{"wrong json type", "/GetFriends", "application/json", `{"user":5}`, 400, "invalid_argument"},
		{"malformed binary", "/GetFriends", "application/proto", "\xff\xff\xff", 400,
			"invalid_argument"},
		{"empty key json", "/GetFriends", "application/json", `{}`, 400, "invalid_argument"},
		{"unknown method", "/Nope", "application/json", `{}`, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := h.h1.Post(h.base+"/"+friendsService+tt.path, tt.contentType,
				strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != tt.status {
				t.Errorf("status %s, want %d", res.Status, tt.status)
			}
			if tt.code == "" {
				return
			}
			var body struct{ Code string }
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if body.Code != tt.code {
				t.Errorf("code %q, want %q", body.Code, tt.code)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	h := newEchoHarness(t, nil)
	if _, err := h.friends().GetFriends(context.Background(),
		connect.NewRequest(&friendspb.User{User: "alice"})); err != nil {
		t.Fatal(err)
	}
	res, err := h.h1.Get("http://" + h.p.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`cloudstate_proxy_requests_total{code="ok",method="/` + friendsService + `/GetFriends"} 1`,
		"cloudstate_proxy_active_entities 1",
		"cloudstate_proxy_open_streams 0",
		"cloudstate_proxy_ready 1",
		"cloudstate_proxy_request_duration_seconds_count",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	live, err := h.h1.Get("http://" + h.p.MetricsAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	live.Body.Close()
	if live.StatusCode != http.StatusOK {
		t.Errorf("healthz: %s", live.Status)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	base := Config{HTTPAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", NodeName: "n"}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no node", func(c *Config) { c.NodeName = "" }, "NodeName"},
		{"bad http addr", func(c *Config) { c.HTTPAddr = "nope" }, "HTTPAddr"},
		{"bad port", func(c *Config) { c.FunctionAddr = "127.0.0.1:99999" }, "FunctionAddr"},
		{"function port 0", func(c *Config) { c.FunctionAddr = "127.0.0.1:0" }, "FunctionAddr"},
		{"negative passivation", func(c *Config) { c.PassivationTimeout = -1 }, "PassivationTimeout"},
		{"negative queue", func(c *Config) { c.EntityQueueSize = -1 }, "EntityQueueSize"},
		{"retry order", func(c *Config) { c.RetryMin, c.RetryMax = 2e9, 1e9 }, "RetryMin"},
		{"replicas node", func(c *Config) { c.Replicas = NewReplicas("other") }, "Replicas"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error naming %s", err, tt.want)
			}
		})
	}
	p, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
