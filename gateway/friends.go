package gateway

import (
	"context"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
)

// callFriends makes one call about owner's friends list, within the
// gateway's call timeout, trying the next replica while a replica is
// unavailable. Every call makes a fresh attempt: nothing about a failure is
// kept, so the gateway recovers as soon as the friends service does.
func callFriends[T any](
	ctx context.Context, g *Gateway, owner string,
	call func(context.Context, friendspbconnect.FriendsClient) (*connect.Response[T], error),
) (*connect.Response[T], error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.CallTimeout)
	defer cancel()
	var err error
	for attempt := range len(g.friends.clients) {
		client, addr := g.friends.pick(owner, attempt)
		var res *connect.Response[T]
		res, err = call(ctx, client)
		if err == nil {
			return res, nil
		}
		g.log.Debug("friends call failed", "user", owner, "upstream", addr, "err", err)
		if connect.CodeOf(err) != connect.CodeUnavailable || ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

func (g *Gateway) addFriend(ctx context.Context, user, friend string) error {
	_, err := callFriends(ctx, g, user, func(
		ctx context.Context, c friendspbconnect.FriendsClient,
	) (*connect.Response[friendspb.Empty], error) {
		return c.Add(ctx, connect.NewRequest(&friendspb.Friend{User: user, Friend: friend}))
	})
	return err
}

func (g *Gateway) removeFriend(ctx context.Context, user, friend string) error {
	_, err := callFriends(ctx, g, user, func(
		ctx context.Context, c friendspbconnect.FriendsClient,
	) (*connect.Response[friendspb.Empty], error) {
		return c.Remove(ctx, connect.NewRequest(&friendspb.Friend{User: user, Friend: friend}))
	})
	return err
}

func (g *Gateway) getFriends(ctx context.Context, user string) ([]string, error) {
	res, err := callFriends(ctx, g, user, func(
		ctx context.Context, c friendspbconnect.FriendsClient,
	) (*connect.Response[friendspb.FriendsList], error) {
		return c.GetFriends(ctx, connect.NewRequest(&friendspb.User{User: user}))
	})
	if err != nil {
		return nil, err
	}
	return res.Msg.GetFriends(), nil
}
