import { create } from "@bufbuild/protobuf";
import { durationMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { sessionClient } from "../api/clients";
import { needsSignIn, setCredentials } from "../api/credentials";
import { describeError, isRetryable } from "../api/errors";
import {
  OpenSessionRequestSchema,
  type OpenSessionResponse,
  type Service,
  SignInRequestSchema,
  UnwatchRequestSchema,
  type UserStatus,
  WatchRequestSchema,
} from "../gen/cloudchat/gateway/v1/gateway_pb";
import { Backoff } from "./backoff";

/** ConnectionState is where a session page stands with the gateway. */
export type ConnectionState =
  | { readonly kind: "signed-out"; readonly error?: string }
  | { readonly kind: "connecting"; readonly name: string }
  | { readonly kind: "connected"; readonly name: string }
  | {
      readonly kind: "reconnecting";
      readonly name: string;
      readonly reason: string;
      /** When the next attempt starts, in epoch milliseconds. */
      readonly retryAt: number;
    };

/**
 * ConnectionListener hears what happens on the session's stream. Its
 * methods are called one at a time, in the stream's order.
 */
export interface ConnectionListener {
  stateChanged(state: ConnectionState): void;
  /** The session opened, or opened again: statuses known before are stale. */
  opened(): void;
  friendRestored(name: string): void;
  statusChanged(name: string, status: UserStatus): void;
  serviceChanged(service: Service, degraded: boolean, message: string): void;
}

/** WatchResult tells what became of a watch. */
export type WatchResult = "saved" | "unsaved" | "not-connected";

// How long a silent stream is trusted before the first SessionOpened says
// how often the gateway sends heartbeats.
const initialSilenceMs = 30_000;

/**
 * Connection runs one user's session with the gateway: it signs in, holds
 * the session's single stream open, reconnects with backoff when the stream
 * is lost, and makes the session's Watch and Unwatch calls.
 */
export class Connection {
  private state: ConnectionState = { kind: "signed-out" };
  private run: AbortController | undefined;
  private wake: AbortController | undefined;
  private stream: AbortController | undefined;
  private sessionId: string | undefined;

  constructor(private readonly listener: ConnectionListener) {}

  /** connect signs in as name and keeps a session open until disconnect. */
  connect(name: string): void {
    this.stop();
    const run = new AbortController();
    this.run = run;
    void this.loop(name, run.signal);
  }

  /** disconnect closes the session; the gateway then lets the user go. */
  disconnect(): void {
    this.stop();
    this.setState({ kind: "signed-out" });
  }

  /** retryNow cuts short the wait before the next reconnection attempt. */
  retryNow(): void {
    this.wake?.abort();
  }

  /**
   * watch asks the gateway to watch name in this session. A call that fails
   * for a passing reason resolves to "not-connected": the page watches
   * every listed user again when the session reopens. Other failures reject.
   */
  async watch(name: string): Promise<WatchResult> {
    const sessionId = this.sessionId;
    if (sessionId === undefined || this.state.kind !== "connected") {
      return "not-connected";
    }
    try {
      await this.refreshToken(this.state.name);
      const res = await sessionClient.watch(create(WatchRequestSchema, { sessionId, name }));
      return res.saved ? "saved" : "unsaved";
    } catch (err) {
      this.checkSession(err);
      if (isRetryable(err)) {
        return "not-connected";
      }
      throw err;
    }
  }

  /** unwatch asks the gateway to stop watching name; failures reject. */
  async unwatch(name: string): Promise<boolean> {
    const sessionId = this.sessionId;
    if (sessionId === undefined || this.state.kind !== "connected") {
      throw new Error("Not connected.");
    }
    try {
      await this.refreshToken(this.state.name);
      const res = await sessionClient.unwatch(create(UnwatchRequestSchema, { sessionId, name }));
      return res.saved;
    } catch (err) {
      this.checkSession(err);
      throw err;
    }
  }

  /** refreshToken signs in again when the token is missing or expiring. */
  private async refreshToken(name: string, signal?: AbortSignal): Promise<void> {
    if (!needsSignIn(name)) {
      return;
    }
    const res = await sessionClient.signIn(
      create(SignInRequestSchema, { name }),
      signal === undefined ? {} : { signal },
    );
    const expires = res.expireTime ? timestampDate(res.expireTime) : new Date(Date.now() + 3.6e6);
    setCredentials({ name: res.name, token: res.token, expires });
  }

  /**
   * checkSession reopens the stream when the gateway no longer knows the
   * session, as after it restarted while the stream had not noticed yet.
   */
  private checkSession(err: unknown): void {
    if (ConnectError.from(err).code === Code.NotFound) {
      this.stream?.abort();
    }
  }

  private stop(): void {
    this.run?.abort();
    this.run = undefined;
    this.sessionId = undefined;
    setCredentials(undefined);
  }

  private setState(state: ConnectionState): void {
    this.state = state;
    this.listener.stateChanged(state);
  }

  private async loop(name: string, signal: AbortSignal): Promise<void> {
    const backoff = new Backoff(500, 10_000);
    this.setState({ kind: "connecting", name });
    while (!signal.aborted) {
      let reason: string;
      try {
        reason = await this.openOnce(name, signal, () => backoff.reset());
      } catch (err) {
        if (signal.aborted) {
          return;
        }
        if (ConnectError.from(err).code === Code.Unauthenticated) {
          setCredentials(undefined);
        } else if (!isRetryable(err)) {
          this.stop();
          this.setState({ kind: "signed-out", error: describeError(err) });
          return;
        }
        reason = describeError(err);
      }
      this.sessionId = undefined;
      if (signal.aborted) {
        return;
      }

      const delay = backoff.next();
      this.setState({ kind: "reconnecting", name, reason, retryAt: Date.now() + delay });
      this.wake = new AbortController();
      await sleep(delay, AbortSignal.any([signal, this.wake.signal]));
      if (!signal.aborted && this.state.kind === "reconnecting") {
        this.setState({ kind: "connecting", name });
      }
    }
  }

  /**
   * openOnce signs in when needed and follows one session stream until it
   * ends. It resolves with why the stream ended, or rejects with the error.
   */
  private async openOnce(name: string, signal: AbortSignal, opened: () => void): Promise<string> {
    await this.refreshToken(name, signal);

    // A stream that stays silent well past the heartbeat interval is taken
    // for dead: proxies and sleeping laptops can drop it without a word.
    const stream = new AbortController();
    this.stream = stream;
    const onAbort = () => stream.abort();
    signal.addEventListener("abort", onAbort);
    let silenceMs = initialSilenceMs;
    let silent = false;
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    const heard = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        silent = true;
        stream.abort();
      }, silenceMs);
    };
    try {
      heard();
      const events = sessionClient.openSession(create(OpenSessionRequestSchema), {
        signal: stream.signal,
      });
      for await (const res of events) {
        if (res.event.case === "sessionOpened") {
          const interval = res.event.value.heartbeatInterval;
          silenceMs = interval ? 3 * durationMs(interval) + 5_000 : initialSilenceMs;
          this.sessionId = res.event.value.sessionId;
          opened();
          this.setState({ kind: "connected", name });
          this.listener.opened();
        } else {
          this.dispatch(res);
        }
        heard();
      }
      return "The server ended the session.";
    } catch (err) {
      if (silent && !signal.aborted) {
        return "The server stopped answering.";
      }
      if (stream.signal.aborted && !signal.aborted) {
        return "The server lost the session.";
      }
      throw err;
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener("abort", onAbort);
      this.stream = undefined;
    }
  }

  private dispatch(res: OpenSessionResponse): void {
    const ev = res.event;
    switch (ev.case) {
      case "friendRestored":
        this.listener.friendRestored(ev.value.name);
        break;
      case "userStatusChanged":
        this.listener.statusChanged(ev.value.name, ev.value.status);
        break;
      case "serviceDegraded":
        this.listener.serviceChanged(ev.value.service, true, ev.value.message);
        break;
      case "serviceRecovered":
        this.listener.serviceChanged(ev.value.service, false, "");
        break;
      default:
        // Heartbeats only keep the stream alive.
        break;
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
