// Command friends runs the friends user function beside a Cloudstate proxy; see
// package friends. Each setting is a flag with an environment fallback (HOST,
// PORT, LOG_LEVEL, LOG_FORMAT); the flag wins.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/internal/funcmain"
	"github.com/cloudchat/cloudchat/services/friends"
)

func main() {
	err := funcmain.Run("friends", os.Args[1:], func(log *slog.Logger) []*function.Entity {
		return []*function.Entity{friends.NewEntity(friends.Config{Logger: log})}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "friends:", err)
		os.Exit(1)
	}
}
