// Drives the host page and its session frames the way a person would: by
// labels, roles and the text on screen.

/** How long to wait for anything that crosses the network. */
export const waitMs = 20_000;

/** HostPage is the page of tiles. */
export class HostPage {
  constructor(page) {
    this.page = page;
  }

  /** open loads the host page and waits for its first session frame. */
  static async open(context, url) {
    const page = await context.newPage();
    page.on("pageerror", (err) => process.stderr.write(`[page] ${err.message}\n`));
    await page.goto(url);
    await page.locator('iframe[data-session="1"]').waitFor();
    return new HostPage(page);
  }

  /** addWindows opens n more chat windows. */
  async addWindows(n) {
    const button = this.page.getByRole("button", { name: "Open a new chat window" });
    for (let i = 0; i < n; i++) {
      await button.click();
    }
  }

  /** session returns the nth session frame, counting from 1. */
  session(n) {
    return new Session(this.page.frameLocator(`iframe[data-session="${n}"]`));
  }

  async frameSources() {
    return this.page.locator("iframe").evaluateAll((frames) => frames.map((f) => f.src));
  }

  async close() {
    await this.page.close();
  }
}

/** Session is one session frame. */
export class Session {
  constructor(frame) {
    this.frame = frame;
  }

  async connectAs(name) {
    await this.frame.getByLabel("Connect as").fill(name);
    await this.frame.getByRole("button", { name: "Connect", exact: true }).click();
    await this.waitState("connected");
  }

  async disconnect() {
    await this.frame.getByRole("button", { name: "Disconnect" }).click();
    await this.waitState("signed-out");
  }

  /** waitState waits for the connection to reach state. */
  async waitState(state, timeout = waitMs) {
    await this.frame.locator(`#connection[data-state="${state}"]`).waitFor({ timeout });
  }

  async monitor(name) {
    await this.frame.getByLabel("Monitor user").fill(name);
    await this.frame.getByRole("button", { name: "Monitor", exact: true }).click();
  }

  async remove(name) {
    await this.frame.getByRole("button", { name: `Stop monitoring ${name}` }).click();
    await this.entry(name).waitFor({ state: "detached", timeout: waitMs });
  }

  entry(name) {
    return this.frame.locator(`li.user[data-user="${name}"]`);
  }

  /** waitStatus waits until name's entry shows status in words. */
  async waitStatus(name, status, timeout = waitMs) {
    await this.frame
      .locator(`li.user[data-user="${name}"][data-status="${status}"]`)
      .filter({ hasText: status })
      .waitFor({ timeout });
  }

  /** names returns the watched users listed, in order. */
  async names() {
    return this.frame.locator("li.user").evaluateAll((items) => items.map((i) => i.dataset.user));
  }

  notice(service) {
    return this.frame.locator(`.notice[data-service="${service}"]`);
  }

  error(id) {
    return this.frame.locator(`#${id}`);
  }
}
