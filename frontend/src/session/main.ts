import { describeError } from "../api/errors";
import { UserStatus } from "../gen/cloudchat/gateway/v1/gateway_pb";
import { Connection, type ConnectionState } from "./connection";
import { Field } from "./field";
import { validateName } from "./names";
import { Notices } from "./notices";
import { StatusLine } from "./status-line";
import { WatchList } from "./watch-list";

// The session page: one user's chat session, usually in a tile of the host
// page. Everything it shows comes from its single session stream.

function byId<T extends HTMLElement>(id: string, type: new () => T): T {
  const el = document.getElementById(id);
  if (!(el instanceof type)) {
    throw new Error(`#${id} is missing or not a ${type.name}`);
  }
  return el;
}

const signedOut = byId("signed-out", HTMLElement);
const signedIn = byId("signed-in", HTMLElement);
const connectForm = byId("connect-form", HTMLFormElement);
const username = new Field(byId("username", HTMLInputElement), byId("username-error", HTMLElement));
const whoami = byId("whoami", HTMLElement);
const disconnect = byId("disconnect", HTMLButtonElement);
const watchForm = byId("watch-form", HTMLFormElement);
const watchName = new Field(byId("watch-name", HTMLInputElement), byId("watch-error", HTMLElement));
const watchSubmit = byId("watch-submit", HTMLButtonElement);
const listError = byId("list-error", HTMLElement);
const announcer = byId("announcer", HTMLElement);
const statusLine = new StatusLine(
  byId("connection", HTMLElement),
  byId("connection-text", HTMLElement),
  byId("connection-countdown", HTMLElement),
  byId("retry", HTMLButtonElement),
);
const notices = new Notices(byId("notices", HTMLElement));
const list = new WatchList(
  byId("watched", HTMLUListElement),
  byId("watched-empty", HTMLElement),
  (name) => void removeWatch(name),
);

let me: string | undefined;
let wasConnected = false;

const connection = new Connection({
  stateChanged: render,
  opened() {
    // Statuses from before are stale, and the new session watches only the
    // friends it restores: watch the rest of the list again.
    notices.clear();
    list.markAllUnknown();
    for (const name of list.names()) {
      void connection.watch(name);
    }
  },
  friendRestored(name) {
    list.add(name);
  },
  statusChanged(name, status) {
    if (list.setStatus(name, status) && status !== UserStatus.UNKNOWN) {
      announcer.textContent = `${name} is ${status === UserStatus.ONLINE ? "online" : "offline"}`;
    }
  },
  serviceChanged(service, degraded, message) {
    notices.set(service, degraded, message);
  },
});

function render(state: ConnectionState): void {
  statusLine.show(state);
  const connected = state.kind === "connected";
  if (state.kind === "signed-out") {
    me = undefined;
    wasConnected = false;
    list.clear();
    notices.clear();
    signedIn.hidden = true;
    signedOut.hidden = false;
    if (state.error !== undefined) {
      username.setError(state.error);
      username.input.focus();
    }
    return;
  }
  me = state.name;
  whoami.textContent = state.name;
  signedOut.hidden = true;
  signedIn.hidden = false;
  watchName.input.disabled = !connected;
  watchSubmit.disabled = !connected;
  list.setEnabled(connected);
  if (connected && !wasConnected) {
    watchName.input.focus();
  }
  wasConnected = connected;
}

connectForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = username.value();
  const problem = validateName(name);
  if (problem !== undefined) {
    username.setError(problem);
    username.input.focus();
    return;
  }
  username.clear();
  connection.connect(name);
});

disconnect.addEventListener("click", () => {
  connection.disconnect();
  username.input.focus();
});

byId("retry", HTMLButtonElement).addEventListener("click", () => connection.retryNow());

watchForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = watchName.value();
  const problem =
    validateName(name) ??
    (name === me ? "You cannot monitor yourself." : undefined) ??
    (list.has(name) ? `You already monitor ${name}.` : undefined);
  if (problem !== undefined) {
    watchName.setError(problem);
    watchName.input.focus();
    return;
  }
  watchName.clear();
  list.add(name);
  void addWatch(name);
});

async function addWatch(name: string): Promise<void> {
  try {
    await connection.watch(name);
  } catch (err) {
    list.remove(name);
    watchName.setError(`Cannot monitor ${name}: ${describeError(err)}`);
  }
}

async function removeWatch(name: string): Promise<void> {
  listError.hidden = true;
  list.setBusy(name, true);
  try {
    await connection.unwatch(name);
    list.remove(name);
    watchName.input.focus();
  } catch (err) {
    list.setBusy(name, false);
    listError.textContent = `Cannot stop monitoring ${name}: ${describeError(err)}`;
    listError.hidden = false;
  }
}

render({ kind: "signed-out" });
