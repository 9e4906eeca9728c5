// Splits an HTTP/2 DATA byte stream into gRPC length-prefixed messages
// (1 byte compressed flag, 4 bytes big-endian length, then the message).
// Whole messages inside a chunk are handed out as offsets into that chunk, without copying;
// only a message split across chunks is reassembled into its own buffer.

import { Status } from './grpc-status.js';

export type MessageSink = (buf: Buffer, start: number, end: number) => void;

export class FrameError extends Error {
  constructor(
    readonly code: Status,
    reason: string,
  ) {
    super(reason);
    this.name = 'FrameError';
  }
}

export class FrameParser {
  private readonly header = Buffer.alloc(5);
  private headerFill = 0;
  private body: Buffer | null = null;
  private bodyFill = 0;

  constructor(
    private readonly maxMessageSize: number,
    private readonly sink: MessageSink,
  ) {}

  /** True when no partial message is buffered (the stream may end cleanly here). */
  get idle(): boolean {
    return this.headerFill === 0 && this.body === null;
  }

  /** Feeds one chunk; throws FrameError on a frame the protocol does not allow. */
  push(chunk: Buffer): void {
    const len = chunk.length;
    let pos = 0;
    while (pos < len) {
      if (this.body !== null) {
        const want = this.body.length - this.bodyFill;
        const n = Math.min(want, len - pos);
        chunk.copy(this.body, this.bodyFill, pos, pos + n);
        this.bodyFill += n;
        pos += n;
        if (this.bodyFill === this.body.length) {
          const done = this.body;
          this.body = null;
          this.bodyFill = 0;
          this.sink(done, 0, done.length);
        }
        continue;
      }
      if (this.headerFill === 0 && len - pos >= 5) {
        const size = this.checkHeader(chunk[pos]!, chunk.readUInt32BE(pos + 1));
        const start = pos + 5;
        if (len - start >= size) {
          pos = start + size;
          this.sink(chunk, start, pos);
        } else {
          this.body = Buffer.allocUnsafe(size);
          chunk.copy(this.body, 0, start, len);
          this.bodyFill = len - start;
          pos = len;
        }
        continue;
      }
      const n = Math.min(5 - this.headerFill, len - pos);
      chunk.copy(this.header, this.headerFill, pos, pos + n);
      this.headerFill += n;
      pos += n;
      if (this.headerFill === 5) {
        this.headerFill = 0;
        const size = this.checkHeader(this.header[0]!, this.header.readUInt32BE(1));
        if (size === 0) this.sink(EMPTY, 0, 0);
        else {
          this.body = Buffer.allocUnsafe(size);
          this.bodyFill = 0;
        }
      }
    }
  }

  private checkHeader(flag: number, size: number): number {
    if (flag === 1) {
      throw new FrameError(Status.UNIMPLEMENTED, 'compressed message received but no grpc-encoding was negotiated');
    }
    if (flag !== 0) throw new FrameError(Status.INVALID_ARGUMENT, `invalid gRPC frame flag ${flag}`);
    if (size > this.maxMessageSize) {
      throw new FrameError(
        Status.RESOURCE_EXHAUSTED,
        `message of ${size} bytes exceeds the maximum message size of ${this.maxMessageSize} bytes`,
      );
    }
    return size;
  }
}

const EMPTY = Buffer.alloc(0);
