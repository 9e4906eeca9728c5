// A hand-over from a producer (the session's receive path) to one consumer, either an async
// iterator or a callback. Not bounded here: a session stops acknowledging new messages while too
// many wait (its high-water mark), so senders hold back.

export class AsyncQueue<T> {
  private items: T[] = [];
  private head = 0;
  private takers: ((r: IteratorResult<T>) => void)[] = [];
  private handler: ((item: T) => void) | undefined;
  private ended = false;

  constructor(private readonly onHandlerError: (err: unknown) => void) {}

  push(item: T): void {
    if (this.ended) return;
    if (this.handler) {
      this.call(this.handler, item);
      return;
    }
    const taker = this.takers.shift();
    if (taker) taker({ value: item, done: false });
    else this.items.push(item);
  }

  /** Delivers everything (queued first) to `handler` from now on. */
  setHandler(handler: (item: T) => void): void {
    this.handler = handler;
    const queued = this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    for (const item of queued) this.call(handler, item);
  }

  private call(handler: (item: T) => void, item: T): void {
    try {
      handler(item);
    } catch (err) {
      this.onHandlerError(err);
    }
  }

  /** Items in arrival order; ends after end() once the queued ones are taken. */
  iterate(): AsyncIterableIterator<T> {
    const next = (): Promise<IteratorResult<T>> => {
      if (this.head < this.items.length) {
        const value = this.items[this.head]!;
        this.items[this.head++] = undefined as T;
        if (this.head > 1024 && this.head * 2 > this.items.length) {
          this.items = this.items.slice(this.head);
          this.head = 0;
        }
        return Promise.resolve({ value, done: false });
      }
      if (this.ended) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve) => this.takers.push(resolve));
    };
    const it: AsyncIterableIterator<T> = {
      next,
      return: () => Promise.resolve({ value: undefined, done: true }),
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  get size(): number {
    return this.items.length - this.head;
  }

  end(): void {
    this.ended = true;
    for (const t of this.takers.splice(0)) t({ value: undefined, done: true });
  }
}
