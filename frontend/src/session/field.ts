/**
 * Field ties a text input to the message that explains why its value was
 * refused: the message is visible, announced, and linked to the input.
 */
export class Field {
  constructor(
    readonly input: HTMLInputElement,
    private readonly message: HTMLElement,
  ) {
    input.setAttribute("aria-describedby", message.id);
    input.addEventListener("input", () => this.setError(undefined));
  }

  /** value returns the input's text without surrounding white space. */
  value(): string {
    return this.input.value.trim();
  }

  /** setError shows message, or clears it when undefined. */
  setError(message: string | undefined): void {
    this.message.textContent = message ?? "";
    this.message.hidden = message === undefined;
    if (message === undefined) {
      this.input.removeAttribute("aria-invalid");
    } else {
      this.input.setAttribute("aria-invalid", "true");
    }
  }

  clear(): void {
    this.input.value = "";
    this.setError(undefined);
  }
}
