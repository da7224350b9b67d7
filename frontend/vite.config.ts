import { defineConfig } from "vite";

// The gateway serves the built app from its embed folder; `npm run dev`
// serves it with hot reload and sends API calls to a gateway on :3000.
const gateway = "http://localhost:3000";

export default defineConfig({
  build: {
    outDir: "../gateway/web/dist",
    emptyOutDir: true,
    rolldownOptions: {
      input: {
        index: "index.html",
        window: "window.html",
      },
    },
  },
  server: {
    proxy: {
      "/cloudchat.gateway.v1.SessionService": gateway,
      "/cloudstate.samples.chat.presence.Presence": gateway,
      "/cloudstate.samples.chat.friends.Friends": gateway,
    },
  },
});
