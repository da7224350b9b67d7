/**
 * Backoff spaces out reconnection attempts: each delay is drawn at random
 * between half and all of a bound that doubles from min up to max, so that
 * many pages reconnecting at once do not arrive together.
 */
export class Backoff {
  private bound = 0;

  constructor(
    private readonly min: number,
    private readonly max: number,
  ) {}

  /** next returns the delay in milliseconds before the next attempt. */
  next(): number {
    this.bound = Math.min(Math.max(this.bound * 2, this.min), this.max);
    return this.bound / 2 + Math.random() * (this.bound / 2);
  }

  /** reset starts the delays again from min. */
  reset(): void {
    this.bound = 0;
  }
}
