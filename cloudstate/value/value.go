// Package value encodes Go values in google.protobuf.Any the way Cloudstate
// user functions do, so that CRDT elements, map keys and register values
// written by functions in different languages compare equal in the proxy.
//
// A protobuf message is stored as "type.googleapis.com/<full name>" with the
// message's bytes. A primitive (string, bytes, bool, int32, int64, float or
// double) is stored as "p.cloudstate.io/<type>" with the value in field 1 of
// a tiny message, using the type's usual wire type. The default value of a
// primitive (the empty string, zero, false) encodes as empty bytes, as the
// Cloudstate serialization rules ask, so one logical value has one encoding.
//
// The decoders accept both the empty form and an explicit default in field 1,
// which some libraries write, skip fields other than field 1, and reject a
// field 1 of the wrong wire type, a mismatched type URL and malformed bytes
// with an error. The proxy compares values by their exact bytes, so a
// function must encode the same value the same way every time; the encoders
// here are deterministic.
package value

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URL prefixes used by Cloudstate.
const (
	// MessagePrefix starts the type URL of a protobuf message.
	MessagePrefix = "type.googleapis.com/"
	// PrimitivePrefix starts the type URL of a primitive value.
	PrimitivePrefix = "p.cloudstate.io/"
)

// Type URLs of the primitive values.
const (
	StringURL = PrimitivePrefix + "string"
	BytesURL  = PrimitivePrefix + "bytes"
	BoolURL   = PrimitivePrefix + "bool"
	Int32URL  = PrimitivePrefix + "int32"
	Int64URL  = PrimitivePrefix + "int64"
	FloatURL  = PrimitivePrefix + "float"
	DoubleURL = PrimitivePrefix + "double"
)

// primitiveField is the field number that holds a primitive value.
const primitiveField protowire.Number = 1

// ErrTypeMismatch reports an Any whose type URL is not the one a decoder
// reads.
var ErrTypeMismatch = errors.New("type mismatch")

// EncodeString returns s as a p.cloudstate.io/string value. A non-empty
// string encodes as 0x0A, its length and its bytes; the empty string encodes
// as empty bytes.
func EncodeString(s string) *anypb.Any {
	var b []byte
	if s != "" {
		b = protowire.AppendTag(b, primitiveField, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return &anypb.Any{TypeUrl: StringURL, Value: b}
}

// EncodeBytes returns b as a p.cloudstate.io/bytes value. It does not keep b.
func EncodeBytes(b []byte) *anypb.Any {
	var out []byte
	if len(b) > 0 {
		out = protowire.AppendTag(out, primitiveField, protowire.BytesType)
		out = protowire.AppendBytes(out, b)
	}
	return &anypb.Any{TypeUrl: BytesURL, Value: out}
}

// EncodeBool returns v as a p.cloudstate.io/bool value.
func EncodeBool(v bool) *anypb.Any {
	var b []byte
	if v {
		b = protowire.AppendTag(b, primitiveField, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return &anypb.Any{TypeUrl: BoolURL, Value: b}
}

// EncodeInt32 returns v as a p.cloudstate.io/int32 value. A negative value
// takes ten bytes, as protobuf encodes int32.
func EncodeInt32(v int32) *anypb.Any {
	var b []byte
	if v != 0 {
		b = protowire.AppendTag(b, primitiveField, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(v)))
	}
	return &anypb.Any{TypeUrl: Int32URL, Value: b}
}

// EncodeInt64 returns v as a p.cloudstate.io/int64 value.
func EncodeInt64(v int64) *anypb.Any {
	var b []byte
	if v != 0 {
		b = protowire.AppendTag(b, primitiveField, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v))
	}
	return &anypb.Any{TypeUrl: Int64URL, Value: b}
}

// EncodeFloat returns v as a p.cloudstate.io/float value. Only positive zero
// is the default; negative zero and NaN are written out.
func EncodeFloat(v float32) *anypb.Any {
	var b []byte
	if bits := math.Float32bits(v); bits != 0 {
		b = protowire.AppendTag(b, primitiveField, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, bits)
	}
	return &anypb.Any{TypeUrl: FloatURL, Value: b}
}

// EncodeDouble returns v as a p.cloudstate.io/double value. Only positive
// zero is the default; negative zero and NaN are written out.
func EncodeDouble(v float64) *anypb.Any {
	var b []byte
	if bits := math.Float64bits(v); bits != 0 {
		b = protowire.AppendTag(b, primitiveField, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, bits)
	}
	return &anypb.Any{TypeUrl: DoubleURL, Value: b}
}

// EncodeMessage returns m as a type.googleapis.com value. The bytes are
// deterministic for a given message and binary, so the result may serve as a
// set element or map key.
func EncodeMessage(m proto.Message) (*anypb.Any, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil, errors.New("encode message: nil message")
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	name := m.ProtoReflect().Descriptor().FullName()
	return &anypb.Any{TypeUrl: MessagePrefix + string(name), Value: b}, nil
}

// Encode returns v as an Any. v is a string, []byte, bool, int32, int64,
// float32, float64 or proto.Message; an *anypb.Any is returned as it is.
func Encode(v any) (*anypb.Any, error) {
	switch v := v.(type) {
	case *anypb.Any:
		if v == nil {
			return nil, errors.New("encode: nil Any")
		}
		return v, nil
	case string:
		return EncodeString(v), nil
	case []byte:
		return EncodeBytes(v), nil
	case bool:
		return EncodeBool(v), nil
	case int32:
		return EncodeInt32(v), nil
	case int64:
		return EncodeInt64(v), nil
	case float32:
		return EncodeFloat(v), nil
	case float64:
		return EncodeDouble(v), nil
	case proto.Message:
		return EncodeMessage(v)
	default:
		return nil, fmt.Errorf("encode: unsupported type %T", v)
	}
}

// DecodeString reads a p.cloudstate.io/string value. The string must be
// valid UTF-8, as protobuf requires of strings.
func DecodeString(a *anypb.Any) (string, error) {
	b, err := decodeLength(a, StringURL)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", errors.New("decode string: invalid UTF-8")
	}
	return string(b), nil
}

// DecodeBytes reads a p.cloudstate.io/bytes value. The result does not
// alias a.
func DecodeBytes(a *anypb.Any) ([]byte, error) {
	b, err := decodeLength(a, BytesURL)
	if err != nil {
		return nil, err
	}
	return append([]byte{}, b...), nil
}

// DecodeBool reads a p.cloudstate.io/bool value.
func DecodeBool(a *anypb.Any) (bool, error) {
	v, err := decodeVarint(a, BoolURL)
	return v != 0, err
}

// DecodeInt32 reads a p.cloudstate.io/int32 value. Like protobuf, it keeps
// the low 32 bits of the varint.
func DecodeInt32(a *anypb.Any) (int32, error) {
	v, err := decodeVarint(a, Int32URL)
	return int32(v), err
}

// DecodeInt64 reads a p.cloudstate.io/int64 value.
func DecodeInt64(a *anypb.Any) (int64, error) {
	v, err := decodeVarint(a, Int64URL)
	return int64(v), err
}

// DecodeFloat reads a p.cloudstate.io/float value.
func DecodeFloat(a *anypb.Any) (float32, error) {
	var bits uint32
	err := decodeField(a, FloatURL, protowire.Fixed32Type, func(b []byte) int {
		v, n := protowire.ConsumeFixed32(b)
		bits = v
		return n
	})
	return math.Float32frombits(bits), err
}

// DecodeDouble reads a p.cloudstate.io/double value.
func DecodeDouble(a *anypb.Any) (float64, error) {
	var bits uint64
	err := decodeField(a, DoubleURL, protowire.Fixed64Type, func(b []byte) int {
		v, n := protowire.ConsumeFixed64(b)
		bits = v
		return n
	})
	return math.Float64frombits(bits), err
}

// DecodeMessage reads a type.googleapis.com value into m, which must be of
// the type the URL names. m is reset first.
func DecodeMessage(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return errors.New("decode message: nil Any")
	}
	if m == nil {
		return errors.New("decode message: nil message")
	}
	want := MessagePrefix + string(m.ProtoReflect().Descriptor().FullName())
	if a.GetTypeUrl() != want {
		return fmt.Errorf("decode message: %w: got %q, want %q",
			ErrTypeMismatch, a.GetTypeUrl(), want)
	}
	proto.Reset(m)
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return fmt.Errorf("decode message %s: %w", want, err)
	}
	return nil
}

// Decode reads any value Encode writes: a primitive becomes a string,
// []byte, bool, int32, int64, float32 or float64, and a message becomes a
// new message of the type its URL names, looked up in the global registry.
func Decode(a *anypb.Any) (any, error) {
	if a == nil {
		return nil, errors.New("decode: nil Any")
	}
	switch url := a.GetTypeUrl(); url {
	case StringURL:
		return DecodeString(a)
	case BytesURL:
		return DecodeBytes(a)
	case BoolURL:
		return DecodeBool(a)
	case Int32URL:
		return DecodeInt32(a)
	case Int64URL:
		return DecodeInt64(a)
	case FloatURL:
		return DecodeFloat(a)
	case DoubleURL:
		return DecodeDouble(a)
	default:
		name, ok := strings.CutPrefix(url, MessagePrefix)
		if !ok {
			return nil, fmt.Errorf("decode: unknown type URL %q", url)
		}
		mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", name, err)
		}
		m := mt.New().Interface()
		if err := proto.Unmarshal(a.GetValue(), m); err != nil {
			return nil, fmt.Errorf("decode %s: %w", name, err)
		}
		return m, nil
	}
}

// Equal reports whether a and b are the same value as the proxy sees it:
// equal type URLs and equal bytes. A nil Any equals an empty one.
func Equal(a, b *anypb.Any) bool {
	return a.GetTypeUrl() == b.GetTypeUrl() && string(a.GetValue()) == string(b.GetValue())
}

// decodeLength reads the length-delimited field 1 of a primitive value.
// The result aliases a.
func decodeLength(a *anypb.Any, url string) ([]byte, error) {
	var out []byte
	err := decodeField(a, url, protowire.BytesType, func(b []byte) int {
		v, n := protowire.ConsumeBytes(b)
		out = v
		return n
	})
	return out, err
}

// decodeVarint reads the varint field 1 of a primitive value.
func decodeVarint(a *anypb.Any, url string) (uint64, error) {
	var out uint64
	err := decodeField(a, url, protowire.VarintType, func(b []byte) int {
		v, n := protowire.ConsumeVarint(b)
		out = v
		return n
	})
	return out, err
}

// decodeField checks a's type URL and walks its fields. Each field 1 must
// have wire type typ and is passed to consume, which reads the value and
// returns the bytes it used, or a negative protowire error code; as in
// protobuf, the last occurrence wins. Other fields are skipped.
func decodeField(
	a *anypb.Any, url string, typ protowire.Type, consume func([]byte) int,
) error {
	name := strings.TrimPrefix(url, PrimitivePrefix)
	if a == nil {
		return fmt.Errorf("decode %s: nil Any", name)
	}
	if a.GetTypeUrl() != url {
		return fmt.Errorf("decode %s: %w: got %q", name, ErrTypeMismatch, a.GetTypeUrl())
	}
	b := a.GetValue()
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("decode %s: %w", name, protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("decode %s: field number %d out of range", name, num)
		}
		b = b[n:]
		if num != primitiveField {
			n = protowire.ConsumeFieldValue(num, wt, b)
			if n < 0 {
				return fmt.Errorf("decode %s: field %d: %w", name, num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		if wt != typ {
			return fmt.Errorf("decode %s: field 1 has wire type %s, want %s",
				name, wireTypeName(wt), wireTypeName(typ))
		}
		n = consume(b)
		if n < 0 {
			return fmt.Errorf("decode %s: field 1: %w", name, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

// wireTypeName names a protobuf wire type for error messages.
func wireTypeName(t protowire.Type) string {
	switch t {
	case protowire.VarintType:
		return "varint"
	case protowire.Fixed32Type:
		return "fixed32"
	case protowire.Fixed64Type:
		return "fixed64"
	case protowire.BytesType:
		return "length-delimited"
	case protowire.StartGroupType:
		return "start-group"
	case protowire.EndGroupType:
		return "end-group"
	default:
		return fmt.Sprintf("%d", t)
	}
}
