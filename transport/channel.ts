// One OpenChannel bidi stream, from either end: gRPC length-prefixed framing over an HTTP/2
// stream, with writes coalesced per event-loop turn and a bounded outgoing queue.
//
// Why not @grpc/grpc-js here: a grpc-js bidi stream writes one message per event-loop turn;
// on the 2-core dev box it carried ~40–58k msgs/s against ~0.6–1.4M msgs/s for node:http2
// with one write per turn holding every message queued in it (figures from DESIGN.md §3; the
// raw relay in `npm run bench` does ~2.4M msgs/s of 100 B here).

import type { Http2Session, Http2Stream, ServerHttp2Stream, ClientHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import { constants as h2 } from 'node:http2';
import { TLSSocket } from 'node:tls';
import { peerRefusal } from './refusal.js';
import { type Message, messageSize, writeMessage, DecodeError } from '../proto/dataplane.js';
import { FrameError, FrameParser, type MessageSink } from './frame-parser.js';
import { Status, type StatusInfo, decodeGrpcMessage, statusTrailers } from './grpc-status.js';

export interface ChannelHandler {
  /** One whole message as buf[start, end). May throw DecodeError: the channel then closes with INVALID_ARGUMENT. */
  onMessage: MessageSink;
  /** Called exactly once, when the stream is gone. */
  onClose(status: StatusInfo): void;
}

export interface ChannelLimits {
  maxMessageSize: number;
  /** Outgoing bytes (unflushed + unsent) above which the channel reports itself full. */
  queueLimit: number;
}

export const DEFAULT_LIMITS: ChannelLimits = { maxMessageSize: 4 * 1024 * 1024, queueLimit: 8 * 1024 * 1024 };

const SLAB_SIZE = 64 * 1024;
let nextChannelId = 1;

export class Channel {
  readonly id = nextChannelId++;
  // Outgoing bytes are written into a slab; each flush hands the socket the slice written since
  // the last flush and later batches continue in the same slab. A fresh buffer per flush cost
  // 64 KiB of external memory per message at low rates, and the GC pauses that followed were
  // 15-20 ms RTT spikes (bench at 1000 req/s: p99 12 ms before, 2.9 ms after).
  private slab: Buffer | null = null;
  private slabPos = 0;
  private batchStart = 0;
  private flushScheduled = false;
  private closed = false;
  private closeReported = false;
  private drainWaiters: (() => void)[] = [];
  private readonly blockers = new Set<Channel>();
  private readonly parser: FrameParser;
  private handler: ChannelHandler;
  private finalStatus: StatusInfo | undefined;
  private readonly session: Http2Session | undefined;
  /** Bytes of messages received / sent, for metrics. */
  bytesIn = 0;
  bytesOut = 0;

  constructor(
    readonly stream: Http2Stream,
    readonly side: 'server' | 'client',
    readonly limits: ChannelLimits,
    handler: ChannelHandler,
  ) {
    this.handler = handler;
    this.session = stream.session;
    this.parser = new FrameParser(limits.maxMessageSize, (buf, start, end) => this.handler.onMessage(buf, start, end));
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('drain', () => this.onDrain());
    stream.on('error', (err: Error & { code?: string; cause?: unknown }) => {
      // A refused or dropped connection cancels its streams; the cause says what happened.
      const cause = err.cause instanceof Error ? err.cause.message : undefined;
      this.finalStatus ??= { code: Status.UNAVAILABLE, details: cause ?? `stream error: ${err.code ?? err.message}` };
    });
    stream.on('close', () => this.onStreamClose());
    if (side === 'server') {
      stream.on('end', () => this.close(Status.OK, 'peer closed the channel'));
    } else {
      const client = stream as ClientHttp2Stream;
      client.on('response', (headers) => this.onResponseHeaders(headers));
      client.on('trailers', (trailers) => this.onTrailers(trailers));
      stream.on('end', () => {
        // Server finished its side; our side closes too so the stream is released.
        if (!this.closed) this.close(Status.OK, '');
      });
    }
  }

  /** Replaces the message/close handler (used once a link has been negotiated). */
  setHandler(handler: ChannelHandler): void {
    this.handler = handler;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get remoteAddress(): string {
    const s = this.stream.session?.socket;
    return s ? `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}` : '?';
  }

  /** The TLS socket under this channel's session; undefined on plaintext. */
  tlsSocket(): TLSSocket | undefined {
    const s = this.stream.session?.socket;
    return s instanceof TLSSocket ? s : undefined;
  }

  // -- writing ---------------------------------------------------------------------------------

  /** Outgoing bytes not yet handed to the socket. */
  get backlog(): number {
    return this.slabPos - this.batchStart + this.stream.writableLength;
  }

  get isFull(): boolean {
    return this.backlog > this.limits.queueLimit;
  }

  /** Reserves `n` bytes in the current batch and returns their offset in `this.slab`. */
  private reserve(n: number): number {
    if (this.slab === null || this.slabPos + n > this.slab.length) {
      this.flush();
      this.slab = Buffer.allocUnsafe(n > SLAB_SIZE ? n : SLAB_SIZE);
      this.slabPos = 0;
      this.batchStart = 0;
    }
    const pos = this.slabPos;
    this.slabPos += n;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushTick);
    }
    return pos;
  }

  private readonly flushTick = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  private flush(): void {
    if (this.slab === null || this.slabPos === this.batchStart) return;
    const batch = this.slab.subarray(this.batchStart, this.slabPos);
    this.batchStart = this.slabPos;
    if (this.closed || this.stream.destroyed) return;
    this.bytesOut += batch.length;
    this.stream.write(batch, this.afterWrite);
  }

  // Drain waiters are checked on every completed write, not only on the stream's 'drain' event:
  // that event follows only a write() that went over the stream's 16 KiB buffer mark, which a
  // small queue limit may never reach.
  private readonly afterWrite = (): void => this.onDrain();

  /** Encodes and queues a message. Returns false when the channel is closed. */
  send(m: Message): boolean {
    if (this.closed) return false;
    const size = messageSize(m);
    const pos = this.reserve(size + 5);
    const out = this.slab!;
    out[pos] = 0;
    out.writeUInt32BE(size, pos + 1);
    writeMessage(out, pos + 5, m);
    return true;
  }

  /**
   * Queues already-encoded message bytes src[start, end), optionally replacing the byte at
   * absolute position `patchPos` of src with `patchByte` in the copy (the forwarder's TTL).
   */
  sendBytes(src: Buffer, start: number, end: number, patchPos = -1, patchByte = 0): boolean {
    if (this.closed) return false;
    const size = end - start;
    const pos = this.reserve(size + 5);
    const out = this.slab!;
    out[pos] = 0;
    out.writeUInt32BE(size, pos + 1);
    src.copy(out, pos + 5, start, end);
    if (patchPos >= 0) out[pos + 5 + patchPos - start] = patchByte;
    return true;
  }

  /** Calls `cb` once the outgoing queue is below half its limit (or the channel closed). */
  whenDrained(cb: () => void): void {
    if (this.closed || !this.isFull) {
      cb();
      return;
    }
    this.drainWaiters.push(cb);
  }

  private onDrain(): void {
    if (this.drainWaiters.length === 0 || this.backlog > this.limits.queueLimit / 2) return;
    this.releaseWaiters();
  }

  private releaseWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  // -- reading ---------------------------------------------------------------------------------

  /** Stops reading this channel until `dest` drains; memory stays bounded under a slow consumer. */
  pauseFor(dest: Channel): void {
    if (this.blockers.has(dest) || this.closed) return;
    this.blockers.add(dest);
    this.stream.pause();
    dest.whenDrained(() => {
      this.blockers.delete(dest);
      if (this.blockers.size === 0 && !this.closed) this.stream.resume();
    });
  }

  get isPaused(): boolean {
    return this.blockers.size > 0;
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    this.bytesIn += chunk.length;
    try {
      this.parser.push(chunk);
    } catch (err) {
      if (err instanceof FrameError) this.close(err.code, err.message);
      else if (err instanceof DecodeError) this.close(Status.INVALID_ARGUMENT, `malformed message: ${err.message}`);
      else this.close(Status.INTERNAL, `internal error: ${(err as Error).message}`);
    }
  }

  private onResponseHeaders(headers: IncomingHttpHeaders): void {
    const status = headers[':status'];
    if (Number(status) !== 200) {
      this.finalStatus = { code: httpToGrpc(Number(status)), details: `HTTP status ${status}` };
      return;
    }
    if (headers['grpc-status'] !== undefined) this.onTrailers(headers); // trailers-only response
  }

  private onTrailers(trailers: IncomingHttpHeaders): void {
    const code = Number(trailers['grpc-status'] ?? Status.UNKNOWN);
    this.finalStatus = { code, details: decodeGrpcMessage(trailers['grpc-message']) };
  }

  // -- closing ---------------------------------------------------------------------------------

  /**
   * Ends the channel with a status. On the server side the status goes to the peer in the
   * trailers; on the client side an OK status half-closes, anything else cancels the stream.
   */
  close(code: Status = Status.OK, details = ''): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.finalStatus ??= { code, details };
    const stream = this.stream;
    if (stream.destroyed) return;
    // A paused stream never delivers its last frames, and Node keeps a stream with unread data
    // open: read (and ignore) what is left so the close is reported.
    this.blockers.clear();
    stream.resume();
    if (this.side === 'server') {
      const server = stream as ServerHttp2Stream;
      const trailers = statusTrailers(code, details);
      if (!server.headersSent) {
        server.respond({ ':status': 200, 'content-type': 'application/grpc', ...trailers }, { endStream: true });
      } else {
        server.once('wantTrailers', () => server.sendTrailers(trailers));
        server.end();
      }
      // A peer that never reads would hold the stream open; give it a moment, then drop it.
      setTimeout(() => stream.destroyed || stream.destroy(), 5000).unref();
    } else if (code === Status.OK) {
      stream.end();
      setTimeout(() => stream.destroyed || stream.destroy(), 5000).unref();
    } else {
      stream.close(h2.NGHTTP2_CANCEL);
    }
    this.releaseWaiters();
  }

  private onStreamClose(): void {
    this.closed = true;
    this.slab = null;
    this.slabPos = this.batchStart = 0;
    this.releaseWaiters();
    if (this.closeReported) return;
    this.closeReported = true;
    // A server that refused our certificate says why in its GOAWAY; that beats "stream error".
    // (The session as it was at open: a destroyed stream no longer points to it.)
    const refusal = this.session ? peerRefusal(this.session) : undefined;
    let status = refusal ? { code: Status.UNAUTHENTICATED, details: refusal } : this.finalStatus;
    if (!status) {
      const rst = this.stream.rstCode;
      status =
        rst && rst !== h2.NGHTTP2_NO_ERROR
          ? { code: rst === h2.NGHTTP2_CANCEL ? Status.CANCELLED : Status.UNAVAILABLE, details: `stream reset (code ${rst})` }
          : { code: Status.UNAVAILABLE, details: 'stream closed without a status' };
    }
    this.handler.onClose(status);
  }
}

/** Maps an HTTP status to a gRPC code as the gRPC HTTP/2 spec prescribes for non-200 replies. */
function httpToGrpc(status: number): Status {
  switch (status) {
    case 400:
      return Status.INTERNAL;
    case 401:
      return Status.UNAUTHENTICATED;
    case 403:
      return Status.PERMISSION_DENIED;
    case 404:
      return Status.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return Status.UNAVAILABLE;
    default:
      return Status.UNKNOWN;
  }
}
