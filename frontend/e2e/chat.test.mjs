// Browser tests of the whole chat: real processes, real Chromium.

import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { launchBrowser, otherHost } from "./browser.mjs";
import { HostPage, waitMs } from "./chat.mjs";
import { startStack } from "./stack.mjs";

const artifacts = path.join(import.meta.dirname, "artifacts");

// Names unique to this run, so that friends lists from other runs against
// the same services do not leak in.
const run = Date.now().toString(36).slice(-5);
const user = (name) => `${name}-${run}`;

describe("chat in the browser", { timeout: 300_000 }, () => {
  let stack;
  let browser;

  before(async () => {
    await mkdir(artifacts, { recursive: true });
    stack = await startStack();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await stack?.stop();
  });

  test("each session frame loads from its own host name", async () => {
    const host = await HostPage.open(browser.context, stack.url);
    await host.addWindows(2);
    const sources = await host.frameSources();
    assert.equal(sources.length, 3);
    assert.equal(new Set(sources.map((s) => new URL(s).host)).size, 3, sources.join(", "));
    for (const source of sources) {
      assert.match(new URL(source).hostname, /^s\d+\.localhost$/);
    }
    await host.close();
  });

  test("served from another host, frames share the page's host", async () => {
    const url = new URL(stack.url);
    url.hostname = otherHost;
    const host = await HostPage.open(browser.context, url.href);
    await host.addWindows(1);
    const sources = await host.frameSources();
    assert.deepEqual(
      sources.map((s) => new URL(s).host),
      [url.host, url.host],
    );
    const [a, b] = [host.session(1), host.session(2)];
    const [nina, otto] = [user("nina"), user("otto")];
    await a.connectAs(nina);
    await b.connectAs(otto);
    await b.monitor(nina);
    await b.waitStatus(nina, "online");
    await host.close();
  });

  test("names are validated with a visible message", async () => {
    const host = await HostPage.open(browser.context, stack.url);
    const s = host.session(1);
    await s.frame.getByLabel("Connect as").fill("a/b");
    await s.frame.getByRole("button", { name: "Connect", exact: true }).click();
    const error = s.error("username-error");
    await error.waitFor();
    assert.match(await error.textContent(), /“\/”/);
    assert.equal(await s.frame.getByLabel("Connect as").getAttribute("aria-invalid"), "true");

    await s.connectAs(user("val"));
    await s.monitor(user("val"));
    assert.match(await s.error("watch-error").textContent(), /cannot monitor yourself/);
    await s.monitor(user("other"));
    await s.entry(user("other")).waitFor();
    await s.monitor(user("other"));
    assert.match(await s.error("watch-error").textContent(), /already monitor/);
    assert.equal((await s.names()).length, 1);
    await host.close();
  });

  test("a session works from the keyboard alone", async () => {
    const host = await HostPage.open(browser.context, stack.url);
    const s = host.session(1);
    const [lena, mo] = [user("lena"), user("mo")];
    await s.frame.getByLabel("Connect as").focus();
    await host.page.keyboard.type(lena);
    await host.page.keyboard.press("Enter");
    await s.waitState("connected");
    // Focus moves to the monitor field once connected.
    await s.frame.locator("#watch-name:focus").waitFor();
    await host.page.keyboard.type(mo);
    await host.page.keyboard.press("Enter");
    await s.waitStatus(mo, "offline");
    await host.page.keyboard.press("Tab");
    await host.page.keyboard.press("Tab");
    assert.equal(
      await s.frame.locator(":focus").getAttribute("aria-label"),
      `Stop monitoring ${mo}`,
    );
    await host.page.keyboard.press("Enter");
    await s.entry(mo).waitFor({ state: "detached" });
    await host.close();
  });

  test("B sees A come online, go offline, and B's list comes back", async () => {
    const host = await HostPage.open(browser.context, stack.url);
    await host.addWindows(1);
    const [a, b] = [host.session(1), host.session(2)];
    const [alice, bob, carol] = [user("alice"), user("bob"), user("carol")];

    await b.connectAs(bob);
    await b.monitor(alice);
    await b.monitor(carol);
    await b.waitStatus(alice, "offline");
    await a.connectAs(alice);
    await b.waitStatus(alice, "online");
    await a.disconnect();
    await b.waitStatus(alice, "offline");
    await a.connectAs(alice);
    await b.waitStatus(alice, "online");

    await b.disconnect();
    assert.deepEqual(await b.names(), []);
    await b.connectAs(bob);
    await b.waitStatus(alice, "online");
    await b.waitStatus(carol, "offline");
    assert.deepEqual(await b.names(), [alice, carol]);

    await b.remove(carol);
    await b.disconnect();
    await b.connectAs(bob);
    await b.waitStatus(alice, "online");
    assert.deepEqual(await b.names(), [alice]);
    await host.close();
  });

  test("ten sessions monitoring each other all show the right status", async () => {
    const host = await HostPage.open(browser.context, stack.url);
    const n = 10;
    await host.addWindows(n - 1);
    const names = Array.from({ length: n }, (_, i) => user(`u${i + 1}`));
    const sessions = names.map((_, i) => host.session(i + 1));
    for (const [i, s] of sessions.entries()) {
      await s.connectAs(names[i]);
    }
    for (const [i, s] of sessions.entries()) {
      for (const other of names) {
        if (other !== names[i]) {
          await s.monitor(other);
        }
      }
    }
    for (const [i, s] of sessions.entries()) {
      for (const other of names) {
        if (other !== names[i]) {
          await s.waitStatus(other, "online");
        }
      }
    }

    await sessions[0].disconnect();
    for (const s of sessions.slice(1)) {
      await s.waitStatus(names[0], "offline");
    }
    // Chromium paints frames outside the viewport lazily: make room for all.
    await host.page.setViewportSize({ width: 1280, height: 1900 });
    await host.page.screenshot({
      path: path.join(artifacts, "ten-sessions.png"),
      animations: "disabled",
    });
    await sessions[0].connectAs(names[0]);
    for (const s of sessions.slice(1)) {
      await s.waitStatus(names[0], "online");
    }
    await host.close();
  });

  test("presence goes on while friends is down, and friends recovers", async () => {
    const host = await HostPage.open(browser.context, stack.url);
    await host.addWindows(1);
    const [a, b] = [host.session(1), host.session(2)];
    const [dora, erin] = [user("dora"), user("erin")];
    await a.connectAs(dora);

    await stack.stopFriends();
    try {
      await b.connectAs(erin);
      await b.notice("friends").waitFor({ timeout: waitMs });
      await b.monitor(dora);
      await b.waitStatus(dora, "online");
      await a.disconnect();
      await b.waitStatus(dora, "offline");
      await a.connectAs(dora);
      await b.waitStatus(dora, "online");
      await host.page.screenshot({
        path: path.join(artifacts, "friends-down.png"),
        animations: "disabled",
      });
    } finally {
      await stack.startFriends();
    }

    await b.notice("friends").waitFor({ state: "detached", timeout: waitMs });
    await b.disconnect();
    await b.connectAs(erin);
    await b.waitStatus(dora, "online");
    assert.deepEqual(await b.names(), [dora]);
    await host.close();
  });

  test("sessions reconnect by themselves after the gateway restarts", async () => {
    const host = await HostPage.open(browser.context, stack.url);
    await host.addWindows(1);
    const [a, b] = [host.session(1), host.session(2)];
    const [finn, gina] = [user("finn"), user("gina")];
    await a.connectAs(finn);
    await b.connectAs(gina);
    await b.monitor(finn);
    await b.waitStatus(finn, "online");

    await stack.stopGateway();
    try {
      await b.waitState("reconnecting");
      await a.waitState("reconnecting");
    } finally {
      await stack.startGateway();
    }
    await a.waitState("connected", 30_000);
    await b.waitState("connected", 30_000);
    await b.waitStatus(finn, "online");
    assert.deepEqual(await b.names(), [finn]);
    await host.close();
  });

  test("screenshot of a few sessions", async () => {
    const host = await HostPage.open(browser.context, stack.url);
    await host.page.setViewportSize({ width: 1280, height: 1000 });
    await host.addWindows(2);
    const [a, b, c] = [host.session(1), host.session(2), host.session(3)];
    const [hana, ivan, jo] = [user("hana"), user("ivan"), user("jo")];
    await a.connectAs(hana);
    await b.connectAs(ivan);
    await a.monitor(ivan);
    await a.monitor(jo);
    await a.monitor(user("kim"));
    await b.monitor(hana);
    await a.waitStatus(ivan, "online");
    await a.waitStatus(jo, "offline");
    await b.waitStatus(hana, "online");
    await c.frame.getByLabel("Connect as").fill("no/slash");
    await c.frame.getByRole("button", { name: "Connect", exact: true }).click();
    await c.error("username-error").waitFor();
    await host.page.screenshot({
      path: path.join(artifacts, "sessions.png"),
      animations: "disabled",
    });
    await host.close();
  });
});
