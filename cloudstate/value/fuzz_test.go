package value_test

import (
	"bytes"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cloudchat/cloudchat/cloudstate/value"
)

// The fuzz targets hold each decoder to protobuf's own reading of the
// matching wrapper type, which also keeps its value in field 1: whatever a
// decoder accepts, protobuf reads as the same value, and whatever protobuf
// rejects, the decoder rejects too. The decoders are stricter only about a
// field 1 of the wrong wire type, which protobuf keeps as an unknown field.
// Every value decoded also survives an encode and decode round trip.

func seed(f *testing.F, encoded ...*anypb.Any) {
	f.Helper()
	for _, a := range encoded {
		f.Add(a.GetValue())
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0})
	f.Add([]byte{0x08, 0})
	f.Add([]byte{0x0a, 5, 'a'})
	f.Add([]byte{0x10, 1, 0x0a, 1, 'z'})
	f.Add([]byte{0x80})
	f.Add([]byte{0x0b, 0x0c})
}

// checkAgainstWrapper runs the differential checks shared by every target.
func checkAgainstWrapper[T comparable](
	t *testing.T, b []byte, err error, got T, wrapper proto.Message, read func() T,
) {
	t.Helper()
	werr := proto.Unmarshal(b, wrapper)
	if err == nil && werr != nil {
		t.Fatalf("decoder accepted % x, protobuf rejects it: %v", b, werr)
	}
	if err == nil && read() != got {
		t.Fatalf("decoded %v from % x, protobuf reads %v", got, b, read())
	}
}

func FuzzDecodeString(f *testing.F) {
	seed(f, value.EncodeString("bob"), value.EncodeString("é"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := value.DecodeString(&anypb.Any{TypeUrl: value.StringURL, Value: b})
		w := &wrapperspb.StringValue{}
		checkAgainstWrapper(t, b, err, got, w, w.GetValue)
		if err != nil {
			return
		}
		again, err := value.DecodeString(value.EncodeString(got))
		if err != nil || again != got {
			t.Fatalf("round trip of %q: got %q, %v", got, again, err)
		}
	})
}

func FuzzDecodeBytes(f *testing.F) {
	seed(f, value.EncodeBytes([]byte{0, 1, 2}))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := value.DecodeBytes(&anypb.Any{TypeUrl: value.BytesURL, Value: b})
		w := &wrapperspb.BytesValue{}
		werr := proto.Unmarshal(b, w)
		if err == nil && werr != nil {
			t.Fatalf("decoder accepted % x, protobuf rejects it: %v", b, werr)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(got, w.GetValue()) {
			t.Fatalf("decoded % x from % x, protobuf reads % x", got, b, w.GetValue())
		}
		again, err := value.DecodeBytes(value.EncodeBytes(got))
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("round trip of % x: got % x, %v", got, again, err)
		}
	})
}

func FuzzDecodeBool(f *testing.F) {
	seed(f, value.EncodeBool(true))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := value.DecodeBool(&anypb.Any{TypeUrl: value.BoolURL, Value: b})
		w := &wrapperspb.BoolValue{}
		checkAgainstWrapper(t, b, err, got, w, w.GetValue)
		if err != nil {
			return
		}
		again, err := value.DecodeBool(value.EncodeBool(got))
		if err != nil || again != got {
			t.Fatalf("round trip of %v: got %v, %v", got, again, err)
		}
	})
}

func FuzzDecodeInt32(f *testing.F) {
	seed(f, value.EncodeInt32(-7), value.EncodeInt32(math.MaxInt32))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := value.DecodeInt32(&anypb.Any{TypeUrl: value.Int32URL, Value: b})
		w := &wrapperspb.Int32Value{}
		checkAgainstWrapper(t, b, err, got, w, w.GetValue)
		if err != nil {
			return
		}
		again, err := value.DecodeInt32(value.EncodeInt32(got))
		if err != nil || again != got {
			t.Fatalf("round trip of %v: got %v, %v", got, again, err)
		}
	})
}

func FuzzDecodeInt64(f *testing.F) {
	seed(f, value.EncodeInt64(math.MinInt64), value.EncodeInt64(12))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := value.DecodeInt64(&anypb.Any{TypeUrl: value.Int64URL, Value: b})
		w := &wrapperspb.Int64Value{}
		checkAgainstWrapper(t, b, err, got, w, w.GetValue)
		if err != nil {
			return
		}
		again, err := value.DecodeInt64(value.EncodeInt64(got))
		if err != nil || again != got {
			t.Fatalf("round trip of %v: got %v, %v", got, again, err)
		}
	})
}

func FuzzDecodeFloat(f *testing.F) {
	seed(f, value.EncodeFloat(1.25), value.EncodeFloat(float32(math.Inf(-1))))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := value.DecodeFloat(&anypb.Any{TypeUrl: value.FloatURL, Value: b})
		w := &wrapperspb.FloatValue{}
		bits := func() uint32 { return math.Float32bits(w.GetValue()) }
		checkAgainstWrapper(t, b, err, math.Float32bits(got), w, bits)
		if err != nil {
			return
		}
		again, err := value.DecodeFloat(value.EncodeFloat(got))
		if err != nil || math.Float32bits(again) != math.Float32bits(got) {
			t.Fatalf("round trip of %v: got %v, %v", got, again, err)
		}
	})
}

func FuzzDecodeDouble(f *testing.F) {
	seed(f, value.EncodeDouble(-0.5), value.EncodeDouble(math.NaN()))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := value.DecodeDouble(&anypb.Any{TypeUrl: value.DoubleURL, Value: b})
		w := &wrapperspb.DoubleValue{}
		bits := func() uint64 { return math.Float64bits(w.GetValue()) }
		checkAgainstWrapper(t, b, err, math.Float64bits(got), w, bits)
		if err != nil {
			return
		}
		again, err := value.DecodeDouble(value.EncodeDouble(got))
		if err != nil || math.Float64bits(again) != math.Float64bits(got) {
			t.Fatalf("round trip of %v: got %v, %v", got, again, err)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	a, err := value.EncodeMessage(wrapperspb.String("x"))
	if err != nil {
		f.Fatal(err)
	}
	seed(f, a)
	f.Fuzz(func(t *testing.T, b []byte) {
		in := &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: b}
		var got wrapperspb.StringValue
		err := value.DecodeMessage(in, &got)
		werr := proto.Unmarshal(b, &wrapperspb.StringValue{})
		if (err == nil) != (werr == nil) {
			t.Fatalf("decoder error %v, protobuf error %v", err, werr)
		}
		if _, err := value.Decode(in); (err == nil) != (werr == nil) {
			t.Fatalf("Decode error %v, protobuf error %v", err, werr)
		}
	})
}
