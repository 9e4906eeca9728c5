// Regression tests for the bugs of the code review (reproductions in /tmp/review/*.mts): each
// test asserts the fixed behaviour and failed before the fix. Nodes run in this process so their
// links, table, stats and memory can be read directly; misbehaving peers are raw node:http2
// clients (or a raw TCP socket) writing gRPC frames by hand.

import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { startInProcessNode, useCleanups } from './support/in-process-node.js';
import net from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import { SlimApp, type ReceivedMessage, type SlimAppOptions } from '../client/slim-app.js';
import { Link } from '../node/link.js';
import { SlimNode } from '../node/node.js';
import { TargetSet } from '../node/subscription-table.js';
import {
  ErrorCode,
  Kind,
  LinkKind,
  OPEN_CHANNEL_PATH,
  PROTOCOL_VERSION,
  decodeMessage,
  encodeMessage,
  type Message,
  type Name,
} from '../proto/dataplane.js';
import { DEFAULT_LIMITS, type Channel } from '../transport/channel.js';
import { FrameParser } from '../transport/frame-parser.js';
import { Status } from '../transport/grpc-status.js';
import { HTTP2_SETTINGS } from '../transport/http2-tuning.js';
import { DataPlaneServer } from '../transport/server.js';
import { eventually } from './support/local-nodes.js';

// -- fixture helpers ---------------------------------------------------------------------------

const cleanups = useCleanups();


const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function name(text: string): Name {
  const [org = '', namespace = '', service = '', instance = ''] = text.split('/');
  return { org, namespace, service, instance };
}

function frame(m: Message): Buffer {
  const body = encodeMessage(m);
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

function publish(dest: string, payload: Uint8Array | string = '', identity = ''): Message {
  return {
    kind: 'publish',
    publish: {
      header: { destination: name(dest), identity, fanout: 0, ttl: 8, messageId: 1 },
      payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
      contentType: '',
    },
  };
}

interface StartedNode {
  node: SlimNode;
  url: string;
}

/** An in-process node on a free loopback port; `dataplane` adds keys to services.slim/0.dataplane. */
async function startNode(nodeId: string, dataplane: Record<string, unknown> = {}, dial: string[] = []): Promise<StartedNode> {
  const n = await startInProcessNode({ nodeId, dataplane, dial }, cleanups);
  return { node: n.node, url: n.url };
}

async function connectApp(n: StartedNode, appName: string, opts: Partial<SlimAppOptions> = {}): Promise<SlimApp> {
  const app = await SlimApp.connect({ name: appName, slim: n.url, connectTimeoutMs: 3000, subscribeTimeoutMs: 3000, ...opts });
  cleanups.push(() => app.close());
  return app;
}

function appLink(node: SlimNode, prefix: string): Link {
  const l = [...node.links].find((x) => x.appName.startsWith(prefix));
  if (!l) throw new Error(`no app link ${prefix}* on node ${node.cfg.nodeId}`);
  return l;
}

function serverOf(node: SlimNode): DataPlaneServer {
  return (node as unknown as { servers: DataPlaneServer[] }).servers[0]!;
}

function connectSession(url: string): ClientHttp2Session {
  const session = http2.connect(url);
  session.on('error', () => undefined);
  cleanups.push(() => session.destroy());
  return session;
}

interface EndStatus {
  code: number | undefined;
  message: string;
}

/** One OpenChannel stream written by hand. With `read: false` nothing is ever read from it. */
class RawClient {
  readonly session: ClientHttp2Session;
  readonly stream: ClientHttp2Stream;
  readonly received: Message[] = [];
  endStatus: EndStatus | undefined;

  constructor(url: string, opts: { read?: boolean; session?: ClientHttp2Session } = {}) {
    this.session = opts.session ?? connectSession(url);
    this.stream = this.session.request(
      { ':method': 'POST', ':path': OPEN_CHANNEL_PATH, 'content-type': 'application/grpc', te: 'trailers' },
      { endStream: false },
    );
    this.stream.on('error', () => undefined);
    const finish = (h: http2.IncomingHttpHeaders): void => {
      if (this.endStatus) return;
      const code = h['grpc-status'];
      this.endStatus = { code: code === undefined ? undefined : Number(code), message: decodeURIComponent(String(h['grpc-message'] ?? '')) };
      // As a well-behaved gRPC client does once it has the status: finish our side too.
      if (!this.stream.destroyed) this.stream.end();
    };
    this.stream.on('response', (h) => {
      if (h['grpc-status'] !== undefined) finish(h);
    });
    this.stream.on('trailers', (t) => finish(t));
    if (opts.read !== false) {
      const parser = new FrameParser(16 * 1024 * 1024, (buf, start, end) => {
        this.received.push(decodeMessage(buf, start, end));
      });
      this.stream.on('data', (chunk: Buffer) => parser.push(chunk));
    }
  }

  write(bytes: Uint8Array): void {
    if (!this.stream.destroyed && this.stream.writable) this.stream.write(bytes);
  }

  send(m: Message): void {
    this.write(frame(m));
  }

  linkMessage(kind: LinkKind, opts: { app?: string; nodeId?: string; group?: string; linkId?: string } = {}): Message {
    return {
      kind: 'link',
      link: {
        linkId: opts.linkId ?? `raw-${Math.random()}`,
        nodeId: opts.nodeId ?? '',
        group: opts.group ?? 'default',
        kind,
        app: opts.app ? name(opts.app) : undefined,
        protocolVersion: PROTOCOL_VERSION,
      },
    };
  }

  /** Sends a link negotiation and, when this client reads, waits for the node's answer. */
  async negotiate(kind: LinkKind, opts: { app?: string; nodeId?: string; group?: string; linkId?: string } = {}): Promise<void> {
    this.send(this.linkMessage(kind, opts));
    await this.waitFor((m) => m.kind === 'link', 'link answer');
  }

  async waitFor(pred: (m: Message) => boolean, what: string, timeoutMs = 3000): Promise<Message> {
    let found: Message | undefined;
    try {
      await eventually(() => (found = this.received.find(pred)) !== undefined, timeoutMs, what);
    } catch (err) {
      throw new Error(`${(err as Error).message} (stream end: ${JSON.stringify(this.endStatus)})`);
    }
    return found!;
  }
}

// -- 1. paused-close-leak.mts -----------------------------------------------------------------------

/** D never reads, a filler fills the node's queue towards it; S is subscribed to o/n/svc. */
async function pausedSourceFixture(): Promise<{ n: StartedNode; dLink: Link; s: RawClient; sLink: Link; pub: (dest: string) => Buffer }> {
  const queueLimit = 64 * 1024;
  const n = await startNode('n1', { connection_queue_limit: '64KiB' });
  const { node } = n;
  const pub = (dest: string): Buffer => frame(publish(dest, Buffer.alloc(1000)));
  const d = new RawClient(n.url, { read: false });
  d.send(d.linkMessage(LinkKind.App, { app: 'o/n/d/1' }));
  d.send({ kind: 'subscribe', subscribe: { name: name('o/n/d'), subscriptionId: 0 } });
  await eventually(() => node.table.size === 1, 2000, "D's subscription");
  const dLink = appLink(node, 'o/n/d/1');
  const filler = new RawClient(n.url);
  await filler.negotiate(LinkKind.App, { app: 'o/n/filler/1' });
  for (let i = 0; i < 200; i++) filler.write(pub('o/n/d'));
  await eventually(() => dLink.channel.isFull, 3000, "D's queue full");
  await sleep(100);
  // Full but under the hard limit: a publish to D is queued and pauses its sender.
  expect(dLink.channel.backlog).toBeLessThan(4 * queueLimit);
  const s = new RawClient(n.url);
  await s.negotiate(LinkKind.App, { app: 'o/n/s/1' });
  s.send({ kind: 'subscribe', subscribe: { name: name('o/n/svc'), subscriptionId: 5 } });
  await s.waitFor((m) => m.kind === 'subscriptionAck' && m.subscriptionAck.subscriptionId === 5, 'ack');
  return { n, dLink, s, sLink: appLink(node, 'o/n/s/1'), pub };
}

/** The closed S is gone: link, subscription, routing (a publish to o/n/svc finds no route). */
async function expectSourceGone(n: StartedNode, sLink: Link): Promise<void> {
  const { node } = n;
  // Before the fix the close was never reported: the link, its subscription and its buffered
  // bytes stayed forever, and anycast to o/n/svc went to the closed link.
  await eventually(() => !node.links.has(sLink), 2000, 'S link removed after its close');
  expect(sLink.channel.isClosed).toBe(true);
  expect(node.table.hasSubscription(name('o/n/svc'), sLink)).toBe(false);
  expect(node.table.countOf(sLink)).toBe(0);
  const p = new RawClient(n.url);
  await p.negotiate(LinkKind.App, { app: 'o/n/p/1' });
  const closedDrops = node.stats.dropped.get('link_closed') ?? 0;
  p.send(publish('o/n/svc', 'anyone?'));
  const err = await p.waitFor((m) => m.kind === 'error', 'no-route error');
  expect(err.kind === 'error' && err.error.code).toBe(ErrorCode.NoRoute);
  expect(node.stats.dropped.get('link_closed') ?? 0).toBe(closedDrops);
}

describe('a channel closed while paused for backpressure (paused-close-leak)', () => {
  it('is reported closed after a malformed frame: the link and its subscriptions go', async () => {
    const { n, dLink, s, sLink, pub } = await pausedSourceFixture();
    const pauseFor = vi.spyOn(sLink.channel, 'pauseFor');
    // One chunk: a publish to D (pausing S), then a malformed message (the node closes S while
    // it is paused). S half-closes once it has the status, as a well-behaved peer does.
    s.write(Buffer.concat([pub('o/n/d'), Buffer.from([0, 0, 0, 0, 2, 0xff, 0xff])]));
    setImmediate(() => s.write(pub('o/n/d'))); // more DATA, buffered by the paused stream
    setTimeout(() => s.write(pub('o/n/d')), 50).unref();
    await expectSourceGone(n, sLink);
    expect(pauseFor).toHaveBeenCalledWith(dLink.channel); // S really was paused when closed
    expect(s.endStatus?.code).toBe(Status.INVALID_ARGUMENT);
  });

  it('is reported closed whatever made the node close it', async () => {
    const { n, s, sLink, pub } = await pausedSourceFixture();
    s.write(pub('o/n/d'));
    await eventually(() => sLink.channel.isPaused, 2000, 'S paused');
    s.write(pub('o/n/d')); // buffered by the paused stream
    await sleep(50);
    sLink.channel.close(Status.ABORTED, 'closed by the node');
    await expectSourceGone(n, sLink);
    expect(s.endStatus?.code).toBe(Status.ABORTED);
  });
});

// -- 2. noroute-flood.mts -------------------------------------------------------------------------------

describe('an app flooding publishes to an unknown name and never reading (noroute-flood)', () => {
  it('is paused and its error replies are bounded by the hard queue limit', async () => {
    // Small enough that one 16 KiB read of publishes (~560) asks for more replies than the hard limit.
    const queueLimit = 4 * 1024;
    const n = await startNode('n1', { connection_queue_limit: '4KiB' });
    const { node } = n;
    const evil = new RawClient(n.url, { read: false });
    evil.send(evil.linkMessage(LinkKind.App, { app: 'o/n/evil/1' }));
    await eventually(() => node.links.size === 1, 2000, 'evil link');
    const link = [...node.links][0]!;

    const batch = Buffer.concat(Array<Buffer>(1000).fill(frame(publish('o/n/nobody'))));
    for (let i = 0; i < 30; i++) {
      evil.write(batch);
      await sleep(5);
    }
    // Before the fix the node queued one DeliveryError per publish without limit and kept reading.
    await eventually(() => link.channel.isPaused, 3000, 'the node pauses reading the app');
    await eventually(() => (node.stats.dropped.get('queue_full') ?? 0) > 0, 3000, 'error replies dropped as queue_full');
    const paused = await node.registry.getSingleMetric('slim_links_paused')?.get();
    expect(paused?.values[0]?.value).toBe(1);
    // The hard limit is checked before each reply is queued: at most one reply (< 200 bytes) over it.
    const bound = 4 * queueLimit + 200;
    expect(link.channel.backlog).toBeLessThanOrEqual(bound);
    await sleep(300);
    expect(link.channel.backlog).toBeLessThanOrEqual(bound);
    expect(link.channel.isPaused).toBe(true);
  });
});

// -- 3. header-fill.mts / header-alloc.mts ---------------------------------------------------------------

describe('gRPC prefixes announcing large bodies (header-alloc, header-fill)', () => {
  it('do not make the node allocate the announced sizes', async () => {
    const n = await startNode('n1'); // max_message_size 4 MiB
    const server = serverOf(n.node);
    const session = connectSession(n.url);
    const STREAMS = 16;
    const ANNOUNCED = 4 * 1024 * 1024;
    const SENT = 2048;
    const before = process.memoryUsage().arrayBuffers;
    for (let i = 0; i < STREAMS; i++) {
      const st = session.request({ ':method': 'POST', ':path': OPEN_CHANNEL_PATH, 'content-type': 'application/grpc', te: 'trailers' });
      st.on('error', () => undefined);
      const head = Buffer.alloc(5 + SENT, 7);
      head[0] = 0;
      head.writeUInt32BE(ANNOUNCED, 1);
      st.write(head);
    }
    await eventually(
      () => server.channels.size === STREAMS && [...server.channels].every((c) => c.bytesIn >= 5 + SENT),
      3000,
      'every stream received its prefix and first bytes',
    );
    const grown = process.memoryUsage().arrayBuffers - before;
    // Before the fix: one 4 MiB body buffer per stream as soon as the prefix arrived (64 MiB).
    expect(grown).toBeLessThan(8 * 1024 * 1024);
    session.destroy();
  });

  it('limits a session to 16 concurrent streams', async () => {
    const n = await startNode('n1');
    const server = serverOf(n.node);
    const session = connectSession(n.url);
    // A Node client honours the advertised SETTINGS_MAX_CONCURRENT_STREAMS and holds the rest back.
    for (let i = 0; i < 24; i++) {
      const st = session.request({ ':method': 'POST', ':path': OPEN_CHANNEL_PATH, 'content-type': 'application/grpc', te: 'trailers' });
      st.on('error', () => undefined);
      st.write(Buffer.from([0, 0, 0, 0x10, 0]));
    }
    await eventually(() => server.channels.size >= 16, 3000, '16 streams open');
    await sleep(200);
    // Before the fix all 24 were open at once (nothing capped streams per connection).
    expect(server.channels.size).toBe(16);
    expect(HTTP2_SETTINGS.maxConcurrentStreams).toBe(16);
    expect(session.remoteSettings.maxConcurrentStreams).toBe(16);
    session.destroy();
  });
});

// -- 4. identity-spoof.mts ------------------------------------------------------------------------------

describe('a plaintext client negotiating as a node (identity-spoof)', () => {
  it('cannot hand a forged identity to an app', async () => {
    const n = await startNode('n1');
    const r = await connectApp(n, 'o/n/r');
    const got: ReceivedMessage[] = [];
    r.onMessage((m) => got.push(m));
    const forged = 'spiffe://cluster-b.example/ns/default/sa/bob';

    const asNode = new RawClient(n.url);
    await asNode.negotiate(LinkKind.PeerInGroup, { nodeId: 'evil-node', group: 'default' });
    expect([...n.node.links].some((l) => l.peerNodeId === 'evil-node' && l.kind === LinkKind.PeerInGroup)).toBe(true);
    asNode.send(publish('o/n/r', 'as fake node', forged));
    const asApp = new RawClient(n.url);
    await asApp.negotiate(LinkKind.App, { app: 'o/n/x/1' });
    asApp.send(publish('o/n/r', 'as app', forged));

    await eventually(() => got.length === 2, 3000, 'both publishes received');
    const byPayload = new Map(got.map((m) => [m.payload.toString(), m.identity]));
    // Before the fix the fake node's stamp was kept: the app saw bob's identity.
    expect(byPayload.get('as fake node')).toBe('');
    expect(byPayload.get('as app')).toBe('');
  });
});

// -- 5. stale-link-refusal.mts ----------------------------------------------------------------------------

describe('a peer redialling while the node holds its old, silent link (stale-link-refusal)', () => {
  it('replaces the old link instead of refusing the new one as a duplicate', async () => {
    const a = await startNode('a');
    const b = await startNode('b', {}, [a.url]);
    const linksForB = (): Link[] => [...a.node.links].filter((l) => l.peerNodeId === 'b');
    await eventually(() => linksForB().length === 1 && [...b.node.links].some((l) => l.peerNodeId === 'a'), 3000, 'b linked to a');
    const old = linksForB()[0]!;
    expect(old.dialled).toBe(false);

    // Snapshot a's state the moment it takes the new link up (before the real b reacts to the
    // close of its old link by redialling).
    const realLinkUp = a.node.linkUp.bind(a.node);
    let atAccept: { links: Link[]; oldClosed: boolean; oldHeld: boolean } | undefined;
    vi.spyOn(a.node, 'linkUp').mockImplementation((l: Link) => {
      realLinkUp(l);
      if (l.linkId === 'redial-1') atAccept = { links: linksForB(), oldClosed: old.channel.isClosed, oldHeld: a.node.links.has(old) };
    });

    // b's redial over a fresh connection (same node id, same group, same direction).
    const redial = new RawClient(a.url);
    await redial.negotiate(LinkKind.PeerInGroup, { nodeId: 'b', group: 'default', linkId: 'redial-1' });
    // Before the fix a refused it (duplicate_link): it only ever preferred a link it dialled itself.
    expect(atAccept).toBeDefined();
    expect(atAccept!.links.map((l) => l.linkId)).toEqual(['redial-1']);
    expect(atAccept!.oldClosed).toBe(true);
    expect(atAccept!.oldHeld).toBe(false);
    expect(a.node.stats.refusals.get('duplicate_link')).toBeUndefined();

    // The real b, its old link closed, redials in turn: that newer link replaces ours, again
    // without a refusal.
    await eventually(() => redial.endStatus !== undefined, 3000, 'hand-made link replaced');
    expect(redial.endStatus?.code).toBe(Status.ABORTED);
    await eventually(() => linksForB().length === 1 && [...b.node.links].some((l) => l.peerNodeId === 'a'), 3000, 'b linked again');
    expect(linksForB()[0]!.linkId).not.toBe('redial-1');
    expect(a.node.stats.refusals.get('duplicate_link')).toBeUndefined();
  });

  it('server keepalive drops a connection whose peer stops answering PINGs', async () => {
    const handler = { onMessage: (): void => undefined, onClose: (): void => undefined };
    const start = async (keepaliveIntervalMs: number): Promise<number> => {
      const server = new DataPlaneServer({ host: '127.0.0.1', port: 0, limits: DEFAULT_LIMITS, accept: () => handler, keepaliveIntervalMs, keepaliveTimeoutMs: 200 });
      const addr = await server.listen();
      cleanups.push(() => server.close(Status.UNAVAILABLE, 'test over', 100));
      return addr.port;
    };
    // A peer that completes the HTTP/2 preface, then goes silent (never answers a PING).
    const silentPeer = (port: number): { closedAt: () => number | undefined } => {
      let closedAt: number | undefined;
      const sock = net.connect(port, '127.0.0.1', () => {
        sock.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
      });
      sock.on('data', () => undefined); // read and ignore: SETTINGS and PINGs go unanswered
      sock.on('error', () => undefined);
      sock.on('close', () => (closedAt = Date.now()));
      cleanups.push(() => sock.destroy());
      return { closedAt: () => closedAt };
    };
    const [withKeepalive, without] = [await start(200), await start(0)];
    const t0 = Date.now();
    const dropped = silentPeer(withKeepalive);
    const control = silentPeer(without);
    await eventually(() => dropped.closedAt() !== undefined, 2000, 'silent peer dropped by the server keepalive');
    expect(dropped.closedAt()! - t0).toBeGreaterThanOrEqual(300);
    // The same silent peer stays connected to a server without keepalive: the drop was the PING's.
    await sleep(200);
    expect(control.closedAt()).toBeUndefined();
  });
});

// -- 6. sdk-stale-pause.mts ---------------------------------------------------------------------------------

interface SlimAppInternals {
  queue: unknown[];
  queueHead: number;
  receivePaused: boolean;
  channel: Channel | undefined;
}

describe('an app that is not consuming, after a reconnect (sdk-stale-pause)', () => {
  it('still pauses reading once receiveBuffer is exceeded', async () => {
    const n = await startNode('n1');
    const r = await connectApp(n, 'o/n/r', { receiveBuffer: 10 });
    const ri = r as unknown as SlimAppInternals;
    const queued = (): number => ri.queue.length - ri.queueHead;
    const s = await connectApp(n, 'o/n/s');
    for (let i = 0; i < 200; i++) s.publish('o/n/r', 'x');
    await eventually(() => ri.receivePaused && queued() >= 10, 3000, 'receiver paused');

    // The node drops r's connection; r reconnects.
    const reconnected = new Promise<void>((resolve) => r.once('connected', () => resolve()));
    appLink(n.node, 'o/n/r/').channel.stream.session!.destroy();
    await reconnected;
    const before = queued();
    const TOTAL = 10_000;
    for (let k = 0; k < 5; k++) {
      for (let i = 0; i < TOTAL / 5; i++) s.publish('o/n/r', 'x');
      await sleep(20);
    }
    await eventually(() => ri.channel?.stream.isPaused() === true, 3000, 'new stream paused');
    await sleep(300);
    // Before the fix the stale flag kept the new stream reading: all 10 000 were queued.
    expect(queued() - before).toBeLessThan(TOTAL / 2);
    expect(ri.channel?.stream.isPaused()).toBe(true);
  });
});

// -- 7. sdk-handler-throw.mts ----------------------------------------------------------------------------------

describe('an app handler that throws (sdk-handler-throw)', () => {
  it('does not disconnect the app: every message is handled and the throw is reported', async () => {
    const n = await startNode('n1');
    const r = await connectApp(n, 'o/n/r');
    const disconnects: string[] = [];
    const reported: unknown[] = [];
    r.on('disconnected', (why: string) => disconnects.push(why));
    r.on('handlerError', (err: unknown) => reported.push(err));
    let got = 0;
    r.onMessage((m) => {
      got++;
      if (m.payload.toString() === '3') throw new Error('bug in user handler');
    });
    const s = await connectApp(n, 'o/n/s');
    for (let i = 0; i < 100; i++) s.publish('o/n/r', String(i));
    await eventually(() => got === 100, 3000, 'all 100 messages handled');
    expect(r.handlerErrors).toBe(1);
    expect(reported).toHaveLength(1);
    expect((reported[0] as Error).message).toBe('bug in user handler');
    expect(disconnects).toEqual([]);
    expect(r.isReady).toBe(true);

    // A throwing 'deliveryError' listener is the application's problem too.
    s.on('deliveryError', () => {
      throw new Error('bug in deliveryError listener');
    });
    s.publish('o/n/nobody', 'lost');
    await eventually(() => s.handlerErrors === 1, 3000, 'listener throw counted');
    s.publish('o/n/r', 'still connected');
    await eventually(() => got === 101, 3000, 'sender still connected');
  });
});

// -- 8. small-queue-stall.mts -------------------------------------------------------------------------------------

describe('a very small connection_queue_limit (small-queue-stall)', () => {
  it('resumes paused sources: every message arrives', async () => {
    const n = await startNode('n1', { connection_queue_limit: '4KiB' });
    const r = await connectApp(n, 'o/n/r');
    let got = 0;
    r.onMessage(() => got++);
    const s = await connectApp(n, 'o/n/s');
    const sLink = appLink(n.node, 'o/n/s/');
    for (let burst = 1; burst <= 3; burst++) {
      for (let i = 0; i < 20; i++) s.publish('o/n/r', 'x'.repeat(400));
      // Before the fix the source stayed paused for good once the queue towards r filled up.
      await eventually(() => got === 20 * burst, 3000, `burst ${burst} delivered (got ${got})`);
    }
    await eventually(() => !sLink.channel.isPaused, 1000, 'source resumed');
  });
});

// -- 9. sdk-sub-count.mts -----------------------------------------------------------------------------------------

describe('subscribing twice to a name and unsubscribing once (sdk-sub-count)', () => {
  it('leaves the node with no subscription for it', async () => {
    const n = await startNode('n1');
    const r = await connectApp(n, 'o/n/r');
    const got: string[] = [];
    r.onMessage((m) => got.push(m.payload.toString()));
    await r.subscribe('o/n/topic');
    await r.subscribe('o/n/topic');
    await r.unsubscribe('o/n/topic');
    const rLink = appLink(n.node, 'o/n/r/');
    expect(n.node.table.hasSubscription(name('o/n/topic'), rLink)).toBe(false);

    const s = await connectApp(n, 'o/n/s');
    const failures: string[] = [];
    s.on('deliveryError', (e: Error) => failures.push(e.message));
    s.publish('o/n/topic', 'after unsubscribe');
    await eventually(() => failures.length === 1, 3000, 'no-route error');
    expect(failures[0]).toContain('no route');
    expect(got).toEqual([]);
  });
});

// -- 10. minor findings ---------------------------------------------------------------------------------------------

describe('minor review findings', () => {
  it('anycast does not pick a link whose channel is already closing', () => {
    let nextId = 1;
    const fakeLink = (closed: boolean): Link => {
      const channel = { id: nextId++, isClosed: closed, remoteAddress: 'test' } as unknown as Channel;
      return new Link(channel, LinkKind.App, '', '', '', false, `l${nextId}`, 'o/n/svc/x');
    };
    const [from, open, closing] = [fakeLink(false), fakeLink(false), fakeLink(true)];
    const set = new TargetSet();
    set.add(closing);
    set.add(open);
    for (let i = 0; i < 6; i++) expect(set.pickOne(from, from.maxTargetClass)).toBe(open);
    const out: Link[] = [];
    set.collect(from, from.maxTargetClass, out);
    expect(out).toEqual([open]);
    set.remove(open);
    expect(set.pickOne(from, from.maxTargetClass)).toBeUndefined();
  });

  it('a link refused during negotiation does not process the rest of the same read', async () => {
    const n = await startNode('n1');
    const { node } = n;
    const linkUp = vi.spyOn(node, 'linkUp');
    const raw = new RawClient(n.url);
    // One write: a refused negotiation (the node's own id), then more that must be ignored.
    raw.write(
      Buffer.concat([
        frame(raw.linkMessage(LinkKind.PeerInGroup, { nodeId: 'n1' })),
        frame({ kind: 'subscribe', subscribe: { name: name('o/n/a'), subscriptionId: 1 } }),
        frame(raw.linkMessage(LinkKind.App, { app: 'o/n/sneaky/1' })),
        frame({ kind: 'subscribe', subscribe: { name: name('o/n/b'), subscriptionId: 2 } }),
      ]),
    );
    await eventually(() => raw.endStatus !== undefined, 3000, 'refusal');
    expect(raw.endStatus?.code).toBe(Status.FAILED_PRECONDITION);
    await sleep(100);
    expect(Object.fromEntries(node.stats.refusals)).toEqual({ same_node_id: 1 });
    expect(linkUp).not.toHaveBeenCalled();
    expect(node.stats.received[Kind.Subscribe]).toBe(0);
    expect(node.table.size).toBe(0);
    expect(raw.received.filter((m) => m.kind === 'link')).toEqual([]);
  });

  it('refuses a subscription beyond max_subscriptions_per_link with a failed ack naming the limit', async () => {
    const n = await startNode('n1', { max_subscriptions_per_link: 3 });
    const app = await connectApp(n, 'o/n/app'); // its own name is the first subscription
    await app.subscribe('o/n/t1');
    await app.subscribe('o/n/t2');
    await expect(app.subscribe('o/n/t3')).rejects.toThrow(/limit 3/);
    expect(n.node.stats.dropped.get('subscription_limit')).toBe(1);
    const link = appLink(n.node, 'o/n/app/');
    expect(n.node.table.countOf(link)).toBe(3);
    expect(n.node.table.hasSubscription(name('o/n/t3'), link)).toBe(false);
    // The limit is per connection, and freeing a slot lets the next subscription in.
    const other = await connectApp(n, 'o/n/other');
    await other.subscribe('o/n/t3');
    await app.unsubscribe('o/n/t1');
    await app.subscribe('o/n/t3');
    expect(n.node.table.hasSubscription(name('o/n/t3'), link)).toBe(true);
  });
});
