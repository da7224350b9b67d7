package friends_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/cloudstate/function/functiontest"
	"github.com/cloudchat/cloudchat/cloudstate/value"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
	"github.com/cloudchat/cloudchat/services/friends"
)

func open(t *testing.T, user string, state *protocol.CrdtState) *functiontest.Stream {
	t.Helper()
	srv, err := function.New(function.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Register(friends.NewEntity(friends.Config{})); err != nil {
		t.Fatal(err)
	}
	p := functiontest.NewProxy(t, functiontest.Serve(t, srv))
	return p.Open(friendspbconnect.FriendsName, user, state)
}

// jsString is a name as the original JavaScript function stores it.
func jsString(s string) *anypb.Any {
	return &anypb.Any{
		TypeUrl: "p.cloudstate.io/string",
		Value:   append([]byte{0x0a, byte(len(s))}, s...),
	}
}

func call(s *functiontest.Stream, method, user, friend string) *protocol.CrdtReply {
	var id int64
	if method == "GetFriends" {
		id = s.Command(method, &friendspb.User{User: user}, false)
	} else {
		id = s.Command(method, &friendspb.Friend{User: user, Friend: friend}, false)
	}
	return s.Reply(id)
}

func list(t *testing.T, s *functiontest.Stream) []string {
	t.Helper()
	r := call(s, "GetFriends", "alice", "")
	return functiontest.ReplyPayload[*friendspb.FriendsList](t, r).GetFriends()
}

// orset returns the set delta of a reply, failing if there is none.
func orset(t *testing.T, r *protocol.CrdtReply) *protocol.ORSetDelta {
	t.Helper()
	if f := r.GetClientAction().GetFailure(); f != nil {
		t.Fatalf("command failed: %s", f.GetDescription())
	}
	d := r.GetStateAction().GetUpdate().GetOrset()
	if d == nil {
		t.Fatalf("got state action %v, want a set delta", r.GetStateAction())
	}
	return d
}

func sameAnys(a, b []*anypb.Any) bool {
	return slices.EqualFunc(a, b, func(x, y *anypb.Any) bool {
		return x.GetTypeUrl() == y.GetTypeUrl() && bytes.Equal(x.GetValue(), y.GetValue())
	})
}

func TestAddRemove(t *testing.T) {
	t.Parallel()
	s := open(t, "alice", nil)
	if got := list(t, s); len(got) != 0 {
		t.Errorf("new list: %v", got)
	}

	// Names go on the wire exactly as the JavaScript function writes them.
	for _, name := range []string{"carol", "bob"} {
		d := orset(t, call(s, "Add", "alice", name))
		if want := []*anypb.Any{jsString(name)}; !sameAnys(d.GetAdded(), want) || d.GetCleared() ||
			len(d.GetRemoved()) > 0 {
			t.Errorf("add %s: got %v, want added %v", name, d, want)
		}
	}
	if r := call(s, "Add", "alice", "bob"); r.GetStateAction() != nil ||
		r.GetClientAction().GetReply() == nil {
		t.Errorf("adding a friend twice: got %v, want a reply and no change", r)
	}
	if got, want := list(t, s), []string{"bob", "carol"}; !slices.Equal(got, want) {
		t.Errorf("list: got %v, want %v", got, want)
	}

	d := orset(t, call(s, "Remove", "alice", "bob"))
	if !sameAnys(d.GetRemoved(), []*anypb.Any{jsString("bob")}) || len(d.GetAdded()) > 0 {
		t.Errorf("remove bob: got %v", d)
	}
	if r := call(s, "Remove", "alice", "bob"); r.GetStateAction() != nil ||
		r.GetClientAction().GetReply() == nil {
		t.Errorf("removing a friend twice: got %v, want a reply and no change", r)
	}
	if d := orset(t, call(s, "Remove", "alice", "carol")); !d.GetCleared() {
		t.Errorf("removing the last friend: got %v, want the set cleared", d)
	}
	if got := list(t, s); len(got) != 0 {
		t.Errorf("list after removals: %v", got)
	}
}

func TestSharedWithJavaScript(t *testing.T) {
	t.Parallel()
	// The set as a JavaScript replica left it, with one element this
	// function would never write.
	s := open(t, "alice", &protocol.CrdtState{State: &protocol.CrdtState_Orset{
		Orset: &protocol.ORSetState{Items: []*anypb.Any{
			jsString("zed"), jsString("amy"), value.EncodeDouble(3),
		}},
	}})
	if got, want := list(t, s), []string{"amy", "zed"}; !slices.Equal(got, want) {
		t.Errorf("list: got %v, want %v", got, want)
	}
	if r := call(s, "Add", "alice", "zed"); r.GetStateAction() != nil {
		t.Errorf("adding a name a JavaScript replica added: %v, want no change", r)
	}
	d := orset(t, call(s, "Remove", "alice", "amy"))
	if !sameAnys(d.GetRemoved(), []*anypb.Any{jsString("amy")}) {
		t.Errorf("remove amy: got %v", d)
	}

	// A JavaScript replica's change arrives.
	s.Changed(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: &protocol.ORSetDelta{
		Added: []*anypb.Any{jsString("bea")},
	}}})
	if got, want := list(t, s), []string{"bea", "zed"}; !slices.Equal(got, want) {
		t.Errorf("list: got %v, want %v", got, want)
	}
}

func TestBadNames(t *testing.T) {
	t.Parallel()
	s := open(t, "alice", nil)
	orset(t, call(s, "Add", "alice", "bob"))
	tests := []struct {
		name   string
		method string
		user   string
		friend string
		want   string
	}{
		{"empty friend", "Add", "alice", "", `friend name "" is empty`},
		{"empty user", "Add", "", "bob", `user name "" is empty`},
		{"long", "Add", "alice", strings.Repeat("x", 65),
			"friend name is 65 bytes long, more than 64"},
		{"newline", "Add", "alice", "a\nb", `friend name "a\nb" contains a control character`},
		{"delete", "Remove", "alice", "a\x7f", `friend name "a\x7f" contains a control character`},
		{"C1 control", "Add", "alice", "a\u0085",
			`friend name "a\u0085" contains a control character`},
		{"slash", "Remove", "alice", "a/b", `friend name "a/b" contains '/'`},
		{"empty user list", "GetFriends", "", "", `user name "" is empty`},
	}
	for _, tt := range tests {
		r := call(s, tt.method, tt.user, tt.friend)
		f := r.GetClientAction().GetFailure()
		if f == nil || f.GetDescription() != tt.want {
			t.Errorf("%s: got %v, want the failure %q", tt.name, r, tt.want)
		}
		if r.GetStateAction() != nil {
			t.Errorf("%s: a refused command changed the set: %v", tt.name, r.GetStateAction())
		}
	}
	ok := strings.Repeat("é", 32)
	orset(t, call(s, "Add", "alice", ok))
	if got, want := list(t, s), []string{"bob", ok}; !slices.Equal(got, want) {
		t.Errorf("list: got %v, want %v", got, want)
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"bob", true},
		{"Zoë Ünal-O'Neil", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"bad\xffutf8", false},
		{"tab\there", false},
		{"a/b", false},
	} {
		if err := friends.ValidateName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}
