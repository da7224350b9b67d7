import { createClient } from "@connectrpc/connect";
import { SessionService } from "../gen/cloudchat/gateway/v1/gateway_pb";
import { transport } from "./transport";

/** sessionClient calls the gateway's SessionService. */
export const sessionClient = createClient(SessionService, transport);
