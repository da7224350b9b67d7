// Launches Debian's Chromium for browser tests, headless, with a fresh
// profile and nothing that reaches outside this machine.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** otherHost is a host name that reaches this machine but is not localhost. */
export const otherHost = "chat.test";

/** launchBrowser returns a browser context and a close function. */
export async function launchBrowser() {
  const profile = await mkdtemp(path.join(tmpdir(), "cloudchat-e2e-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
      "--no-first-run",
      // A name that is not localhost, for the page's fallback: frames then
      // load from the page's own host.
      `--host-resolver-rules=MAP ${otherHost} 127.0.0.1`,
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}
