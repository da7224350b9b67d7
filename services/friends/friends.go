// Package friends is the friends user function of the chat: each user's
// list of the users they watch, kept so that it comes back when they
// reconnect.
//
// Each user is a CRDT entity keyed by the user's name whose value is an
// ORSet of friend names. A name is stored as a p.cloudstate.io/string value,
// byte for byte as the original JavaScript function stores it, so that Go
// and JavaScript replicas share one set. Add and Remove are idempotent, and
// an add on one node wins over a concurrent remove on another.
package friends

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/cloudstate/value"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
)

// MaxNameBytes bounds the length of a user or friend name.
const MaxNameBytes = 64

// Config configures the friends entity.
type Config struct {
	// Logger receives the entity's logs; nil discards them.
	Logger *slog.Logger
}

type friends struct {
	log *slog.Logger
}

// NewEntity returns the friends entity, to register with a function.Server.
func NewEntity(cfg Config) *function.Entity {
	f := &friends{log: cfg.Logger}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	e := function.NewEntity(friendspbconnect.FriendsName, function.EntityOptions{
		Default: func(string) function.CRDT { return function.NewORSet() },
	})
	function.Handle(e, "Add", f.add)
	function.Handle(e, "Remove", f.remove)
	function.Handle(e, "GetFriends", f.getFriends)
	return e
}

// ValidateName reports what is wrong with a user or friend name: empty,
// longer than MaxNameBytes, not UTF-8, or holding a control character or a
// '/'.
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > MaxNameBytes:
		return fmt.Errorf("is %d bytes long, more than %d", len(name), MaxNameBytes)
	case !utf8.ValidString(name):
		return errors.New("is not valid UTF-8")
	case strings.ContainsFunc(name, unicode.IsControl):
		return errors.New("contains a control character")
	case strings.ContainsRune(name, '/'):
		return errors.New("contains '/'")
	}
	return nil
}

// validate checks the names of a request, given as field and name pairs,
// naming the field at fault.
func validate(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		field, name := pairs[i], pairs[i+1]
		err := ValidateName(name)
		switch {
		case err == nil:
		case len(name) > MaxNameBytes:
			return fmt.Errorf("%s name %w", field, err)
		default:
			return fmt.Errorf("%s name %q %w", field, name, err)
		}
	}
	return nil
}

// list returns the user's set of friends.
func list(ctx *function.CommandContext) (*function.ORSet, error) {
	return function.StateAs[*function.ORSet](ctx)
}

func (f *friends) add(
	ctx *function.CommandContext, req *friendspb.Friend,
) (*friendspb.Empty, error) {
	if err := validate("user", req.GetUser(), "friend", req.GetFriend()); err != nil {
		return nil, err
	}
	set, err := list(ctx)
	if err != nil {
		return nil, err
	}
	set.Add(value.EncodeString(req.GetFriend()))
	return &friendspb.Empty{}, nil
}

func (f *friends) remove(
	ctx *function.CommandContext, req *friendspb.Friend,
) (*friendspb.Empty, error) {
	if err := validate("user", req.GetUser(), "friend", req.GetFriend()); err != nil {
		return nil, err
	}
	set, err := list(ctx)
	if err != nil {
		return nil, err
	}
	set.Remove(value.EncodeString(req.GetFriend()))
	return &friendspb.Empty{}, nil
}

// getFriends returns the names in the set, sorted. An element that is not a
// string, which no function of this service writes, is logged and left out.
func (f *friends) getFriends(
	ctx *function.CommandContext, req *friendspb.User,
) (*friendspb.FriendsList, error) {
	if err := validate("user", req.GetUser()); err != nil {
		return nil, err
	}
	set, err := list(ctx)
	if err != nil {
		return nil, err
	}
	out := &friendspb.FriendsList{Friends: make([]string, 0, set.Size())}
	for _, e := range set.Elements() {
		name, err := value.DecodeString(e)
		if err != nil {
			f.log.Warn("friends list element skipped", "user", req.GetUser(),
				"type_url", e.GetTypeUrl(), "err", err)
			continue
		}
		out.Friends = append(out.Friends, name)
	}
	slices.Sort(out.Friends)
	return out, nil
}
