package gateway

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	gatewayv1 "github.com/cloudchat/cloudchat/gen/cloudchat/gateway/v1"
	"github.com/cloudchat/cloudchat/gen/presencepb"
	"github.com/cloudchat/cloudchat/gen/presencepb/presencepbconnect"
)

// linkState is the state of an upstream Presence.Connect stream.
type linkState int

const (
	// linkOpening: the stream has not answered yet.
	linkOpening linkState = iota
	// linkUp: the stream is open; the user counts as online.
	linkUp
	// linkDown: the stream ended and is being re-opened.
	linkDown
)

// errStreamEnded is returned when an upstream ends a stream that should
// stay open as long as the gateway holds it.
var errStreamEnded = errors.New("upstream ended the stream")

// openConnect returns a hub stream function that holds a user online with
// Presence.Connect and reports linkUp once the upstream answers.
func openConnect(
	presence *replicas[presencepbconnect.PresenceClient],
) func(context.Context, string, int, func(linkState)) error {
	return func(ctx context.Context, name string, attempt int, emit func(linkState)) error {
		client, addr := presence.pick(name, attempt)
		stream, err := client.Connect(ctx, connect.NewRequest(&presencepb.User{Name: name}))
		if err != nil {
			return fmt.Errorf("connect at %s: %w", addr, err)
		}
		defer stream.Close()
		for stream.Receive() {
			emit(linkUp)
		}
		if err := stream.Err(); err != nil {
			return fmt.Errorf("connect at %s: %w", addr, err)
		}
		return fmt.Errorf("connect at %s: %w", addr, errStreamEnded)
	}
}

// openMonitor returns a hub stream function that follows a user's status
// with Presence.Monitor.
func openMonitor(
	presence *replicas[presencepbconnect.PresenceClient],
) func(context.Context, string, int, func(gatewayv1.UserStatus)) error {
	return func(
		ctx context.Context, name string, attempt int, emit func(gatewayv1.UserStatus),
	) error {
		client, addr := presence.pick(name, attempt)
		stream, err := client.Monitor(ctx, connect.NewRequest(&presencepb.User{Name: name}))
		if err != nil {
			return fmt.Errorf("monitor at %s: %w", addr, err)
		}
		defer stream.Close()
		for stream.Receive() {
			if stream.Msg().GetOnline() {
				emit(gatewayv1.UserStatus_USER_STATUS_ONLINE)
			} else {
				emit(gatewayv1.UserStatus_USER_STATUS_OFFLINE)
			}
		}
		if err := stream.Err(); err != nil {
			return fmt.Errorf("monitor at %s: %w", addr, err)
		}
		return fmt.Errorf("monitor at %s: %w", addr, errStreamEnded)
	}
}
