import { Service } from "../gen/cloudchat/gateway/v1/gateway_pb";

const explanations: Partial<Record<Service, string>> = {
  [Service.PRESENCE]:
    "The presence service is unavailable, so statuses may be out of date. Retrying…",
  [Service.FRIENDS]:
    "The friends service is unavailable. Presence still works; your list will be saved " +
    "and restored once it is back.",
};

/**
 * Notices lists the services that do not work for this session at the
 * moment, in a polite live region.
 */
export class Notices {
  private readonly degraded = new Map<Service, HTMLElement>();

  // The root stays in the page even when empty: a live region must exist
  // before its content changes for the change to be announced.
  constructor(private readonly root: HTMLElement) {}

  /** set shows or hides the notice for service. */
  set(service: Service, degraded: boolean, message: string): void {
    this.degraded.get(service)?.remove();
    this.degraded.delete(service);
    if (degraded) {
      const notice = document.createElement("p");
      notice.className = "notice";
      notice.dataset.service = Service[service].toLowerCase();
      notice.textContent = explanations[service] ?? message;
      this.root.append(notice);
      this.degraded.set(service, notice);
    }
  }

  clear(): void {
    for (const notice of this.degraded.values()) {
      notice.remove();
    }
    this.degraded.clear();
  }
}
