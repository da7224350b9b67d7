package value_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cloudchat/cloudchat/cloudstate/value"
)

func TestEncodeBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		got  *anypb.Any
		url  string
		want []byte
	}{
		{"string", value.EncodeString("bob"), value.StringURL, []byte{0x0a, 3, 'b', 'o', 'b'}},
		{"empty string", value.EncodeString(""), value.StringURL, nil},
		{"bytes", value.EncodeBytes([]byte{1, 2}), value.BytesURL, []byte{0x0a, 2, 1, 2}},
		{"empty bytes", value.EncodeBytes(nil), value.BytesURL, nil},
		{"true", value.EncodeBool(true), value.BoolURL, []byte{0x08, 1}},
		{"false", value.EncodeBool(false), value.BoolURL, nil},
		{"int32", value.EncodeInt32(300), value.Int32URL, []byte{0x08, 0xac, 0x02}},
		{"int32 zero", value.EncodeInt32(0), value.Int32URL, nil},
		{
			"int32 negative", value.EncodeInt32(-1), value.Int32URL,
			[]byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		},
		{"int64", value.EncodeInt64(1), value.Int64URL, []byte{0x08, 1}},
		{"int64 zero", value.EncodeInt64(0), value.Int64URL, nil},
		{"float", value.EncodeFloat(1), value.FloatURL, []byte{0x0d, 0, 0, 0x80, 0x3f}},
		{"float zero", value.EncodeFloat(0), value.FloatURL, nil},
		{
			"float negative zero", value.EncodeFloat(float32(math.Copysign(0, -1))),
			value.FloatURL, []byte{0x0d, 0, 0, 0, 0x80},
		},
		{
			"double", value.EncodeDouble(1), value.DoubleURL,
			[]byte{0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f},
		},
		{"double zero", value.EncodeDouble(0), value.DoubleURL, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.got.GetTypeUrl() != tt.url {
				t.Errorf("type URL: got %q, want %q", tt.got.GetTypeUrl(), tt.url)
			}
			if !bytes.Equal(tt.got.GetValue(), tt.want) {
				t.Errorf("bytes: got % x, want % x", tt.got.GetValue(), tt.want)
			}
		})
	}
}

// TestEncodeMatchesWrappers checks the primitive encodings against protobuf's
// own encoding of the wrapper types, which also keep their value in field 1
// and omit a default.
func TestEncodeMatchesWrappers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		got     *anypb.Any
		wrapper proto.Message
	}{
		{"string", value.EncodeString("héllo"), wrapperspb.String("héllo")},
		{"bytes", value.EncodeBytes([]byte("x")), wrapperspb.Bytes([]byte("x"))},
		{"bool", value.EncodeBool(true), wrapperspb.Bool(true)},
		{"int32", value.EncodeInt32(math.MinInt32), wrapperspb.Int32(math.MinInt32)},
		{"int64", value.EncodeInt64(math.MaxInt64), wrapperspb.Int64(math.MaxInt64)},
		{"float", value.EncodeFloat(-2.5), wrapperspb.Float(-2.5)},
		{"double", value.EncodeDouble(math.Pi), wrapperspb.Double(math.Pi)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want, err := proto.Marshal(tt.wrapper)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(tt.got.GetValue(), want) {
				t.Errorf("got % x, want % x", tt.got.GetValue(), want)
			}
		})
	}
}

func TestDecodeAcceptsExplicitDefaults(t *testing.T) {
	t.Parallel()
	explicit := func(url string, b ...byte) *anypb.Any {
		return &anypb.Any{TypeUrl: url, Value: b}
	}
	if s, err := value.DecodeString(explicit(value.StringURL, 0x0a, 0)); err != nil || s != "" {
		t.Errorf("string: got %q, %v", s, err)
	}
	if b, err := value.DecodeBytes(explicit(value.BytesURL, 0x0a, 0)); err != nil || len(b) != 0 {
		t.Errorf("bytes: got %v, %v", b, err)
	}
	if v, err := value.DecodeBool(explicit(value.BoolURL, 0x08, 0)); err != nil || v {
		t.Errorf("bool: got %v, %v", v, err)
	}
	if v, err := value.DecodeInt32(explicit(value.Int32URL, 0x08, 0)); err != nil || v != 0 {
		t.Errorf("int32: got %v, %v", v, err)
	}
	if v, err := value.DecodeInt64(explicit(value.Int64URL, 0x08, 0)); err != nil || v != 0 {
		t.Errorf("int64: got %v, %v", v, err)
	}
	if v, err := value.DecodeFloat(explicit(value.FloatURL, 0x0d, 0, 0, 0, 0)); err != nil || v != 0 {
		t.Errorf("float: got %v, %v", v, err)
	}
	v, err := value.DecodeDouble(explicit(value.DoubleURL, 0x09, 0, 0, 0, 0, 0, 0, 0, 0))
	if err != nil || v != 0 {
		t.Errorf("double: got %v, %v", v, err)
	}
	if s, err := value.DecodeString(explicit(value.StringURL)); err != nil || s != "" {
		t.Errorf("empty string: got %q, %v", s, err)
	}
}

func TestDecodeSkipsOtherFields(t *testing.T) {
	t.Parallel()
	var b []byte
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, 99)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "first")
	b = protowire.AppendTag(b, 15, protowire.BytesType)
	b = protowire.AppendString(b, "other")
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "last")
	b = protowire.AppendTag(b, 3, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 7)
	got, err := value.DecodeString(&anypb.Any{TypeUrl: value.StringURL, Value: b})
	if err != nil {
		t.Fatal(err)
	}
	if got != "last" {
		t.Errorf("got %q, want %q (the last field 1 wins)", got, "last")
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		decode  func(*anypb.Any) error
		in      *anypb.Any
		wantMsg string
	}{
		{
			"wire type", decodeErr(value.DecodeString),
			&anypb.Any{TypeUrl: value.StringURL, Value: []byte{0x08, 1}},
			"field 1 has wire type varint, want length-delimited",
		},
		{
			"varint wire type", decodeErr(value.DecodeInt64),
			&anypb.Any{TypeUrl: value.Int64URL, Value: []byte{0x0a, 1, 'x'}},
			"field 1 has wire type length-delimited, want varint",
		},
		{
			"float wire type", decodeErr(value.DecodeFloat),
			&anypb.Any{TypeUrl: value.FloatURL, Value: []byte{0x09, 0, 0, 0, 0, 0, 0, 0, 0}},
			"field 1 has wire type fixed64, want fixed32",
		},
		{
			"type URL", decodeErr(value.DecodeBool),
			value.EncodeString("x"), "type mismatch",
		},
		{"nil", decodeErr(value.DecodeDouble), nil, "nil Any"},
		{
			"truncated", decodeErr(value.DecodeString),
			&anypb.Any{TypeUrl: value.StringURL, Value: []byte{0x0a, 5, 'a'}},
			"decode string: field 1",
		},
		{
			"bad tag", decodeErr(value.DecodeInt32),
			&anypb.Any{TypeUrl: value.Int32URL, Value: []byte{0x80}},
			"decode int32",
		},
		{
			"invalid UTF-8", decodeErr(value.DecodeString),
			&anypb.Any{TypeUrl: value.StringURL, Value: []byte{0x0a, 1, 0xff}},
			"invalid UTF-8",
		},
		{
			"bad skipped field", decodeErr(value.DecodeBytes),
			&anypb.Any{TypeUrl: value.BytesURL, Value: []byte{0x12, 9}},
			"field 2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.decode(tt.in)
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.wantMsg)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got error %q, want one containing %q", err, tt.wantMsg)
			}
		})
	}
}

func decodeErr[T any](f func(*anypb.Any) (T, error)) func(*anypb.Any) error {
	return func(a *anypb.Any) error {
		_, err := f(a)
		return err
	}
}

func TestMessageRoundTrip(t *testing.T) {
	t.Parallel()
	in := timestamppb.New(timestamppb.Now().AsTime())
	a, err := value.EncodeMessage(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := "type.googleapis.com/google.protobuf.Timestamp"; a.GetTypeUrl() != want {
		t.Errorf("type URL: got %q, want %q", a.GetTypeUrl(), want)
	}
	var out timestamppb.Timestamp
	if err := value.DecodeMessage(a, &out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, &out) {
		t.Errorf("got %v, want %v", &out, in)
	}
	err = value.DecodeMessage(a, &wrapperspb.StringValue{})
	if !errors.Is(err, value.ErrTypeMismatch) {
		t.Errorf("decode into the wrong type: got %v, want ErrTypeMismatch", err)
	}
	if _, err := value.EncodeMessage((*timestamppb.Timestamp)(nil)); err == nil {
		t.Error("encode nil message: got no error")
	}
}

func TestEncodeDecodeAny(t *testing.T) {
	t.Parallel()
	ts := timestamppb.New(timestamppb.Now().AsTime())
	for _, in := range []any{
		"s", []byte{1}, true, int32(-5), int64(1 << 40), float32(1.5), 2.5, ts,
	} {
		a, err := value.Encode(in)
		if err != nil {
			t.Fatalf("encode %T: %v", in, err)
		}
		out, err := value.Decode(a)
		if err != nil {
			t.Fatalf("decode %T: %v", in, err)
		}
		if m, ok := in.(proto.Message); ok {
			if !proto.Equal(m, out.(proto.Message)) {
				t.Errorf("got %v, want %v", out, in)
			}
			continue
		}
		if b, ok := in.([]byte); ok {
			if !bytes.Equal(b, out.([]byte)) {
				t.Errorf("got %v, want %v", out, in)
			}
			continue
		}
		if out != in {
			t.Errorf("got %v (%T), want %v (%T)", out, out, in, in)
		}
	}
	if _, err := value.Encode(3); err == nil {
		t.Error("encode int: got no error")
	}
	if _, err := value.Decode(&anypb.Any{TypeUrl: "json.cloudstate.io/object"}); err == nil {
		t.Error("decode unknown URL: got no error")
	}
	unknown := &anypb.Any{TypeUrl: value.MessagePrefix + "no.such.Message"}
	if _, err := value.Decode(unknown); err == nil {
		t.Error("decode unregistered message: got no error")
	}
}

func TestEqual(t *testing.T) {
	t.Parallel()
	if !value.Equal(value.EncodeString("a"), value.EncodeString("a")) {
		t.Error("same string: not equal")
	}
	if value.Equal(value.EncodeString("a"), value.EncodeBytes([]byte("a"))) {
		t.Error("string and bytes with the same bytes: equal")
	}
	explicit := &anypb.Any{TypeUrl: value.StringURL, Value: []byte{0x0a, 0}}
	if value.Equal(value.EncodeString(""), explicit) {
		t.Error("empty and explicit default: equal, but the proxy sees two values")
	}
	if !value.Equal(nil, &anypb.Any{}) {
		t.Error("nil and empty Any: not equal")
	}
}
