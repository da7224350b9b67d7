import type { Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { bearerToken } from "./credentials";

// Adds the signed-in user's token to every call. The gateway needs it on
// the calls that act for a user and ignores it on the others.
const authorize: Interceptor = (next) => (req) => {
  const token = bearerToken();
  if (token !== undefined) {
    req.header.set("Authorization", `Bearer ${token}`);
  }
  return next(req);
};

/**
 * transport is the page's one connection to the gateway that served it,
 * speaking the Connect protocol with JSON.
 */
export const transport = createConnectTransport({
  baseUrl: window.location.origin,
  interceptors: [authorize],
});
