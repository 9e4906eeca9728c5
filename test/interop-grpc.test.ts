// Interop with the stock gRPC library: our data plane speaks gRPC's wire format directly on
// node:http2, so here @grpc/grpc-js (with @grpc/proto-loader reading proto/dataplane.proto)
// talks to our server, and our dialler (the SlimApp SDK) talks to a grpc-js server.

import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { SlimApp } from '../client/slim-app.js';
import { freePort } from '../harness/processes.js';
import { parseNodeConfig } from '../node/config.js';
import { SlimNode } from '../node/node.js';
import { ErrorCode, LinkKind, OPEN_CHANNEL_PATH, PROTOCOL_VERSION } from '../proto/dataplane.js';

// ---------------------------------------------------------------------------------------------
// The proto as grpc-js sees it

const PROTO_PATH = fileURLToPath(new URL('../proto/dataplane.proto', import.meta.url));
const packageDefinition = protoLoader.loadSync(PROTO_PATH, {
  keepCase: false,
  longs: Number,
  enums: Number,
  defaults: true,
  oneofs: true,
});
const grpcPkg = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  slim: { dataplane: { v1: { DataPlaneService: grpc.ServiceClientConstructor } } };
};
const DataPlaneService = grpcPkg.slim.dataplane.v1.DataPlaneService;

/** A slim.dataplane.v1.Message as decoded by protobufjs through proto-loader (camelCase, Number longs). */
interface PbName {
  org: string;
  namespace: string;
  service: string;
  instance: string;
}
interface PbHeader {
  source?: PbName | null;
  destination?: PbName | null;
  identity: string;
  fanout: number;
  ttl: number;
  messageId: number;
}
interface PbMessage {
  kind?: string;
  subscribe?: { name?: PbName | null; subscriptionId: number } | null;
  unsubscribe?: { name?: PbName | null; subscriptionId: number } | null;
  publish?: { header?: PbHeader | null; payload: Buffer; contentType: string } | null;
  link?: { linkId: string; nodeId: string; group: string; kind: number; app?: PbName | null; protocolVersion: number } | null;
  subscriptionAck?: { subscriptionId: number; success: boolean; error: string } | null;
  error?: { messageId: number; code: number; reason: string; destination?: PbName | null } | null;
  metadata: Record<string, string>;
}
type Call = grpc.ClientDuplexStream<object, PbMessage>;
type ServerCall = grpc.ServerDuplexStream<PbMessage, object>;

function pbName(text: string): PbName {
  const [org = '', namespace = '', service = '', instance = ''] = text.split('/');
  return { org, namespace, service, instance };
}

// ---------------------------------------------------------------------------------------------
// Resources, released after every test

const nodes: SlimNode[] = [];
const clients: grpc.Client[] = [];
const calls: Call[] = [];
const servers: grpc.Server[] = [];
const apps: SlimApp[] = [];

afterEach(async () => {
  for (const a of apps.splice(0)) a.close();
  for (const c of calls.splice(0)) c.cancel();
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) s.forceShutdown();
  await Promise.all(nodes.splice(0).map((n) => n.stop()));
});

async function startNode(): Promise<{ node: SlimNode; port: number }> {
  const port = await freePort();
  const cfg = parseNodeConfig(
    `services:\n  slim/0:\n    node_id: n1\n    group_name: g\n    dataplane:\n      servers:\n        - endpoint: "127.0.0.1:${port}"\n          tls: { insecure: true }\nobservability: { endpoint: "" }\n`,
  );
  const node = new SlimNode(cfg, pino({ level: 'silent' }));
  nodes.push(node);
  await node.start();
  return { node, port };
}

async function eventually(fn: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (fn()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${what} not reached within ${timeoutMs} ms`);
}

/** One grpc-js OpenChannel call, with what it received and how it ended. */
class GrpcChannel {
  private readonly inbox: PbMessage[] = [];
  private waiters: { pred: (m: PbMessage) => boolean; resolve: (m: PbMessage) => void }[] = [];
  readonly status: Promise<grpc.StatusObject>;

  constructor(readonly call: Call) {
    calls.push(call);
    call.on('data', (m: PbMessage) => {
      const w = this.waiters.find((x) => x.pred(m));
      if (w) {
        this.waiters = this.waiters.filter((x) => x !== w);
        w.resolve(m);
      } else this.inbox.push(m);
    });
    // A non-OK status is also emitted as 'error'; the status promise carries it.
    call.on('error', () => undefined);
    this.status = new Promise((resolve) => call.on('status', resolve));
  }

  send(m: object): void {
    this.call.write(m);
  }

  /** The next received message matching `pred` (already received or future). */
  next(pred: (m: PbMessage) => boolean = () => true, timeoutMs = 3000, what = 'message'): Promise<PbMessage> {
    const i = this.inbox.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (m: PbMessage) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`no ${what} within ${timeoutMs} ms; received: ${JSON.stringify(this.inbox)}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  get unread(): PbMessage[] {
    return this.inbox;
  }
}

function grpcClient(port: number): grpc.Client {
  const c = new DataPlaneService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  clients.push(c);
  return c;
}

function openChannel(client: grpc.Client): GrpcChannel {
  return new GrpcChannel((client as unknown as { openChannel(): Call }).openChannel());
}

/** Opens a channel as app `name`, negotiates and subscribes to the name; returns the channel. */
async function grpcApp(port: number, name: string, subscriptionId = 1): Promise<GrpcChannel> {
  const ch = openChannel(grpcClient(port));
  ch.send({ link: { linkId: `link-${name}`, kind: LinkKind.App, app: pbName(name), protocolVersion: PROTOCOL_VERSION } });
  await ch.next((m) => m.kind === 'link', 3000, 'link reply');
  ch.send({ subscribe: { name: pbName(name), subscriptionId } });
  const ack = await ch.next((m) => m.kind === 'subscriptionAck', 3000, 'subscription ack');
  expect(ack.subscriptionAck).toMatchObject({ subscriptionId, success: true });
  return ch;
}

function publishMsg(from: string, to: string, messageId: number, payload: Buffer, metadata: Record<string, string> = {}): object {
  return {
    publish: {
      header: { source: pbName(from), destination: pbName(to), ttl: 8, messageId },
      payload,
      contentType: 'application/octet-stream',
    },
    metadata,
  };
}

// ---------------------------------------------------------------------------------------------

describe('stock grpc-js client -> our data-plane server', () => {
  it('negotiates a link, subscribes with an ack, and gets a delivery error for its own name', async () => {
    const { node, port } = await startNode();
    const ch = openChannel(grpcClient(port));
    const me = 'org/ns/grpcjs/1';
    ch.send({
      link: { linkId: 'x', kind: 1 /* APP */, app: { org: 'org', namespace: 'ns', service: 'grpcjs', instance: '1' }, protocolVersion: 1 },
    });
    const linkReply = await ch.next(() => true, 3000, 'link reply');
    expect(linkReply.kind).toBe('link');
    expect(linkReply.link).toMatchObject({ linkId: 'x', nodeId: 'n1', group: 'g', kind: LinkKind.PeerInGroup, protocolVersion: PROTOCOL_VERSION });
    await eventually(() => node.links.size === 1, 3000, 'link registered on the node');

    ch.send({ subscribe: { name: pbName(me), subscriptionId: 7 } });
    const ack = await ch.next(() => true, 3000, 'subscription ack');
    expect(ack.kind).toBe('subscriptionAck');
    expect(ack.subscriptionAck).toEqual({ subscriptionId: 7, success: true, error: '' });
    expect(node.table.size).toBe(1);

    // Publishing to its own name: the node never routes a message back over the link it came in
    // on (TargetSet.pickOne: "Never `from`"), so the only subscriber being the sender means no
    // route. Delivery with the header intact is checked with a second channel below.
    ch.send(publishMsg(me, me, 42, Buffer.from('to myself')));
    const err = await ch.next(() => true, 3000, 'answer to the self-publish');
    expect(err.kind).toBe('error');
    expect(err.error).toMatchObject({ messageId: 42, code: ErrorCode.NoRoute, destination: pbName(me) });
  });

  it('a second channel of the same app name receives the publish with payload and header intact', async () => {
    const { port } = await startNode();
    const me = 'org/ns/grpcjs/1';
    const rx = await grpcApp(port, me, 7);
    const tx = openChannel(grpcClient(port));
    tx.send({ link: { linkId: 'x2', kind: LinkKind.App, app: pbName(me), protocolVersion: 1 } });
    await tx.next((m) => m.kind === 'link');
    const payload = Buffer.from([0, 1, 2, 250, 251, 255, 10, 13]);
    tx.send(publishMsg(me, me, 42, payload, { k: 'v' }));
    const got = await rx.next((m) => m.kind === 'publish', 3000, 'publish');
    expect(Buffer.compare(got.publish!.payload, payload)).toBe(0);
    expect(got.publish!.contentType).toBe('application/octet-stream');
    expect(got.publish!.header).toEqual({ source: pbName(me), destination: pbName(me), identity: '', fanout: 0, ttl: 8, messageId: 42 });
    expect(got.metadata).toEqual({ k: 'v' });
  });

  it('carries messages between two grpc-js clients through the node', async () => {
    const { port } = await startNode();
    const alice = await grpcApp(port, 'org/ns/alice/1');
    const bob = await grpcApp(port, 'org/ns/bob/1');
    alice.send(publishMsg('org/ns/alice/1', 'org/ns/bob/1', 5, Buffer.from('hello bob'), { 'slim-reply-to': '3' }));
    const atBob = await bob.next((m) => m.kind === 'publish', 3000, 'publish at bob');
    expect(atBob.publish!.payload.toString()).toBe('hello bob');
    expect(atBob.publish!.header).toMatchObject({ source: pbName('org/ns/alice/1'), destination: pbName('org/ns/bob/1'), messageId: 5, ttl: 8 });
    expect(atBob.metadata).toEqual({ 'slim-reply-to': '3' });

    // And back, to the bare service name (anycast), with TTL 0 meaning "node default".
    bob.send({
      publish: { header: { source: pbName('org/ns/bob/1'), destination: pbName('org/ns/alice'), ttl: 0, messageId: 6 }, payload: Buffer.from('hi alice') },
    });
    const atAlice = await alice.next((m) => m.kind === 'publish', 3000, 'publish at alice');
    expect(atAlice.publish!.payload.toString()).toBe('hi alice');
    expect(atAlice.publish!.header).toMatchObject({ messageId: 6, ttl: 8 });
    expect(alice.unread).toEqual([]);
    expect(bob.unread).toEqual([]);
  });

  it('answers a publish to an unknown name with a NO_ROUTE delivery error', async () => {
    const { port } = await startNode();
    const ch = await grpcApp(port, 'org/ns/lonely/1');
    ch.send(publishMsg('org/ns/lonely/1', 'org/ns/nobody', 99, Buffer.from('anyone?')));
    const err = await ch.next(() => true, 3000, 'delivery error');
    expect(err.kind).toBe('error');
    expect(err.error).toMatchObject({ messageId: 99, code: 1, destination: pbName('org/ns/nobody') });
    expect(err.error!.code).toBe(ErrorCode.NoRoute);
    expect(err.error!.reason).toContain('org/ns/nobody');
  });

  it('answers an unknown method with UNIMPLEMENTED', async () => {
    const { port } = await startNode();
    const client = grpcClient(port);
    const call = client.makeBidiStreamRequest(
      '/slim.dataplane.v1.DataPlaneService/Nope',
      (b: Buffer) => b,
      (b: Buffer) => b,
    ) as unknown as Call;
    const ch = new GrpcChannel(call);
    ch.send(Buffer.from([0x22, 0x00]));
    const status = await ch.status;
    expect(status.code).toBe(grpc.status.UNIMPLEMENTED);
    expect(status.details).toContain('DataPlaneService');
    expect(status.details).toContain('Nope');

    // An unknown service too, through a generic client for it.
    const Fake = grpc.makeGenericClientConstructor(
      {
        Open: {
          path: '/fake.v1.Nothing/Open',
          requestStream: true,
          responseStream: true,
          requestSerialize: (b: Buffer) => b,
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      'Nothing',
    );
    const fake = new Fake(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    clients.push(fake);
    const fch = new GrpcChannel((fake as unknown as { Open(): Call }).Open());
    const fstatus = await fch.status;
    expect(fstatus.code).toBe(grpc.status.UNIMPLEMENTED);

    // The real method still works on the same connection.
    const ok = await grpcApp(port, 'org/ns/after/1');
    expect(ok.unread).toEqual([]);
    expect(OPEN_CHANNEL_PATH).toBe('/slim.dataplane.v1.DataPlaneService/OpenChannel');
  });

  // grpc-message is percent-encoded only where the spec says (non-printable bytes and '%').
  it('status details reach a grpc-js client readable (no stray percent-escapes)', async () => {
    const { port } = await startNode();
    const call = grpcClient(port).makeBidiStreamRequest(
      '/slim.dataplane.v1.DataPlaneService/Nope',
      (b: Buffer) => b,
      (b: Buffer) => b,
    ) as unknown as Call;
    const status = await new GrpcChannel(call).status;
    expect(status.code).toBe(grpc.status.UNIMPLEMENTED);
    expect(status.details).toBe('unknown method /slim.dataplane.v1.DataPlaneService/Nope');
  });

  it('ends the call with OK when the grpc-js client half-closes, and drops the link', async () => {
    const { node, port } = await startNode();
    const a = await grpcApp(port, 'org/ns/closer/1');
    const b = await grpcApp(port, 'org/ns/stayer/1');
    expect(node.links.size).toBe(2);
    expect(node.table.size).toBe(2);
    a.call.end();
    const status = await a.status;
    expect(status.code).toBe(grpc.status.OK);
    await eventually(() => node.links.size === 1, 3000, 'link gone from the node');
    expect(node.table.size).toBe(1);
    // The other link is unaffected, and the closed app's name no longer routes.
    b.send(publishMsg('org/ns/stayer/1', 'org/ns/closer/1', 11, Buffer.from('gone?')));
    const err = await b.next(() => true, 3000, 'no-route error');
    expect(err.error).toMatchObject({ messageId: 11, code: ErrorCode.NoRoute });
  });

  it('refuses a channel whose first message is not a link with INVALID_ARGUMENT', async () => {
    const { node, port } = await startNode();
    const ch = openChannel(grpcClient(port));
    ch.send({ subscribe: { name: pbName('org/ns/x'), subscriptionId: 1 } });
    const status = await ch.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toContain('link');
    expect(node.links.size).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------

interface GrpcNode {
  port: number;
  server: grpc.Server;
  calls: ServerCall[];
  received: PbMessage[];
}

/** A minimal node on grpc-js: answers the link, acks subscriptions, echoes every publish back to its source. */
async function startGrpcNode(): Promise<GrpcNode> {
  const server = new grpc.Server();
  servers.push(server);
  const gn: GrpcNode = { port: 0, server, calls: [], received: [] };
  server.addService(DataPlaneService.service, {
    openChannel(call: ServerCall) {
      gn.calls.push(call);
      let linked = false;
      call.on('error', () => undefined);
      call.on('end', () => call.end());
      call.on('data', (m: PbMessage) => {
        gn.received.push(m);
        if (!linked) {
          if (m.kind !== 'link') {
            call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'first message must be a link' });
            return;
          }
          linked = true;
          call.write({ link: { linkId: m.link!.linkId, nodeId: 'grpcjs-node', group: 'g', kind: LinkKind.PeerInGroup, protocolVersion: PROTOCOL_VERSION } });
          return;
        }
        if (m.kind === 'subscribe' && m.subscribe!.subscriptionId) {
          call.write({ subscriptionAck: { subscriptionId: m.subscribe!.subscriptionId, success: true } });
        } else if (m.kind === 'publish') {
          const h = m.publish!.header!;
          call.write({
            publish: {
              header: { source: h.destination, destination: h.source, ttl: 8 },
              payload: Buffer.concat([Buffer.from('echo:'), m.publish!.payload]),
            },
            metadata: { 'slim-reply-to': String(h.messageId) },
          });
        }
      });
    },
  });
  gn.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  return gn;
}

async function sdkApp(port: number, name: string, extra: { reconnect?: boolean } = {}): Promise<SlimApp> {
  const app = await SlimApp.connect({ name, slim: `http://127.0.0.1:${port}`, requestTimeoutMs: 3000, connectTimeoutMs: 3000, ...extra });
  apps.push(app);
  return app;
}

describe('our dialler (SlimApp) -> stock grpc-js server', () => {
  it('negotiates, subscribes and does request/reply', async () => {
    const gn = await startGrpcNode();
    const app = await sdkApp(gn.port, 'org/ns/bob');
    await app.subscribe('org/ns/extra');

    // What our encoder sent, as protobufjs decoded it.
    const [link, ...rest] = gn.received;
    expect(link!.kind).toBe('link');
    expect(link!.link).toMatchObject({ kind: LinkKind.App, nodeId: '', protocolVersion: PROTOCOL_VERSION, app: { ...app.name } });
    expect(link!.link!.linkId).not.toBe('');
    const subs = rest.filter((m) => m.kind === 'subscribe').map((m) => m.subscribe!);
    expect(subs.map((s) => s.name)).toEqual([{ ...app.name }, pbName('org/ns/extra')]);
    expect(subs.every((s) => s.subscriptionId > 0)).toBe(true);

    const reply = await app.request('org/ns/alice', 'hi');
    expect(reply.payload.toString()).toBe('echo:hi');
    expect(reply.destination).toEqual(app.name);
    expect(reply.source).toEqual(pbName('org/ns/alice'));
    const pub = gn.received.find((m) => m.kind === 'publish')!;
    expect(pub.publish!.header).toMatchObject({ source: { ...app.name }, destination: pbName('org/ns/alice'), ttl: 8, fanout: 0, identity: '' });
    expect(pub.publish!.header!.messageId).toBeGreaterThan(0);
    expect(pub.publish!.payload.toString()).toBe('hi');
  });

  it('completes 100 sequential requests with the right replies', async () => {
    const gn = await startGrpcNode();
    const app = await sdkApp(gn.port, 'org/ns/bob');
    for (let i = 0; i < 100; i++) {
      const reply = await app.request('org/ns/alice', `m${i}`);
      expect(reply.payload.toString()).toBe(`echo:m${i}`);
    }
    expect(gn.received.filter((m) => m.kind === 'publish')).toHaveLength(100);
    expect(gn.calls).toHaveLength(1);
  });

  it('reports the status the grpc-js server ends the call with', async () => {
    const gn = await startGrpcNode();
    const app = await sdkApp(gn.port, 'org/ns/bob', { reconnect: false });
    const reason = new Promise<string>((resolve) => app.once('disconnected', resolve));
    gn.calls[0]!.emit('error', { code: grpc.status.PERMISSION_DENIED, details: 'nope' });
    const why = await reason;
    expect(why).toContain('PERMISSION_DENIED');
    expect(why).toContain('nope');
    expect(app.isReady).toBe(false);
  });

  it('reconnects after the grpc-js server ends the call, replaying subscriptions', async () => {
    const gn = await startGrpcNode();
    const app = await sdkApp(gn.port, 'org/ns/bob');
    await app.subscribe('org/ns/extra');
    const reason = new Promise<string>((resolve) => app.once('disconnected', resolve));
    const reconnected = new Promise<void>((resolve) => app.once('connected', () => resolve()));
    gn.calls[0]!.emit('error', { code: grpc.status.PERMISSION_DENIED, details: 'nope' });
    expect(await reason).toContain('PERMISSION_DENIED');
    await reconnected;
    expect(gn.calls).toHaveLength(2);
    const names = gn.received.filter((m) => m.kind === 'subscribe').map((m) => m.subscribe!.name!.service);
    // bob, extra; then after the reconnect extra (replayed) and bob again.
    expect(names.filter((n) => n === 'extra')).toHaveLength(2);
    expect(names.filter((n) => n === 'bob')).toHaveLength(2);
    const reply = await app.request('org/ns/alice', 'again');
    expect(reply.payload.toString()).toBe('echo:again');
  });
});

// ---------------------------------------------------------------------------------------------

describe('large messages', () => {
  it('carries a 1 MiB publish from one grpc-js client to another through the node intact', async () => {
    const { port } = await startNode();
    const rx = await grpcApp(port, 'org/ns/big-rx/1');
    const tx = await grpcApp(port, 'org/ns/big-tx/1');
    const payload = randomBytes(1024 * 1024);
    tx.send(publishMsg('org/ns/big-tx/1', 'org/ns/big-rx/1', 77, payload));
    const got = await rx.next((m) => m.kind === 'publish', 5000, 'large publish');
    expect(got.publish!.payload.length).toBe(payload.length);
    expect(got.publish!.payload.equals(payload)).toBe(true);
    expect(got.publish!.header!.messageId).toBe(77);
    // And a few more back to back, so several large messages share the stream's window.
    for (let i = 0; i < 3; i++) tx.send(publishMsg('org/ns/big-tx/1', 'org/ns/big-rx/1', 100 + i, payload));
    for (let i = 0; i < 3; i++) {
      const m = await rx.next((x) => x.kind === 'publish', 5000, `large publish ${i}`);
      expect(m.publish!.header!.messageId).toBe(100 + i);
      expect(m.publish!.payload.equals(payload)).toBe(true);
    }
  });
});
