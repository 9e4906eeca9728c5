// Bench worker processes: each mode is one role in a measured chain, started by
// bench/dataplane.ts as its own process. Results go to stdout as one JSON line.
//
//   slim-recv  URL COUNT             count COUNT publishes, report the rate
//   slim-send  URL COUNT SIZE        publish COUNT messages of SIZE bytes as fast as backpressure allows
//   slim-echo  URL                   reply to every message
//   slim-rtt   URL RATE SECONDS SIZE requests at a fixed rate, report RTT percentiles
//   raw-*      the same roles over plain node:http2 with gRPC framing, no routing
//   raw-relay  LISTEN_PORT NEXT_URL  pipe every stream to the next hop, both directions
//   nats-*     the same roles as NATS clients (SERVERS is a nats-server URL); with
//              BENCH_TLS_CERT/KEY/CA set they connect with mutual TLS

import { readFileSync } from 'node:fs';
import type { NatsConnection } from '@nats-io/transport-node';
import http2, { type ClientHttp2Stream, type ServerHttp2Stream } from 'node:http2';
import { SlimApp } from '../client/slim-app.js';
import { FrameParser } from '../transport/frame-parser.js';
import { parseName } from '../proto/dataplane.js';
import { HTTP2_SETTINGS, MAX_SESSION_MEMORY_MB, tuneSession } from '../transport/http2-tuning.js';

const [mode, ...args] = process.argv.slice(2);
const RECEIVER = parseName('bench/ns/receiver');

function out(result: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function latencyResult(rtts: number[], sent: number): Record<string, unknown> {
  rtts.sort((a, b) => a - b);
  return { sent, received: rtts.length, p50: percentile(rtts, 50), p99: percentile(rtts, 99), max: rtts[rtts.length - 1] };
}

/**
 * Calls `send` `total` times at `rate` per second on a fixed schedule (open loop: a slow reply
 * does not delay the next request). Timers are ~1 ms coarse, so each wake-up sends whatever is
 * due; the event loop stays free for replies in between.
 */
async function openLoop(rate: number, total: number, send: () => void): Promise<void> {
  const start = performance.now();
  let i = 0;
  while (i < total) {
    const now = performance.now();
    while (i < total && start + (i * 1000) / rate <= now) {
      send();
      i++;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Request/reply at a fixed rate: two seconds of warm-up at the measured rate (JIT tiers, routes),
 * then `total` measured requests; returns their round-trip times (failed requests have none).
 */
async function measureRequests(rate: number, total: number, request: () => Promise<unknown>): Promise<number[]> {
  const run = async (n: number): Promise<number[]> => {
    const rtts: number[] = [];
    // Count outcomes rather than keep the promises: a kept promise keeps its reply, and the reply
    // its received buffer, and the measuring process's own GC would show up as path latency.
    let settled = 0;
    let allSettled: () => void = () => undefined;
    const done = new Promise<void>((resolve) => (allSettled = resolve));
    const settle = (): void => {
      if (++settled === n) allSettled();
    };
    await openLoop(rate, n, () => {
      const t0 = performance.now();
      request().then(() => {
        rtts.push(performance.now() - t0);
        settle();
      }, settle);
    });
    await done;
    return rtts;
  };
  await run(Math.min(total, rate * 2));
  return run(total);
}

// -- SLIM roles -------------------------------------------------------------------------------

async function slimRecv(url: string, count: number): Promise<void> {
  const app = await SlimApp.connect({ name: RECEIVER, slim: url });
  let n = 0;
  let first = 0n;
  app.onMessage(() => {
    if (n === 0) first = process.hrtime.bigint();
    if (++n === count) {
      const secs = Number(process.hrtime.bigint() - first) / 1e9;
      out({ count: n, seconds: secs, rate: (n - 1) / secs });
      app.close();
      setTimeout(() => process.exit(0), 100);
    }
  });
  out({ ready: true });
}

async function slimSend(url: string, count: number, size: number): Promise<void> {
  const app = await SlimApp.connect({ name: 'bench/ns/sender', slim: url });
  const payload = Buffer.alloc(size, 0x61);
  let sent = 0;
  const started = process.hrtime.bigint();
  while (sent < count) {
    while (app.canSend && sent < count) {
      app.publish(RECEIVER, payload);
      sent++;
      if ((sent & 1023) === 0) break;
    }
    if (app.canSend) await new Promise((r) => setImmediate(r));
    else await app.drained();
  }
  await app.drained();
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  out({ sent, seconds: secs });
  setTimeout(() => process.exit(0), 2000).unref();
}

async function slimEcho(url: string): Promise<void> {
  const app = await SlimApp.connect({ name: RECEIVER, slim: url });
  app.onMessage((m) => app.reply(m, m.payload));
  out({ ready: true });
}

async function slimRtt(url: string, rate: number, seconds: number, size: number): Promise<void> {
  const app = await SlimApp.connect({ name: 'bench/ns/sender', slim: url, requestTimeoutMs: 2000 });
  const payload = Buffer.alloc(size, 0x62);
  const total = Math.round(rate * seconds);
  const rtts = await measureRequests(rate, total, () => app.request(RECEIVER, payload));
  if (process.env.BENCH_TRACE) process.stderr.write(`${JSON.stringify(rtts.map((r) => Math.round(r * 100) / 100))}\n`);
  out(latencyResult(rtts, total));
  app.close();
  setTimeout(() => process.exit(0), 100);
}

// -- raw node:http2 roles ---------------------------------------------------------------------

const PATH = '/bench.Raw/Stream';

// BENCH_TLS_CERT/BENCH_TLS_KEY: the raw chain over TLS, to show what TLS itself costs in Node
// (mutual TLS as the slim path does; the certificates are not verified: handshakes are not timed).
const TLS = process.env['BENCH_TLS_CERT'] && process.env['BENCH_TLS_KEY']
  ? { cert: readFileSync(process.env['BENCH_TLS_CERT']), key: readFileSync(process.env['BENCH_TLS_KEY']) }
  : undefined;

function rawServer(port: number, onStream: (s: ServerHttp2Stream) => void): void {
  const opts = { settings: HTTP2_SETTINGS, maxSessionMemory: MAX_SESSION_MEMORY_MB };
  const server = TLS ? http2.createSecureServer({ ...opts, ...TLS, requestCert: true, rejectUnauthorized: false }) : http2.createServer(opts);
  server.on('session', tuneSession);
  server.on('stream', (s) => {
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    onStream(s);
  });
  server.listen(port, '127.0.0.1', () => out({ ready: true }));
}

function rawConnect(url: string): ClientHttp2Stream {
  const session = http2.connect(TLS ? url.replace('http:', 'https:') : url, {
    settings: HTTP2_SETTINGS,
    maxSessionMemory: MAX_SESSION_MEMORY_MB,
    ...(TLS ? { ...TLS, rejectUnauthorized: false } : {}),
  });
  tuneSession(session);
  return session.request({ ':method': 'POST', ':path': PATH, 'content-type': 'application/grpc' });
}

/** Splits a gRPC-framed byte stream into messages, with the same parser the nodes use. */
function frameCounter(onMessage: (buf: Buffer, start: number, end: number) => void): (chunk: Buffer) => void {
  const parser = new FrameParser(64 * 1024 * 1024, onMessage);
  return (chunk) => parser.push(chunk);
}

function frame(payload: Buffer): Buffer {
  const f = Buffer.allocUnsafe(5 + payload.length);
  f[0] = 0;
  f.writeUInt32BE(payload.length, 1);
  payload.copy(f, 5);
  return f;
}

function rawRecv(port: number, count: number): void {
  rawServer(port, (s) => {
    let n = 0;
    let first = 0n;
    s.on(
      'data',
      frameCounter(() => {
        if (n === 0) first = process.hrtime.bigint();
        if (++n === count) {
          const secs = Number(process.hrtime.bigint() - first) / 1e9;
          out({ count: n, seconds: secs, rate: (n - 1) / secs });
          setTimeout(() => process.exit(0), 100);
        }
      }),
    );
  });
}

async function rawSend(url: string, count: number, size: number): Promise<void> {
  const stream = rawConnect(url);
  const one = frame(Buffer.alloc(size, 0x61));
  const perBatch = Math.max(1, Math.floor((64 * 1024) / one.length));
  const batch = Buffer.concat(Array.from({ length: perBatch }, () => one));
  let sent = 0;
  const started = process.hrtime.bigint();
  while (sent < count) {
    const n = Math.min(perBatch, count - sent);
    const ok = stream.write(n === perBatch ? batch : batch.subarray(0, n * one.length));
    sent += n;
    if (!ok) await new Promise((r) => stream.once('drain', r));
    else if ((sent & 4095) < perBatch) await new Promise((r) => setImmediate(r));
  }
  out({ sent, seconds: Number(process.hrtime.bigint() - started) / 1e9 });
  setTimeout(() => process.exit(0), 2000).unref();
}

function rawEcho(port: number): void {
  rawServer(port, (s) => s.on('data', (chunk: Buffer) => s.write(chunk)));
}

async function rawRtt(url: string, rate: number, seconds: number, size: number): Promise<void> {
  const stream = rawConnect(url);
  const sentAt = new Map<number, number>();
  const rtts: number[] = [];
  stream.on(
    'data',
    frameCounter((buf, start) => {
      const seq = buf.readUInt32BE(start);
      const t0 = sentAt.get(seq);
      if (t0 !== undefined) {
        rtts.push(performance.now() - t0);
        sentAt.delete(seq);
      }
    }),
  );
  const payload = Buffer.alloc(Math.max(size, 4), 0x62);
  const send = (seq: number): void => {
    payload.writeUInt32BE(seq, 0);
    sentAt.set(seq, performance.now());
    stream.write(frame(payload));
  };
  const total = Math.round(rate * seconds);
  // Same warm-up as slim-rtt: two seconds at the measured rate, not counted.
  let seq = 1_000_000;
  await openLoop(rate, Math.min(total, rate * 2), () => send(seq++));
  await new Promise((r) => setTimeout(r, 200));
  rtts.length = 0;
  seq = 0;
  await openLoop(rate, total, () => send(seq++));
  await new Promise((r) => setTimeout(r, 500));
  out(latencyResult(rtts, total));
  process.exit(0);
}

function rawRelay(port: number, next: string): void {
  rawServer(port, (inbound) => {
    const outbound = rawConnect(next);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
}

// -- NATS roles (DESIGN §7: the same path through two NATS servers joined by a gateway) --------

const NATS_SUBJECT = 'bench.receiver';
const NATS_PROBE = 'bench.probe';

async function natsConnect(servers: string): Promise<NatsConnection> {
  const { connect } = await import('@nats-io/transport-node');
  const ca = process.env['BENCH_TLS_CA'];
  return connect({
    servers,
    // A slow-consumer drop on the path would look like throughput; let the buffers be large.
    maxPingOut: 10,
    ...(TLS && ca ? { tls: { cert: TLS.cert.toString(), key: TLS.key.toString(), ca: readFileSync(ca, 'utf8') } } : {}),
  });
}

async function natsRecv(servers: string, count: number): Promise<void> {
  const nc = await natsConnect(servers);
  let n = 0;
  let first = 0n;
  let last = 0n;
  const report = (): void => {
    const secs = Number(last - first) / 1e9;
    // NATS delivers at most once: a consumer that falls behind loses messages (the server cuts
    // it off as a slow consumer) rather than slowing the sender down, so count what arrived.
    out({ count: n, lost: count - n, seconds: secs, rate: n > 1 ? (n - 1) / secs : 0 });
    setTimeout(() => process.exit(0), 100);
  };
  nc.subscribe(NATS_SUBJECT, {
    callback: () => {
      last = process.hrtime.bigint();
      if (n === 0) first = last;
      if (++n === count) report();
    },
  });
  // Nothing for 3 s after traffic started (or a dropped connection): report what arrived.
  setInterval(() => {
    if (n > 0 && Number(process.hrtime.bigint() - last) / 1e9 > 3) report();
  }, 500).unref();
  void nc.closed().then(() => {
    if (n > 0) report();
  });
  nc.subscribe(NATS_PROBE, {
    callback: (_err, msg) => {
      msg.respond(msg.data);
    },
  });
  await nc.flush();
  out({ ready: true });
}

async function natsSend(servers: string, count: number, size: number): Promise<void> {
  const nc = await natsConnect(servers);
  const payload = Buffer.alloc(size, 0x61);
  await natsWaitForRoute(nc, NATS_PROBE);
  const started = process.hrtime.bigint();
  for (let sent = 0; sent < count; ) {
    for (let i = 0; i < 1024 && sent < count; i++, sent++) nc.publish(NATS_SUBJECT, payload);
    // flush() is the client's backpressure: wait for the server to have read what we wrote.
    if ((sent & 16383) === 0) await nc.flush();
    else await new Promise((r) => setImmediate(r));
  }
  await nc.flush();
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  out({ sent: count, seconds: secs });
  setTimeout(() => process.exit(0), 2000).unref();
}

async function natsEcho(servers: string): Promise<void> {
  const nc = await natsConnect(servers);
  nc.subscribe(NATS_SUBJECT, {
    callback: (_err, msg) => {
      msg.respond(msg.data);
    },
  });
  await nc.flush();
  out({ ready: true });
}

/** Resolves once a request crosses the gateway to the receiver: its interest has propagated. */
async function natsWaitForRoute(nc: NatsConnection, subject = NATS_SUBJECT): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    try {
      await nc.request(subject, Buffer.from('probe'), { timeout: 500 });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error('no route to the NATS receiver within 15 s');
}

async function natsRtt(servers: string, rate: number, seconds: number, size: number): Promise<void> {
  const nc = await natsConnect(servers);
  await natsWaitForRoute(nc);
  const payload = Buffer.alloc(size, 0x62);
  const total = Math.round(rate * seconds);
  const rtts = await measureRequests(rate, total, () => nc.request(NATS_SUBJECT, payload, { timeout: 2000 }));
  out(latencyResult(rtts, total));
  await nc.close();
  setTimeout(() => process.exit(0), 100);
}

const n = (i: number): number => Number(args[i]);
switch (mode) {
  case 'slim-recv':
    await slimRecv(args[0]!, n(1));
    break;
  case 'slim-send':
    await slimSend(args[0]!, n(1), n(2));
    break;
  case 'slim-echo':
    await slimEcho(args[0]!);
    break;
  case 'slim-rtt':
    await slimRtt(args[0]!, n(1), n(2), n(3));
    break;
  case 'raw-recv':
    rawRecv(n(0), n(1));
    break;
  case 'raw-send':
    await rawSend(args[0]!, n(1), n(2));
    break;
  case 'raw-echo':
    rawEcho(n(0));
    break;
  case 'raw-rtt':
    await rawRtt(args[0]!, n(1), n(2), n(3));
    break;
  case 'raw-relay':
    rawRelay(n(0), args[1]!);
    break;
  case 'nats-recv':
    await natsRecv(args[0]!, n(1));
    break;
  case 'nats-send':
    await natsSend(args[0]!, n(1), n(2));
    break;
  case 'nats-echo':
    await natsEcho(args[0]!);
    break;
  case 'nats-rtt':
    await natsRtt(args[0]!, n(1), n(2), n(3));
    break;
  default:
    process.stderr.write(`unknown bench worker mode ${mode}\n`);
    process.exit(2);
}
