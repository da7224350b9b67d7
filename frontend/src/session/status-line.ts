import type { ConnectionState } from "./connection";

/**
 * StatusLine shows where the connection stands. Its text sits in a polite
 * live region, so changes are announced; the reconnection countdown is
 * shown beside it but not announced every second.
 */
export class StatusLine {
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly root: HTMLElement,
    private readonly text: HTMLElement,
    private readonly countdown: HTMLElement,
    private readonly retry: HTMLButtonElement,
  ) {}

  show(state: ConnectionState): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.root.dataset.state = state.kind;
    this.countdown.textContent = "";
    this.retry.hidden = state.kind !== "reconnecting";
    switch (state.kind) {
      case "signed-out":
        this.text.textContent = "Not connected";
        break;
      case "connecting":
        this.text.textContent = `Connecting as ${state.name}…`;
        break;
      case "connected":
        this.text.textContent = "Connected";
        break;
      case "reconnecting": {
        this.text.textContent = `Connection lost. ${state.reason} Reconnecting…`;
        const tick = () => {
          const seconds = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
          this.countdown.textContent = seconds > 0 ? `Next try in ${seconds} s` : "";
        };
        tick();
        this.timer = setInterval(tick, 250);
        break;
      }
    }
  }
}
