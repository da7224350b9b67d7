// Runs the chat's real processes for browser tests: the presence and friends
// functions, a proxy beside each, and the gateway, all from bin/ (built with
// `go build -o bin/<name> ./cmd/<name>`), on free loopback ports. Each
// process's output is prefixed with its name. The friends pair and the
// gateway can be stopped and started again on the same ports.
//
// With E2E_UPSTREAMS=fake, in-memory stand-ins (bin/devupstream, built from
// ./gateway/internal/devupstream) take the place of each function and proxy
// pair, to work on the gateway and the pages alone.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";

const repo = path.resolve(import.meta.dirname, "..", "..");
const bin = (name) => path.join(repo, "bin", name);
const readyTimeoutMs = 30_000;
const stopTimeoutMs = 10_000;

/** freePort returns a loopback port that nothing listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Process is one child process whose output is prefixed with its name. */
class Process {
  constructor(name, file, args, env) {
    this.name = name;
    this.file = file;
    this.args = args;
    this.env = env;
    this.child = undefined;
    this.exited = undefined;
  }

  start() {
    if (!existsSync(this.file)) {
      throw new Error(`${this.file} is missing: build it with go build -o bin/...`);
    }
    const child = spawn(this.file, this.args, {
      env: { ...process.env, ...this.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => resolve({ code, signal })),
    );
    for (const stream of [child.stdout, child.stderr]) {
      let partial = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk) => {
        const lines = (partial + chunk).split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) {
          process.stderr.write(`[${this.name}] ${line}\n`);
        }
      });
    }
    this.exited.then(({ code, signal }) => {
      if (this.child === child) {
        process.stderr.write(`[${this.name}] exited (code ${code}, signal ${signal})\n`);
      }
    });
  }

  /** stop sends SIGTERM, then SIGKILL if the process outlives the timeout. */
  async stop() {
    const child = this.child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) {
      this.child = undefined;
      return;
    }
    child.kill("SIGTERM");
    const stopped = await Promise.race([this.exited.then(() => true), delay(stopTimeoutMs, false)]);
    if (!stopped) {
      child.kill("SIGKILL");
      await this.exited;
    }
    this.child = undefined;
  }
}

/** waitReady polls url until it answers 200, or fails after the timeout. */
async function waitReady(url, proc) {
  const deadline = Date.now() + readyTimeoutMs;
  let last = "no answer";
  while (Date.now() < deadline) {
    if (proc.child?.exitCode !== null && proc.child?.exitCode !== undefined) {
      throw new Error(`${proc.name} exited before it was ready`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) {
        return;
      }
      last = `status ${res.status}`;
    } catch (err) {
      last = err.message;
    }
    await delay(100);
  }
  throw new Error(`${proc.name} not ready at ${url} after ${readyTimeoutMs} ms: ${last}`);
}

/** useRealUpstreams tells whether to run the real functions and proxies. */
function useRealUpstreams() {
  return process.env.E2E_UPSTREAMS !== "fake";
}

/**
 * Upstream is one service as the gateway sees it: a function and its proxy,
 * or a stand-in.
 */
class Upstream {
  constructor(service, real) {
    this.service = service;
    this.real = real;
    this.processes = [];
  }

  async init() {
    this.port = await freePort();
    if (this.real) {
      const functionPort = await freePort();
      this.metricsPort = await freePort();
      this.processes = [
        new Process(this.service, bin(this.service), [], {
          HOST: "127.0.0.1",
          PORT: String(functionPort),
        }),
        new Process(`${this.service}-proxy`, bin("proxy"), [], {
          HTTP_HOST: "127.0.0.1",
          HTTP_PORT: String(this.port),
          USER_FUNCTION_HOST: "127.0.0.1",
          USER_FUNCTION_PORT: String(functionPort),
          METRICS_PORT: String(this.metricsPort),
          NODE_NAME: `${this.service}-1`,
        }),
      ];
    } else {
      this.processes = [
        new Process(`${this.service}-fake`, bin("devupstream"), ["-service", this.service], {
          HOST: "127.0.0.1",
          PORT: String(this.port),
        }),
      ];
    }
  }

  get addr() {
    return `127.0.0.1:${this.port}`;
  }

  async start() {
    for (const proc of this.processes) {
      proc.start();
    }
    const last = this.processes.at(-1);
    const ready = this.real
      ? `http://127.0.0.1:${this.metricsPort}/readyz`
      : `http://127.0.0.1:${this.port}/healthz`;
    await waitReady(ready, last);
  }

  async stop() {
    for (const proc of [...this.processes].reverse()) {
      await proc.stop();
    }
  }
}

/**
 * startStack starts presence, friends and the gateway, and resolves once
 * all are ready. The gateway's URL uses the name localhost, so that session
 * frames can load from sN.localhost.
 */
export async function startStack() {
  const real = useRealUpstreams();
  process.stderr.write(`[stack] upstreams: ${real ? "real functions and proxies" : "stand-ins"}\n`);
  const presence = new Upstream("presence", real);
  const friends = new Upstream("friends", real);
  await presence.init();
  await friends.init();
  const gatewayPort = await freePort();
  const gateway = new Process("gateway", bin("gateway"), [], {
    HOST: "127.0.0.1",
    PORT: String(gatewayPort),
    PRESENCE: presence.addr,
    FRIENDS: friends.addr,
    LOG_FORMAT: "text",
  });

  const stack = {
    real,
    url: `http://localhost:${gatewayPort}`,
    async stopFriends() {
      await friends.stop();
    },
    async startFriends() {
      await friends.start();
    },
    async stopGateway() {
      await gateway.stop();
    },
    async startGateway() {
      gateway.start();
      await waitReady(`http://127.0.0.1:${gatewayPort}/healthz`, gateway);
    },
    async stop() {
      await gateway.stop();
      await friends.stop();
      await presence.stop();
    },
  };
  try {
    await Promise.all([presence.start(), friends.start()]);
    await stack.startGateway();
  } catch (err) {
    await stack.stop();
    throw err;
  }
  return stack;
}
