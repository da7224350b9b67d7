// Package function is the Go SDK for writing Cloudstate user functions whose
// entities are CRDTs, speaking version 0.5 of the Cloudstate protocol.
//
// A user function is a gRPC server that a Cloudstate proxy calls. The proxy
// serves the function's own gRPC services to clients, routes each request to
// an entity by the request's entity key fields, and holds and replicates each
// entity's value. The function sees the entity's current value, handles the
// commands, and reports each change it makes; it keeps nothing durable.
//
// Writing a function takes four steps:
//
//	e := function.NewEntity(friendspbconnect.FriendsName, function.EntityOptions{
//		Default: func(string) function.CRDT { return function.NewORSet() },
//	})
//	function.Handle(e, "Add",
//		func(ctx *function.CommandContext, req *friendspb.Friend) (*friendspb.Empty, error) {
//			set, err := function.StateAs[*function.ORSet](ctx)
//			if err != nil {
//				return nil, err
//			}
//			set.Add(value.EncodeString(req.GetFriend()))
//			return &friendspb.Empty{}, nil
//		})
//	srv, err := function.New(function.Config{Logger: logger})
//	err = srv.Register(e)
//	err = srv.Serve(listener)
//
// # Entities and their values
//
// Each entity instance is one stream from the proxy. Its commands, and the
// changes the proxy reports from other nodes, are handled one at a time in
// the order they arrive, so handlers never lock. A handler reads and changes
// the value in place through its context; when it returns, the changes are
// sent to the proxy as a delta with the reply. If it returns an error or
// panics, the command fails and its changes are undone.
//
// The values are GCounter, PNCounter, GSet, ORSet, LWWRegister, Flag, ORMap
// and Vote. Set elements, map keys and register values are
// google.protobuf.Any; encode them with package value, so that every
// function, in any language, writes the same bytes for the same value.
//
// # Streamed calls
//
// A method that streams responses is handled with HandleStream. The handler
// sends on a Stream and may keep the call open: OnChange runs after every
// change of the entity's value, local or remote, and may send more; OnCancel
// runs when the client goes away and may change the value. End completes the
// call. Local keeps per-instance bookkeeping beside the value, such as the
// number of open calls on this node.
package function
