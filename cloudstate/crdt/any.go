package crdt

import (
	"bytes"
	"encoding/binary"
	"strings"

	"google.golang.org/protobuf/types/known/anypb"
)

// anyKey returns the identity of an element, key or register value: its
// type URL and value bytes, exactly. The key is the length of the type URL
// as a uvarint, the type URL, then the value, so that distinct Any messages
// have distinct keys. A nil Any has the key of the empty Any.
func anyKey(a *anypb.Any) string {
	url, val := a.GetTypeUrl(), a.GetValue()
	b := make([]byte, 0, binary.MaxVarintLen64+len(url)+len(val))
	b = binary.AppendUvarint(b, uint64(len(url)))
	b = append(b, url...)
	b = append(b, val...)
	return string(b)
}

// cloneAny returns a copy of a that shares nothing with it; a nil Any
// becomes the empty Any.
func cloneAny(a *anypb.Any) *anypb.Any {
	return &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: bytes.Clone(a.GetValue())}
}

// equalAny reports whether a and b are the same value; nil equals the empty
// Any.
func equalAny(a, b *anypb.Any) bool {
	return a.GetTypeUrl() == b.GetTypeUrl() && bytes.Equal(a.GetValue(), b.GetValue())
}

// compareKeys orders elements and keys by their identity.
func compareKeys(a, b *anypb.Any) int {
	return strings.Compare(anyKey(a), anyKey(b))
}
