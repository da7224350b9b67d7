import { UserStatus } from "../gen/cloudchat/gateway/v1/gateway_pb";

/** How a status reads, for the label and for the class that colours it. */
const statusText: Record<UserStatus, { label: string; className: string }> = {
  [UserStatus.UNSPECIFIED]: { label: "unknown", className: "unknown" },
  [UserStatus.UNKNOWN]: { label: "unknown", className: "unknown" },
  [UserStatus.ONLINE]: { label: "online", className: "online" },
  [UserStatus.OFFLINE]: { label: "offline", className: "offline" },
};

// Sorts names as people expect: "u2" before "u10", case aside.
const byName = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

interface Entry {
  readonly item: HTMLLIElement;
  readonly label: HTMLElement;
  readonly remove: HTMLButtonElement;
  status: UserStatus;
}

/**
 * WatchList shows the watched users, each with their status in words and
 * colour, a brief flash when it changes, and a button to stop watching.
 */
export class WatchList {
  private readonly entries = new Map<string, Entry>();

  /**
   * @param list the element the entries go in
   * @param empty shown while the list has no entry
   * @param onRemove called when an entry's remove button is pressed
   */
  constructor(
    private readonly list: HTMLUListElement,
    private readonly empty: HTMLElement,
    private readonly onRemove: (name: string) => void,
  ) {
    this.render();
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  /** add lists name with an unknown status; it returns false if listed. */
  add(name: string): boolean {
    if (this.entries.has(name)) {
      return false;
    }
    const item = document.createElement("li");
    item.className = "user";
    item.dataset.user = name;

    const dot = document.createElement("span");
    dot.className = "user__dot";
    dot.setAttribute("aria-hidden", "true");
    const who = document.createElement("span");
    who.className = "user__name";
    who.textContent = name;
    const label = document.createElement("span");
    label.className = "user__status";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "button button--quiet user__remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Stop monitoring ${name}`);
    remove.addEventListener("click", () => this.onRemove(name));

    item.append(dot, who, label, remove);
    const entry: Entry = { item, label, remove, status: UserStatus.UNKNOWN };
    this.entries.set(name, entry);
    this.paint(entry, false);

    // Keep the list sorted by name, so entries do not jump about.
    const after = [...this.entries.keys()]
      .filter((other) => byName.compare(other, name) > 0)
      .sort(byName.compare)[0];
    const next = after === undefined ? null : (this.entries.get(after)?.item ?? null);
    this.list.insertBefore(item, next);
    this.render();
    return true;
  }

  /** remove takes name off the list. */
  remove(name: string): void {
    this.entries.get(name)?.item.remove();
    this.entries.delete(name);
    this.render();
  }

  clear(): void {
    for (const name of this.names()) {
      this.remove(name);
    }
  }

  /**
   * setStatus shows name's status and reports whether it changed; names
   * not listed are ignored.
   */
  setStatus(name: string, status: UserStatus): boolean {
    const entry = this.entries.get(name);
    if (entry === undefined || statusText[entry.status] === statusText[status]) {
      return false;
    }
    entry.status = status;
    this.paint(entry, true);
    return true;
  }

  /** markAllUnknown forgets every status, as after a reconnection. */
  markAllUnknown(): void {
    for (const entry of this.entries.values()) {
      entry.status = UserStatus.UNKNOWN;
      this.paint(entry, false);
    }
  }

  /** setBusy disables name's remove button while its removal runs. */
  setBusy(name: string, busy: boolean): void {
    const entry = this.entries.get(name);
    if (entry !== undefined) {
      entry.remove.disabled = busy;
    }
  }

  /** setEnabled disables or enables all the remove buttons. */
  setEnabled(enabled: boolean): void {
    for (const entry of this.entries.values()) {
      entry.remove.disabled = !enabled;
    }
  }

  private paint(entry: Entry, flash: boolean): void {
    const { label, className } = statusText[entry.status];
    entry.label.textContent = label;
    entry.item.dataset.status = label;
    entry.item.classList.remove("user--unknown", "user--online", "user--offline", "user--flash");
    entry.item.classList.add(`user--${className}`);
    if (flash) {
      // Restart the animation: removing and adding the class in one frame
      // would not replay it.
      void entry.item.offsetWidth;
      entry.item.classList.add("user--flash");
    }
  }

  private render(): void {
    this.empty.hidden = this.entries.size > 0;
    this.list.hidden = this.entries.size === 0;
  }
}
