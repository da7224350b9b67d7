package function_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"

	"connectrpc.com/connect"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/cloudstate/value"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol/protocolconnect"
	"github.com/cloudchat/cloudchat/gen/friendspb"
	"github.com/cloudchat/cloudchat/gen/friendspb/friendspbconnect"
)

// This example writes a friends list function: an ORSet of names per user.
// It then plays the proxy's part by hand, sending a command over gRPC and
// printing the change the function reports.
func Example() {
	// Describe the entity: its service, its default value and its handlers.
	e := function.NewEntity(friendspbconnect.FriendsName, function.EntityOptions{
		Default: func(string) function.CRDT { return function.NewORSet() },
	})
	function.Handle(e, "Add",
		func(ctx *function.CommandContext, req *friendspb.Friend) (*friendspb.Empty, error) {
			if req.GetFriend() == "" {
				return nil, ctx.Fail("friend name must not be empty")
			}
			friends, err := function.StateAs[*function.ORSet](ctx)
			if err != nil {
				return nil, err
			}
			friends.Add(value.EncodeString(req.GetFriend()))
			return &friendspb.Empty{}, nil
		})
	function.Handle(e, "GetFriends",
		func(ctx *function.CommandContext, _ *friendspb.User) (*friendspb.FriendsList, error) {
			friends, err := function.StateAs[*function.ORSet](ctx)
			if err != nil {
				return nil, err
			}
			list := &friendspb.FriendsList{}
			for _, a := range friends.Elements() {
				name, err := value.DecodeString(a)
				if err != nil {
					return nil, err
				}
				list.Friends = append(list.Friends, name)
			}
			slices.Sort(list.Friends)
			return list, nil
		})

	// Serve it.
	srv, err := function.New(function.Config{ServiceName: "friends"})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := srv.Register(e); err != nil {
		fmt.Println(err)
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Shutdown(context.Background()) }()

	// Play the proxy: open the entity stream of user "alice" and add a friend.
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	crdt := protocolconnect.NewCrdtClient(hc, "http://"+ln.Addr().String(), connect.WithGRPC())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := crdt.Handle(ctx)
	defer func() { _ = stream.CloseRequest() }()
	payload, err := value.EncodeMessage(&friendspb.Friend{User: "alice", Friend: "bob"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, in := range []*protocol.CrdtStreamIn{
		{Message: &protocol.CrdtStreamIn_Init{Init: &protocol.CrdtInit{
			ServiceName: friendspbconnect.FriendsName, EntityId: "alice",
		}}},
		{Message: &protocol.CrdtStreamIn_Command{Command: &protocol.Command{
			EntityId: "alice", Id: 1, Name: "Add", Payload: payload,
		}}},
	} {
		if err := stream.Send(in); err != nil {
			fmt.Println(err)
			return
		}
	}
	out, err := stream.Receive()
	if err != nil {
		fmt.Println(err)
		return
	}
	added := out.GetReply().GetStateAction().GetUpdate().GetOrset().GetAdded()
	name, err := value.DecodeString(added[0])
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("reply to command %d adds %q as % x\n",
		out.GetReply().GetCommandId(), name, added[0].GetValue())
	// Output:
	// reply to command 1 adds "bob" as 0a 03 62 6f 62
}
