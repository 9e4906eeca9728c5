// Per-session reliability: the sending side numbers messages, keeps each one until every
// recipient acknowledged it, retransmits on a timer and gives up after a bounded number of
// tries; the receiving side suppresses duplicates and hands messages over in sequence order.
// Both sides are transport-free: a session tells them what arrived and they call back with what
// to (re)send or deliver, so point-to-point and group sessions share them.

export interface ReliabilityOptions {
  /** Acknowledgements, retransmission and in-order delivery (default true); false = best effort. */
  reliable: boolean;
  /** Retransmit a message not yet acknowledged after this long (default 500 ms). */
  retryIntervalMs: number;
  /** Retransmissions before the sender gets a SessionDeliveryError (default 5). */
  maxRetries: number;
  /** Messages a sender may have unacknowledged at once; send() waits beyond it (default 256). */
  window: number;
}

export const DEFAULT_RELIABILITY: ReliabilityOptions = { reliable: true, retryIntervalMs: 500, maxRetries: 5, window: 256 };

/** Checks a duration option; the message names it. */
export function durationOption(what: string, value: number | undefined, fallback: number, max = 2 ** 31 - 1): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v <= 0 || v > max) throw new RangeError(`${what} must be a whole number of milliseconds from 1 to ${max}, got ${String(v)}`);
  return v;
}

/** Checks user-supplied reliability options; the message names the bad field. */
export function reliabilityOptions(o: Partial<ReliabilityOptions> | undefined): ReliabilityOptions {
  const r = { ...DEFAULT_RELIABILITY, ...o };
  // Beyond 2^31-1 ms Node fires a timer after 1 ms: a huge interval would retransmit nonstop.
  durationOption('session reliability: retryIntervalMs', r.retryIntervalMs, DEFAULT_RELIABILITY.retryIntervalMs);
  if (!Number.isInteger(r.window) || r.window <= 0) throw new RangeError(`session reliability: window must be a positive integer, got ${String(r.window)}`);
  if (!Number.isInteger(r.maxRetries) || r.maxRetries < 0) throw new RangeError(`session reliability: maxRetries must be a non-negative integer, got ${String(r.maxRetries)}`);
  // The receiver decrypts out of order within the window; MLS keeps 1024 skipped generations.
  if (r.window > 1000) throw new RangeError(`session reliability: window must be at most 1000, got ${r.window}`);
  return r;
}

/** A message that some recipients never acknowledged, after every retransmission. */
export class SessionDeliveryError extends Error {
  constructor(
    readonly sessionId: string,
    readonly seq: number,
    /** Recipients (formatted names) that did not acknowledge. */
    readonly missing: string[],
    retries: number,
  ) {
    super(`session ${sessionId}: message ${seq} was not acknowledged by ${missing.join(', ')} after ${retries} retransmission(s)`);
    this.name = 'SessionDeliveryError';
  }
}

interface Unacked<T> {
  seq: number;
  item: T;
  waiting: Set<string>;
  retries: number;
  timer: NodeJS.Timeout | undefined;
  resolve(): void;
  reject(e: Error): void;
}

const noop = (): void => undefined;

export interface OutboundHooks<T> {
  /** Retransmit `item` (sequence `seq`) to these recipients. */
  retransmit(item: T, seq: number, to: string[]): void;
  /**
   * Retries for `seq` ran out and `low` moved past it: the recipients that never got it must
   * hear the new mark, or the messages after the gap wait for it forever.
   */
  gaveUp(seq: number, low: number, missing: string[]): void;
}

/** The sending half: sequence numbers, the unacknowledged window, retransmission. */
export class Outbound<T> {
  private nextSeq = 1;
  private readonly unacked = new Map<number, Unacked<T>>();
  private readonly slotWaiters: (() => void)[] = [];
  private closedWith: Error | undefined;
  retransmissions = 0;

  constructor(
    private readonly sessionId: string,
    private readonly opts: ReliabilityOptions,
    private readonly hooks: OutboundHooks<T>,
  ) {}

  /** Every sequence number below this is settled (acknowledged or given up on). */
  get low(): number {
    for (const seq of this.unacked.keys()) return seq; // Map keeps insertion order: the oldest first
    return this.nextSeq;
  }

  get inFlight(): number {
    return this.unacked.size;
  }

  /**
   * Waits for room in the window, then takes the next sequence number and holds its place until
   * track() or abandon(): while a message is still being encrypted, `low` must not move past it,
   * or a receiver would skip it as settled. Checking for room and taking the place happen in one
   * step, so concurrent callers cannot overfill the window.
   */
  async reserve(): Promise<number> {
    while (this.opts.reliable && this.unacked.size >= this.opts.window && !this.closedWith) {
      await new Promise<void>((r) => this.slotWaiters.push(r));
    }
    if (this.closedWith) throw this.closedWith;
    const seq = this.nextSeq++;
    if (this.opts.reliable) {
      this.unacked.set(seq, { seq, item: undefined as T, waiting: new Set(), retries: 0, timer: undefined, resolve: noop, reject: noop });
    }
    return seq;
  }

  /** The message for `seq` could not be built (e.g. encryption failed): free its place. */
  abandon(seq: number): void {
    const u = this.unacked.get(seq);
    if (u) this.settle(u);
  }

  /**
   * Keeps `item` until every recipient acknowledged it; the promise settles then, or rejects
   * with a SessionDeliveryError when retries run out. Best effort: settles at once.
   */
  track(seq: number, item: T, recipients: Iterable<string>): Promise<void> {
    const u = this.unacked.get(seq);
    if (!u) return this.closedWith ? Promise.reject(this.closedWith) : Promise.resolve();
    for (const r of recipients) u.waiting.add(r);
    if (u.waiting.size === 0) {
      this.settle(u);
      return Promise.resolve();
    }
    u.item = item;
    return new Promise<void>((resolve, reject) => {
      u.resolve = resolve;
      u.reject = reject;
      this.arm(u);
    });
  }

  private arm(u: Unacked<T>): void {
    u.timer = setTimeout(() => this.expire(u), this.opts.retryIntervalMs);
    u.timer.unref?.();
  }

  private expire(u: Unacked<T>): void {
    if (this.unacked.get(u.seq) !== u) return;
    if (u.retries >= this.opts.maxRetries) {
      const missing = [...u.waiting];
      this.settle(u, new SessionDeliveryError(this.sessionId, u.seq, missing, u.retries));
      this.hooks.gaveUp(u.seq, this.low, missing);
      return;
    }
    u.retries++;
    this.retransmissions++;
    this.arm(u);
    this.hooks.retransmit(u.item, u.seq, [...u.waiting]);
  }

  /** `from` acknowledged `seq`. Returns false when nothing was waiting for it (a duplicate ack). */
  ack(seq: number, from: string): boolean {
    const u = this.unacked.get(seq);
    if (!u || u.timer === undefined || !u.waiting.delete(from)) return false;
    if (u.waiting.size === 0) this.settle(u);
    return true;
  }

  /** A recipient left: stop waiting for it anywhere. */
  forget(recipient: string): void {
    for (const u of [...this.unacked.values()]) {
      if (u.timer !== undefined && u.waiting.delete(recipient) && u.waiting.size === 0) this.settle(u);
    }
  }

  private settle(u: Unacked<T>, err?: Error): void {
    clearTimeout(u.timer);
    this.unacked.delete(u.seq);
    if (err) u.reject(err);
    else u.resolve();
    this.slotWaiters.shift()?.();
  }

  /** Ends the stream: everything unacknowledged rejects with `err`. */
  close(err: Error): void {
    this.closedWith = err;
    for (const u of [...this.unacked.values()]) this.settle(u, err);
    for (const w of this.slotWaiters.splice(0)) w();
  }
}

/** What the receiving half makes of an arriving sequence number, before any decryption. */
export type Arrival = 'new' | 'duplicate' | 'beyond-window';

/** The receiving half for one remote sender: duplicate suppression and in-order hand-over. */
export class Inbound<T> {
  /** Next sequence number to hand over; 0 until the first message fixes the starting point. */
  private expected = 0;
  private readonly held = new Map<number, T>();
  duplicates = 0;
  skipped = 0;

  constructor(
    private readonly window: number,
    private readonly deliver: (item: T, seq: number) => void,
  ) {}

  /**
   * Classifies `seq` before anything else is done with it; changes nothing, so a frame that then
   * fails authentication leaves no trace. 'duplicate' should be acknowledged again and dropped;
   * 'beyond-window' dropped unacknowledged (the sender retransmits it later).
   */
  arrival(seq: number): Arrival {
    if (this.expected === 0) return 'new';
    if (seq < this.expected || this.held.has(seq)) {
      this.duplicates++;
      return 'duplicate';
    }
    if (seq >= this.expected + 2 * this.window) return 'beyond-window';
    return 'new';
  }

  /**
   * Takes an authenticated message and hands it over when its turn comes. The first one fixes
   * where the stream starts: the sender's `low` mark, which it sent along.
   */
  accept(seq: number, item: T, low: number): void {
    if (this.expected === 0) this.expected = low > 0 && low <= seq ? low : seq;
    if (seq < this.expected || this.held.has(seq) || seq >= this.expected + 2 * this.window) return;
    this.held.set(seq, item);
    this.advance(low);
  }

  /**
   * The sender settled everything below `low`: gaps there will never be filled, so what is held
   * beyond them is handed over.
   */
  advance(low: number): void {
    // `low` comes from an authenticated frame (MLS) or, on plaintext sessions, is trusted like
    // everything else there.
    if (this.expected === 0) return;
    if (low > this.expected) {
      const below = [...this.held.keys()].filter((s) => s < low).sort((a, b) => a - b);
      this.skipped += low - this.expected - below.length;
      this.expected = low;
      for (const s of below) {
        const item = this.held.get(s)!;
        this.held.delete(s);
        this.deliver(item, s);
      }
    }
    for (let item = this.held.get(this.expected); item !== undefined; item = this.held.get(this.expected)) {
      this.held.delete(this.expected);
      this.deliver(item, this.expected++);
    }
  }
}
