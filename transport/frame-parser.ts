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
  /** Size of the message being reassembled, -1 when none. */
  private bodySize = -1;
  // Pieces of a message split across chunks, kept as received: memory follows what the peer
  // actually sent (bounded by HTTP/2 flow control), not what its 5-byte prefix announced.
  private pieces: Buffer[] = [];
  private piecesLen = 0;

  constructor(
    private readonly maxMessageSize: number,
    private readonly sink: MessageSink,
  ) {}

  /** True when no partial message is buffered (the stream may end cleanly here). */
  get idle(): boolean {
    return this.headerFill === 0 && this.bodySize < 0;
  }

  /** Feeds one chunk; throws FrameError on a frame the protocol does not allow. */
  push(chunk: Buffer): void {
    const len = chunk.length;
    let pos = 0;
    while (pos < len) {
      if (this.bodySize >= 0) {
        const n = Math.min(this.bodySize - this.piecesLen, len - pos);
        this.pieces.push(chunk.subarray(pos, pos + n));
        this.piecesLen += n;
        pos += n;
        if (this.piecesLen === this.bodySize) {
          const done = this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces, this.bodySize);
          this.pieces = [];
          this.piecesLen = 0;
          this.bodySize = -1;
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
          this.bodySize = size;
          this.pieces.push(chunk.subarray(start, len));
          this.piecesLen = len - start;
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
        else this.bodySize = size;
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
