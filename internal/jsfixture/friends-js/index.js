// The chat's friends user function, written against the original Cloudstate
// JavaScript library (npm "cloudstate" 0.0.3) in the shape of its tutorial:
// one CRDT entity per user, an ORSet of friend names.
//
// Environment: HOST (default 127.0.0.1) and PORT (default 8080) say where to
// serve. The library reads user-function.desc from the working directory.
"use strict";

const path = require("path");
const crdt = require("cloudstate").crdt;

function listenAddress(env) {
  const host = env.HOST || "127.0.0.1";
  const rawPort = env.PORT || "8080";
  const port = Number(rawPort);
  if (!/^[0-9]+$/.test(rawPort) || port < 1 || port > 65535) {
    throw new Error(`PORT must be a number from 1 to 65535, got "${rawPort}"`);
  }
  return { bindAddress: host, bindPort: port };
}

const protoRoot = path.resolve(__dirname, "..", "..", "..", "proto");

const entity = new crdt.Crdt(
  "cloudstate/samples/chat/friends/friends.proto",
  "cloudstate.samples.chat.friends.Friends",
  { includeDirs: [protoRoot] }
);

// A user nobody has written to yet has no friends.
entity.defaultValue = () => new crdt.ORSet();

entity.commandHandlers = {
  Add(friend, ctx) {
    ctx.state.add(friend.friend);
    return {};
  },
  Remove(friend, ctx) {
    ctx.state.delete(friend.friend);
    return {};
  },
  GetFriends(user, ctx) {
    return { friends: Array.from(ctx.state) };
  },
};

let address;
try {
  address = listenAddress(process.env);
} catch (err) {
  console.error(err.message);
  process.exit(2);
}
entity.start(address);
