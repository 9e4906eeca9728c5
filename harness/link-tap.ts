// A plaintext HTTP/2 relay to put between two slim-node processes in tests: the dialling node is
// given the tap's URL instead of its peer's. Unlike TcpBalancer it does not pass bytes through:
// it splits both directions into gRPC messages, so a test can lose a share of the Publish
// messages on purpose (how a lossy link looks to the layers above the transport) and can see
// every message body a node put on the wire (to prove some plaintext never leaves a node).
//
// Only Publish messages are ever dropped. Link negotiation, subscriptions and their acks are what
// keep a link and its routes alive; losing those would test a failure HTTP/2 never produces
// (a reliable stream does not lose messages on its own), not the loss the test asked for.

import http2, {
  constants as h2,
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type ClientSessionOptions,
  type Http2Server,
  type Http2Stream,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { DecodeError, Kind, RouteView, scanMessage } from '../proto/dataplane.js';
import { FrameError, FrameParser } from '../transport/frame-parser.js';
import { Status, statusTrailers } from '../transport/grpc-status.js';
import { HTTP2_SETTINGS, MAX_SESSION_MEMORY_MB, tuneSession } from '../transport/http2-tuning.js';

export type TapDirection = 'toUpstream' | 'toDownstream';

export interface LinkTapOptions {
  /** http://host:port of the node being dialled. */
  upstream: string;
  host?: string;
  /** 0 (the default): any free port. */
  port?: number;
  /** Share of Publish messages dropped, 0..1 (default 0). */
  dropRate?: number;
  /** Which direction loses messages (default both). */
  dropDirection?: 'both' | TapDirection;
  /**
   * PRNG seed (default 1). toUpstream draws from mulberry32(seed), toDownstream from
   * mulberry32(seed ^ 0x9e3779b9), one draw per Publish that may be dropped: a direction's
   * choices do not depend on how the other direction's traffic interleaves with it.
   */
  seed?: number;
  /** Keep every forwarded message body for captured() (default false: memory grows with traffic). */
  capture?: boolean;
  /** Largest message accepted (default 64 MiB: above any node's limit, so the node decides). */
  maxMessageSize?: number;
}

export interface DirectionCounters {
  /** Publish messages passed on. */
  forwarded: number;
  /** Publish messages dropped. */
  dropped: number;
  /** Every other message (link negotiation, subscribe, acks, delivery errors), always passed on. */
  control: number;
}

export interface LinkTap {
  /** http://host:port to give the dialling node instead of the upstream. */
  readonly url: string;
  /** Dialling node → dialled node. */
  readonly toUpstream: Readonly<DirectionCounters>;
  /** Dialled node → dialling node. */
  readonly toDownstream: Readonly<DirectionCounters>;
  /** Publish messages forwarded, both directions. */
  readonly forwarded: number;
  /** Publish messages dropped, both directions. */
  readonly dropped: number;
  readonly dropRate: number;
  /** Takes effect from the next message on. */
  setDropRate(rate: number): void;
  /**
   * Each forwarded message body (without the 5-byte gRPC prefix), both directions, in forwarding
   * order; empty unless the tap was started with `capture: true`.
   */
  captured(): Buffer[];
  capturedBytes(): Buffer;
  /** Drops every connection (both nodes see their link go down) and stops listening. */
  close(): Promise<void>;
}

/** A small seeded PRNG: floats in [0, 1), the same sequence for the same seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const DOWNSTREAM_SEED_MIX = 0x9e3779b9;

// Connection-specific headers must not be copied onto another HTTP/2 connection (RFC 9113
// §8.2.2), and host / :authority name the tap, not the upstream.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host']);

function endToEndHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (k.startsWith(':') || HOP_BY_HOP.has(k) || v === undefined) continue;
    out[k] = v;
  }
  return out;
}

function checkRate(rate: number): number {
  if (!(rate >= 0 && rate <= 1)) throw new RangeError(`dropRate must be within 0..1, got ${rate}`);
  return rate;
}

const noop = (): void => undefined;

class Tap implements LinkTap {
  url = '';
  readonly toUpstream: DirectionCounters = { forwarded: 0, dropped: 0, control: 0 };
  readonly toDownstream: DirectionCounters = { forwarded: 0, dropped: 0, control: 0 };
  private rate: number;
  private readonly random: Record<TapDirection, () => number>;
  private readonly capturing: boolean;
  private readonly capture: Buffer[] = [];
  private readonly view = new RouteView();
  private readonly server: Http2Server;
  private readonly sessions = new Set<ServerHttp2Session | ClientHttp2Session>();
  private closing: Promise<void> | undefined;

  constructor(private readonly opts: LinkTapOptions) {
    this.rate = checkRate(opts.dropRate ?? 0);
    const seed = opts.seed ?? 1;
    this.random = { toUpstream: mulberry32(seed), toDownstream: mulberry32(seed ^ DOWNSTREAM_SEED_MIX) };
    this.capturing = opts.capture ?? false;
    // The nodes' own window and frame settings: with nghttp2's 64 KiB defaults the tap, not the
    // nodes, would set the link's throughput.
    this.server = http2.createServer({ settings: HTTP2_SETTINGS, maxSessionMemory: MAX_SESSION_MEMORY_MB });
    // An http2 session's socket proxy refuses setNoDelay; only the raw socket takes it.
    this.server.on('connection', (socket: Socket) => socket.setNoDelay(true));
    this.server.on('session', (session) => this.onSession(session));
  }

  get forwarded(): number {
    return this.toUpstream.forwarded + this.toDownstream.forwarded;
  }

  get dropped(): number {
    return this.toUpstream.dropped + this.toDownstream.dropped;
  }

  get dropRate(): number {
    return this.rate;
  }

  setDropRate(rate: number): void {
    this.rate = checkRate(rate);
  }

  captured(): Buffer[] {
    return [...this.capture];
  }

  capturedBytes(): Buffer {
    return Buffer.concat(this.capture);
  }

  listen(): Promise<void> {
    const host = this.opts.host ?? '127.0.0.1';
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port ?? 0, host, () => {
        this.server.off('error', reject);
        const { port } = this.server.address() as AddressInfo;
        this.url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
        resolve();
      });
    });
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      // Destroyed, not closed gracefully: a tap going away stands for a link that breaks, and a
      // GOAWAY would let the nodes finish their streams first (a node-side stream lives as long
      // as its link, so close() would wait for as long as the test runs).
      for (const s of this.sessions) s.destroy();
      this.sessions.clear();
    });
    return this.closing;
  }

  /** One upstream connection per downstream one, so each dialling session maps onto its own. */
  private onSession(down: ServerHttp2Session): void {
    if (this.closing) {
      down.destroy();
      return;
    }
    tuneSession(down);
    // noDelay reaches socket.connect; the session's socket proxy refuses setNoDelay later.
    const options: ClientSessionOptions & { noDelay: boolean } = { settings: HTTP2_SETTINGS, maxSessionMemory: MAX_SESSION_MEMORY_MB, noDelay: true };
    const up = http2.connect(this.opts.upstream, options);
    tuneSession(up);
    this.sessions.add(down);
    this.sessions.add(up);
    // Failures reach the streams as 'error' / 'close' and are answered there.
    down.on('error', noop);
    up.on('error', noop);
    down.on('close', () => {
      this.sessions.delete(down);
      up.destroy();
    });
    up.on('close', () => {
      this.sessions.delete(up);
      // Gracefully, so each downstream stream first gets the status its relay gives it.
      if (!down.destroyed && !down.closed) down.close();
      setTimeout(() => down.destroyed || down.destroy(), 1000).unref();
    });
    down.on('stream', (stream, headers) => this.relay(stream, headers, up));
  }

  private relay(down: ServerHttp2Stream, headers: IncomingHttpHeaders, upSession: ClientHttp2Session): void {
    down.on('error', noop);
    let up: ClientHttp2Stream;
    try {
      up = upSession.request(
        { ...endToEndHeaders(headers), ':method': headers[':method'] ?? 'POST', ':path': headers[':path'] ?? '/' },
        { endStream: false },
      );
    } catch (err) {
      // The upstream session is already going away (GOAWAY received, or destroyed).
      down.respond(
        { ':status': 200, 'content-type': 'application/grpc', ...statusTrailers(Status.UNAVAILABLE, `link tap: upstream unavailable: ${(err as Error).message}`) },
        { endStream: true },
      );
      return;
    }
    let upError: Error | undefined;
    up.on('error', (err: Error) => (upError ??= err));

    let trailers: OutgoingHttpHeaders | undefined;
    let responseEnded = false;
    let failed = false;

    const fail = (code: Status, reason: string): void => {
      if (failed) return;
      failed = true;
      if (!up.destroyed) up.close(h2.NGHTTP2_CANCEL);
      if (down.destroyed || responseEnded) return;
      responseEnded = true;
      if (!down.headersSent) {
        down.respond({ ':status': 200, 'content-type': 'application/grpc', ...statusTrailers(code, reason) }, { endStream: true });
      } else {
        trailers = statusTrailers(code, reason);
        down.end();
      }
    };

    this.pump('toUpstream', down, up, fail);
    this.pump('toDownstream', up, down, fail);

    down.on('end', () => {
      if (!failed && !up.destroyed) up.end();
    });
    down.on('close', () => {
      // The dialling side reset the stream or its connection went away: the upstream node must
      // see its stream end too, or its side of the link would stay up.
      if (up.destroyed || up.closed) return;
      const rst = down.rstCode;
      up.close(rst !== undefined && rst !== h2.NGHTTP2_NO_ERROR ? rst : h2.NGHTTP2_CANCEL);
    });

    up.on('response', (resHeaders, flags) => {
      if (failed || down.destroyed) return;
      const out: OutgoingHttpHeaders = { ...endToEndHeaders(resHeaders), ':status': resHeaders[':status'] ?? 200 };
      if ((flags & h2.NGHTTP2_FLAG_END_STREAM) !== 0) {
        // Trailers-only response: the status is in these headers and nothing follows.
        responseEnded = true;
        down.respond(out, { endStream: true });
        return;
      }
      down.respond(out, { waitForTrailers: true });
      down.once('wantTrailers', () => {
        // A gRPC response without trailers carries no status; say so rather than invent an OK.
        down.sendTrailers(trailers ?? statusTrailers(Status.UNKNOWN, 'link tap: upstream ended the stream without trailers'));
      });
    });
    up.on('trailers', (t) => {
      if (!failed) trailers = endToEndHeaders(t);
    });
    up.on('end', () => {
      if (failed || responseEnded || down.destroyed || !down.headersSent) return;
      responseEnded = true;
      down.end();
    });
    up.on('close', () => {
      if (failed || responseEnded || down.destroyed || down.closed) return;
      // The upstream stream ended without a response end: reset, connection lost or refused.
      responseEnded = true;
      const rst = up.rstCode;
      if (!down.headersSent) {
        const why = upError ? (upError.cause instanceof Error ? upError.cause.message : upError.message) : `stream reset (code ${rst})`;
        down.respond(
          { ':status': 200, 'content-type': 'application/grpc', ...statusTrailers(Status.UNAVAILABLE, `link tap: upstream ${this.opts.upstream}: ${why}`) },
          { endStream: true },
        );
      } else {
        down.close(rst !== undefined && rst !== h2.NGHTTP2_NO_ERROR ? rst : h2.NGHTTP2_INTERNAL_ERROR);
      }
    });
  }

  /**
   * Parses `src`'s DATA into messages and writes the ones kept to `dst`, re-framed, one write per
   * chunk read. Reading `src` pauses while `dst` has more queued than its high-water mark, so a
   * slow reader on one side holds the other side back through HTTP/2 flow control instead of
   * piling up in the tap.
   */
  private pump(dir: TapDirection, src: Http2Stream, dst: Http2Stream, fail: (code: Status, reason: string) => void): void {
    const counters = this[dir];
    const kept: Buffer[] = [];
    let keptBytes = 0;
    const parser = new FrameParser(this.opts.maxMessageSize ?? 64 * 1024 * 1024, (buf, start, end) => {
      if (this.decide(dir, buf, start, end, counters)) {
        kept.push(buf.subarray(start, end));
        keptBytes += end - start;
      }
    });
    let waitingForDrain = false;
    src.on('data', (chunk: Buffer) => {
      if (dst.destroyed || dst.writableEnded) return;
      try {
        parser.push(chunk);
      } catch (err) {
        kept.length = 0;
        keptBytes = 0;
        if (err instanceof FrameError) fail(err.code, `link tap (${dir}): ${err.message}`);
        else fail(Status.INTERNAL, `link tap (${dir}): ${(err as Error).message}`);
        return;
      }
      if (kept.length === 0) return;
      const out = Buffer.allocUnsafe(keptBytes + 5 * kept.length);
      let pos = 0;
      for (const body of kept) {
        out[pos] = 0;
        out.writeUInt32BE(body.length, pos + 1);
        body.copy(out, pos + 5);
        // A view into `out`, which is exactly what went on the wire: capturing costs no copy and
        // does not keep the (up to 256 KiB) received chunk alive.
        if (this.capturing) this.capture.push(out.subarray(pos + 5, pos + 5 + body.length));
        pos += 5 + body.length;
      }
      kept.length = 0;
      keptBytes = 0;
      if (!dst.write(out) && !waitingForDrain) {
        waitingForDrain = true;
        src.pause();
        dst.once('drain', () => {
          waitingForDrain = false;
          src.resume();
        });
      }
    });
  }

  /** True when the message in buf[start, end) is to be forwarded; counts it either way. */
  private decide(dir: TapDirection, buf: Buffer, start: number, end: number, counters: DirectionCounters): boolean {
    let kind: Kind;
    try {
      scanMessage(buf, start, end, this.view);
      kind = this.view.kind;
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      // Malformed bytes go through untouched: the receiving node's answer to them is what a
      // test with a tap in the path should still see.
      kind = Kind.None;
    }
    if (kind !== Kind.Publish) {
      counters.control++;
      return true;
    }
    const direction = this.opts.dropDirection ?? 'both';
    // A draw only when a drop is possible: a seed's sequence stays tied to the Publish messages
    // that could have been dropped, whatever else crosses the link.
    if (this.rate > 0 && (direction === 'both' || direction === dir) && this.random[dir]() < this.rate) {
      counters.dropped++;
      return false;
    }
    counters.forwarded++;
    return true;
  }
}

/** Starts a tap listening on opts.host:opts.port (127.0.0.1, any port by default) relaying to opts.upstream. */
export async function startLinkTap(opts: LinkTapOptions): Promise<LinkTap> {
  const tap = new Tap(opts);
  await tap.listen();
  return tap;
}
