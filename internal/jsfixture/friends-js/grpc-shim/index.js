// Stands in for the native "grpc" 1.x package, whose prebuilt binaries cannot
// be fetched here, by re-exporting @grpc/grpc-js. The Cloudstate library uses
// Server, ServerCredentials, Metadata and loadPackageDefinition; of those only
// the server's start-up differs: grpc 1.x bound synchronously with bind() and
// then served after start(), grpc-js binds asynchronously and serves at once.
"use strict";

const grpc = require("@grpc/grpc-js");

class Server extends grpc.Server {
  // bind starts listening on address ("host:port") and returns the port
  // right away, as grpc 1.x did. The port must be given: an ephemeral port is
  // only known once the asynchronous bind completes. A failed bind ends the
  // process, since the library would otherwise serve nothing without a word.
  bind(address, credentials) {
    const port = Number(address.slice(address.lastIndexOf(":") + 1));
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new Error(`grpc shim: bind needs an explicit port, got "${address}"`);
    }
    this.bindAsync(address, credentials, (err) => {
      if (err) {
        console.error(`grpc shim: bind ${address}: ${err.message}`);
        process.exit(1);
      }
      console.log(`grpc shim: listening on ${address}`);
    });
    return port;
  }

  // start does nothing: grpc-js serves as soon as bindAsync completes.
  start() {}
}

module.exports = { ...grpc, Server };
