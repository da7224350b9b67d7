// Command presence runs the presence user function beside a Cloudstate proxy; see
// package presence. Each setting is a flag with an environment fallback (HOST,
// PORT, LOG_LEVEL, LOG_FORMAT); the flag wins.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/cloudchat/cloudchat/cloudstate/function"
	"github.com/cloudchat/cloudchat/internal/funcmain"
	"github.com/cloudchat/cloudchat/services/presence"
)

func main() {
	err := funcmain.Run("presence", os.Args[1:], func(log *slog.Logger) []*function.Entity {
		return []*function.Entity{presence.NewEntity(presence.Config{Logger: log})}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "presence:", err)
		os.Exit(1)
	}
}
