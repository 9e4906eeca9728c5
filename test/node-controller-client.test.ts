// The node's control channel (node/controller-client.ts) against a small controller played by
// this test: a real grpc-js ControllerService server. Nodes are real SlimNode instances in this
// process on loopback; apps are real SlimApp clients.

import * as grpc from '@grpc/grpc-js';
import { startInProcessNode, useCleanups } from './support/in-process-node.js';
import { Writable } from 'node:stream';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { SlimApp, type ReceivedMessage } from '../client/slim-app.js';
import { spireTls } from '../harness/node-config.js';
import { freePort } from '../harness/processes.js';
import { ConnectionTls } from '../identity/connection-tls.js';
import { serveGrpc, verifyGrpcCall, type GrpcListener } from '../identity/grpc-tls.js';
import { closeSharedSources } from '../identity/x509-source.js';
import { SlimNode } from '../node/node.js';
import {
  controllerServiceDefinition,
  type CommandAckMsg,
  type CommandMsg,
  type ConnectionStateMsg,
  type ControllerMessage,
  type NodeMessage,
  type RegisterMsg,
} from '../proto/controller.js';
import { ErrorCode, Kind } from '../proto/dataplane.js';
import { eventually } from './support/local-nodes.js';
import { scriptedPlane } from './support/scripted-node.js';
import { addControllerService } from '../controller/southbound.js';
import { ControlPlane as NodeControlPlane, type ControlHost } from '../node/controller-client.js';
import { startSpiffeEnv } from './support/spiffe-env.js';

const A = 'cluster-a.example';
const B = 'cluster-b.example';

const cleanups = useCleanups();


// -- the controller, played by the test ------------------------------------------------------------

type ControlStream = grpc.ServerDuplexStream<NodeMessage, ControllerMessage>;

/** One node's control channel as the test controller sees it. */
class Session {
  readonly messages: NodeMessage[] = [];
  register: RegisterMsg | undefined;
  readonly acks: CommandAckMsg[] = [];
  /** The node's local subscriptions: registration plus updates. */
  readonly subscriptions = new Set<string>();
  readonly states = new Map<string, ConnectionStateMsg>();
  /** The node cancelled the call or it ended. */
  closed = false;
  identity = '';
  private nextId = 1;
  private readonly waiting = new Map<number, (a: CommandAckMsg) => void>();

  constructor(readonly stream: ControlStream) {}

  get nodeId(): string {
    return this.register?.node_id ?? '';
  }

  onMessage(m: NodeMessage): void {
    this.messages.push(m);
    if (m.register) {
      this.register = m.register;
      for (const s of m.register.subscriptions) this.subscriptions.add(s);
      for (const st of m.register.connection_states) this.states.set(st.id, st);
    }
    if (m.subscriptions) {
      for (const s of m.subscriptions.added) this.subscriptions.add(s);
      for (const s of m.subscriptions.removed) this.subscriptions.delete(s);
    }
    if (m.connection_status) for (const st of m.connection_status.states) this.states.set(st.id, st);
    // Acks come one by one or, for commands applied in the same turn, batched in order.
    for (const ack of m.ack ? [m.ack] : (m.acks?.acks ?? [])) {
      this.acks.push(ack);
      this.waiting.get(Number(ack.id))?.(ack);
      this.waiting.delete(Number(ack.id));
    }
  }

  /** Sends a command and resolves with its acknowledgement. */
  command(c: Omit<CommandMsg, 'id'>): Promise<CommandAckMsg> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.stream.write({ command: { id, ...c } });
    });
  }
}

interface ControllerOptions {
  port?: number;
  heartbeatMs?: number;
  /** false: never send a heartbeat (a controller that went silent). */
  heartbeats?: boolean;
  /** Reason to refuse the n-th registration (1-based), or undefined to accept it. */
  refuse?: (n: number) => string | undefined;
  /** Serve over SPIFFE mTLS with this TLS instead of plaintext. */
  tls?: ConnectionTls;
}

class TestController {
  readonly sessions: Session[] = [];
  private server: grpc.Server | undefined;
  private listener: GrpcListener | undefined;
  private registrations = 0;
  port = 0;

  constructor(private readonly opts: ControllerOptions = {}) {}

  async start(): Promise<this> {
    const server = new grpc.Server();
    server.addService(controllerServiceDefinition(), { OpenControlChannel: (stream: ControlStream) => this.accept(stream) });
    this.server = server;
    if (this.opts.tls) {
      this.listener = await serveGrpc(this.opts.tls, server, '127.0.0.1', this.opts.port ?? 0);
      this.port = this.listener.port;
    } else {
      this.port = await new Promise<number>((resolve, reject) =>
        server.bindAsync(`127.0.0.1:${this.opts.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
      );
    }
    cleanups.push(() => this.stop());
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Gone at once, as a killed process: every call fails on the node's side. */
  async stop(): Promise<void> {
    this.server?.forceShutdown();
    this.server = undefined;
    await this.listener?.close();
    this.listener = undefined;
  }

  private accept(stream: ControlStream): void {
    const s = new Session(stream);
    this.sessions.push(s);
    if (this.opts.tls) {
      const v = verifyGrpcCall(this.opts.tls, stream);
      s.identity = v.ok ? v.id : '';
    }
    const hb = this.opts.heartbeatMs ?? 1000;
    let timer: NodeJS.Timeout | undefined;
    const end = (): void => {
      s.closed = true;
      clearInterval(timer);
    };
    stream.on('data', (m: NodeMessage) => {
      s.onMessage(m);
      if (!m.register) return;
      const reason = this.opts.refuse?.(++this.registrations);
      if (reason) {
        stream.write({ register_reply: { accepted: false, reason, heartbeat_interval_ms: hb } });
        stream.end();
        return;
      }
      stream.write({ register_reply: { accepted: true, reason: '', heartbeat_interval_ms: hb } });
      if (this.opts.heartbeats !== false) timer = setInterval(() => stream.write({ heartbeat: { sent_at_ms: Date.now() } }), hb);
    });
    stream.on('error', end);
    stream.on('cancelled', end);
    stream.on('end', () => {
      end();
      stream.end();
    });
  }

  /** The newest registered session of node `id`. */
  async session(id: string, after = 0): Promise<Session> {
    let found: Session | undefined;
    await eventually(
      () => (found = this.sessions.slice(after).findLast((s) => s.nodeId === id && !s.closed)) !== undefined,
      10_000,
      `registration of ${id}`,
    );
    return found!;
  }
}

// -- nodes and apps --------------------------------------------------------------------------------

interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

interface TestNode {
  node: SlimNode;
  endpoint: string;
  url: string;
  logs: LogLine[];
}

async function startNode(nodeId: string, group: string, controllers: { endpoint: string; tls?: Record<string, unknown> }[], opts: { dial?: string[]; serverTls?: Record<string, unknown> } = {}): Promise<TestNode> {
  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as LogLine);
      cb();
    },
  });
  const n = await startInProcessNode(
    {
      nodeId,
      group,
      dial: opts.dial,
      serverTls: opts.serverTls,
      metadata: (port) => ({ local_endpoint: `127.0.0.1:${port}`, external_endpoint: `slim.${group}:${port}` }),
      controllers,
      logger: pino({ level: 'debug' }, sink),
    },
    cleanups,
  );
  return { node: n.node, endpoint: n.endpoint, url: n.url, logs };
}

async function app(n: TestNode, name: string, reply = false): Promise<{ app: SlimApp; got: ReceivedMessage[]; name: string }> {
  const a = await SlimApp.connect({ name, slim: n.url, connectTimeoutMs: 3000, subscribeTimeoutMs: 3000, requestTimeoutMs: 5000 });
  cleanups.push(() => a.close());
  const got: ReceivedMessage[] = [];
  a.onMessage((m) => {
    got.push(m);
    if (reply) a.reply(m, `re: ${m.payload.toString()}`);
  });
  return { app: a, got, name: `${a.name.org}/${a.name.namespace}/${a.name.service}/${a.name.instance}` };
}

async function metricsText(n: TestNode): Promise<string> {
  return n.node.registry.metrics();
}

const ok = { success: true, error: '' };

// -- tests -------------------------------------------------------------------------------------------

describe('registration', () => {
  it('carries the node, its endpoints and static connections, and follows its local subscriptions', async () => {
    const ctl = await new TestController().start();
    const n = await startNode('n1', A, [{ endpoint: ctl.url }], { dial: ['http://127.0.0.1:1'] });
    const s = await ctl.session('n1');
    const port = n.endpoint.split(':')[1];
    expect(s.register).toEqual({
      node_id: 'n1',
      group: A,
      endpoints: [{ local_endpoint: n.endpoint, external_endpoint: `slim.${A}:${port}`, tls: false }],
      subscriptions: [],
      connections: [],
      routes: [],
      static_connections: [{ id: 'static/0', endpoint: '127.0.0.1:1', tls: false }],
      connection_states: [],
      version: '0.1.0',
    });
    await eventually(() => n.logs.some((l) => l.msg === 'registered with controller'), 5000, 'registered log line');
    expect(n.logs.find((l) => l.msg === 'registered with controller')).toMatchObject({ controller: ctl.url, heartbeat_interval_ms: 1000 });
    expect(await metricsText(n)).toMatch(new RegExp(`slim_controller_connected\\{controller="${ctl.url}"[^}]*\\} 1`));

    const alice = await app(n, 'org/ns/alice');
    await eventually(() => s.subscriptions.has(alice.name), 5000, 'alice reported');
    const alice2 = await app(n, 'org/ns/alice'); // another instance: its own name
    await eventually(() => s.subscriptions.has(alice2.name), 5000, 'alice2 reported');
    alice.app.close();
    await eventually(() => !s.subscriptions.has(alice.name), 5000, 'alice removed');
    expect([...s.subscriptions]).toEqual([alice2.name]);
    // Every update names the change once: never added twice, never removed before added.
    const updates = s.messages.filter((m) => m.subscriptions).map((m) => m.subscriptions!);
    expect(updates).toEqual([
      { added: [alice.name], removed: [] },
      { added: [alice2.name], removed: [] },
      { added: [], removed: [alice.name] },
    ]);
  });

  it('fails start naming the key when the controller client TLS cannot be set up', async () => {
    const err = await startNode('n1', A, [
      { endpoint: 'https://127.0.0.1:1', tls: { source: { type: 'file', cert: '/nonexistent/tls.crt', key: '/nonexistent/tls.key' }, ca_source: { type: 'file', path: '/nonexistent/ca.pem' } } },
    ]).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).name).toBe('TlsSetupError');
    expect((err as Error).message).toMatch(/^services\.slim\/0\.controller\.clients\[0\]\.tls\.source\.cert: /);
  });

  it('retries after a refused registration', async () => {
    const ctl = await new TestController({ refuse: (n) => (n === 1 ? 'node n1 is not welcome yet' : undefined) }).start();
    const n = await startNode('n1', A, [{ endpoint: ctl.url }]);
    await eventually(() => ctl.sessions.length >= 2 && ctl.sessions[1]!.register !== undefined, 10_000, 'second registration');
    expect(n.logs.find((l) => l.msg === 'controller refused registration')).toMatchObject({ reason: 'node n1 is not welcome yet' });
    await eventually(() => n.logs.some((l) => l.msg === 'registered with controller'), 5000, 'accepted');
  });
});

describe('a fresh control channel', () => {
  it('sends nothing before its registration, even a name that appeared in the same turn', async () => {
    // The real southbound, on a scripted control plane: it refuses a channel whose first
    // message is not a registration.
    const cp = scriptedPlane();
    const server = new grpc.Server();
    addControllerService(server, cp, undefined, 60_000, pino({ level: 'silent' }));
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    cleanups.push(() => {
      cp.stop();
      server.forceShutdown();
    });
    const lines: string[] = [];
    const subs = new Set<string>();
    const host = {
      controlled: { onStatesChanged: undefined, states: () => [] },
      stats: { countIn: () => undefined, controllerCommands: new Map() },
      registration: () => ({
        node_id: 'a0',
        group: 'A',
        endpoints: [{ local_endpoint: '127.0.0.1:9', external_endpoint: '', tls: false }],
        subscriptions: [...subs],
        connections: [],
        routes: [],
        static_connections: [],
        connection_states: [],
      }),
    } as unknown as ControlHost;
    const settings = { url: `http://127.0.0.1:${port}`, host: '127.0.0.1', port, tls: { insecure: true, skipVerify: false }, connectTimeoutMs: 3000, keepaliveIntervalMs: 10_000, keepaliveTimeoutMs: 5000 };
    const ctl = new NodeControlPlane(host, [{ settings, tls: undefined }], pino({ level: 'debug' }, { write: (l: string) => void lines.push(l) }));
    cleanups.push(() => ctl.stop());
    // An app subscribes in the same turn the client connects.
    subs.add('org/ns/alice/1');
    ctl.interestChanged('org/ns/alice/1', true);
    ctl.start();
    await eventually(() => cp.records.get('A/a0')?.status === 'up', 3000, 'registered');
    expect(cp.planner.isSubscribed('A/a0', 'org/ns/alice/1')).toBe(true);
    expect(lines.some((l) => l.includes('must be register') || l.includes('controller unreachable'))).toBe(false);
  });
});

describe('commands', () => {
  it('are applied and acknowledged in order, with reasons; an unreachable endpoint fails its ack and the node keeps serving', async () => {
    const ctl = await new TestController().start();
    const n = await startNode('n1', A, [{ endpoint: ctl.url }]);
    const s = await ctl.session('n1');
    const dead = `127.0.0.1:${await freePort()}`;
    // All sent at once: create_connection waits for its dial, and the rest must wait behind it.
    const results = await Promise.all([
      s.command({ create_connection: { id: 'node/x', endpoint: dead, tls: false, node_id: 'x' } }),
      s.command({ set_route: { name: 'org/ns/alice', connection_id: 'node/x' } }),
      s.command({ set_route: { name: 'org/ns/alice', connection_id: 'node/nowhere' } }),
      s.command({ set_route: { name: 'org/ns', connection_id: 'node/x' } }),
      s.command({ create_connection: { id: 'node/y', endpoint: dead, tls: true, node_id: 'y' } }),
      s.command({ delete_route: { name: 'org/ns/nobody', connection_id: 'node/x' } }),
      s.command({ delete_connection: 'node/nowhere' }),
    ]);
    // Every command acknowledged; a create_connection's ack waits for its dial, so the ones
    // behind it are not held up and may be acknowledged first.
    expect(s.acks.map((a) => a.id).sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(results[0]!.success).toBe(false);
    expect(results[0]!.error).toMatch(new RegExp(`^connection node/x: cannot reach ${dead.replaceAll('.', '\\.')}: .*ECONNREFUSED`));
    expect(results[1]).toMatchObject(ok);
    expect(results[2]).toMatchObject({ success: false, error: 'no connection node/nowhere' });
    expect(results[3]!.error).toMatch(/^invalid route name: name "org\/ns"/);
    expect(results[4]!.error).toContain('services.slim/0.dataplane.servers[0].tls');
    expect(results[5]).toMatchObject(ok);
    expect(results[6]).toMatchObject(ok);
    // The failing connection is kept, retried, and its state reported.
    await eventually(() => s.states.get('node/x')?.state === 'failing', 5000, 'connection_status failing');
    expect(s.states.get('node/x')!.error).toContain(`cannot reach ${dead}`);
    expect(n.node.routesJson()).toEqual([{ name: 'org/ns/alice', connection_id: 'node/x', target: { node_id: 'x' }, link_peer_node_id: null }]);
    const text = await metricsText(n);
    expect(text).toMatch(/slim_controller_commands_total\{action="set_route",result="failure"[^}]*\} 2/);
    expect(text).toMatch(/slim_controller_commands_total\{action="create_connection",result="failure"[^}]*\} 2/);
    expect(text).toMatch(/slim_controlled_connections\{state="failing"[^}]*\} 1/);
    expect(text).toMatch(/slim_controlled_routes\{[^}]*\} 1/);

    // The node keeps serving its apps.
    const alice = await app(n, 'org/ns/alice', true);
    const bob = await app(n, 'org/ns/bob');
    const reply = await bob.app.request(alice.name, 'still there?');
    expect(reply.payload.toString()).toBe('re: still there?');
    // The route towards the unreachable connection does not capture the name: no link, no target.
    const err = await bob.app.request('org/ns/carol', 'anyone?').catch((e: { code?: number }) => e);
    expect((err as { code?: number }).code).toBe(ErrorCode.NoRoute);
  });
});

/**
 * Group A: X (alice) and W. Group B: Z (bob). The controller installs, as DESIGN §4 computes:
 * W → node/x + route alice; Z → group/A (W's endpoint) + route alice. Bob's messages go
 * Z → W → X.
 */
async function twoGroups(ctl: TestController) {
  const c = [{ endpoint: ctl.url }];
  const x = await startNode('x', A, c);
  const w = await startNode('w', A, c);
  const z = await startNode('z', B, c);
  const [sx, sw, sz] = [await ctl.session('x'), await ctl.session('w'), await ctl.session('z')];
  const alice = await app(x, 'org/ns/alice', true);
  const bob = await app(z, 'org/ns/bob');
  await eventually(() => sx.subscriptions.has(alice.name) && sz.subscriptions.has(bob.name), 5000, 'subscriptions reported');
  expect(await sw.command({ create_connection: { id: 'node/x', endpoint: x.endpoint, tls: false, node_id: 'x' } })).toMatchObject(ok);
  expect(await sw.command({ set_route: { name: alice.name, connection_id: 'node/x' } })).toMatchObject(ok);
  expect(await sz.command({ create_connection: { id: `group/${A}`, endpoint: w.endpoint, tls: false, group: A } })).toMatchObject(ok);
  expect(await sz.command({ set_route: { name: alice.name, connection_id: `group/${A}` } })).toMatchObject(ok);
  return { x, w, z, sx, sw, sz, alice, bob };
}

describe('a slow create_connection', () => {
  it('does not hold up the commands behind it', async () => {
    const ctl = await new TestController().start();
    await startNode('n2', A, [{ endpoint: ctl.url }]);
    const s = await ctl.session('n2');
    // Accepts TCP and never answers: the dial neither succeeds nor fails before its timeout.
    const sockets = new Set<Socket>();
    const hole = createServer((sock) => void sockets.add(sock));
    await new Promise<void>((r) => hole.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      for (const sock of sockets) sock.destroy();
      hole.close();
    });
    let slowAcked = false;
    void s.command({ create_connection: { id: 'node/slow', endpoint: `127.0.0.1:${(hole.address() as AddressInfo).port}`, tls: false, node_id: 'slow' } }).then(() => {
      slowAcked = true;
    });
    // Applied behind it (the connection exists), acknowledged without waiting for its link.
    expect(await s.command({ set_route: { name: 'org/ns/alice', connection_id: 'node/slow' } })).toMatchObject(ok);
    expect(slowAcked).toBe(false);
  });
});

describe('controlled routes across groups', () => {
  it('carry app traffic through the group route (Z → W → X), and replies over the reverse group route', async () => {
    const ctl = await new TestController().start();
    const { x, w, z, sx, sz, alice, bob } = await twoGroups(ctl);
    const wReceived = w.node.stats.received[Kind.Publish]!;
    bob.app.publish('org/ns/alice', 'through w');
    await eventually(() => alice.got.length === 1, 5000, 'alice got it');
    expect(alice.got[0]!.payload.toString()).toBe('through w');
    expect(w.node.stats.received[Kind.Publish]! - wReceived).toBe(1);
    // The connection's state went out as it changed (connecting → up).
    await eventually(() => sz.states.get(`group/${A}`)?.state === 'up', 5000, 'connection_status up');
    expect(sz.states.get(`group/${A}`)).toEqual({ id: `group/${A}`, state: 'up', error: '', peer_node_id: 'w', remote_address: w.endpoint });
    expect(z.node.connectionsJson().controlled).toEqual([
      { id: `group/${A}`, endpoint: w.endpoint, tls: false, target: { group: A }, state: 'up', error: '', peer_node_id: 'w', remote_address: w.endpoint },
    ]);
    expect(z.node.routesJson()).toEqual([{ name: alice.name, connection_id: `group/${A}`, target: { group: A }, link_peer_node_id: 'w' }]);

    // Replies: X gets group B's external endpoint (Z) and a route for bob.
    expect(await sx.command({ create_connection: { id: `group/${B}`, endpoint: z.endpoint, tls: false, group: B } })).toMatchObject(ok);
    expect(await sx.command({ set_route: { name: bob.name, connection_id: `group/${B}` } })).toMatchObject(ok);
    const reply = await bob.app.request('org/ns/alice', 'ping');
    expect(reply.payload.toString()).toBe('re: ping');
    expect(x.node.connectionsJson().links.filter((l) => l.kind === 'remote_group').map((l) => [l.peer_node_id, l.dialled])).toEqual([['z', true]]);
  });

  it('keep forwarding while the controller is gone; the nodes re-register with them when it is back', async () => {
    const ctl = await new TestController().start();
    const { w, z, alice, bob } = await twoGroups(ctl);
    const port = ctl.port;
    await ctl.stop();
    await eventually(async () => /slim_controller_connected\{[^}]*\} 0/.test(await metricsText(z)), 5000, 'z notices');
    await eventually(() => z.logs.some((l) => l.msg === 'lost the controller; keeping every connection and route, will reconnect'), 5000, 'lost log');
    bob.app.publish('org/ns/alice', 'no controller');
    await eventually(() => alice.got.some((m) => m.payload.toString() === 'no controller'), 5000, 'delivered without a controller');
    // Unreachable: warned once, then quietly retried.
    await eventually(() => z.logs.some((l) => l.msg === 'controller unreachable; will retry'), 10_000, 'unreachable log');

    const ctl2 = await new TestController({ port }).start();
    const [sw, sz] = [await ctl2.session('w'), await ctl2.session('z')];
    expect(sz.register).toMatchObject({
      node_id: 'z',
      subscriptions: [bob.name],
      connections: [{ id: `group/${A}`, endpoint: w.endpoint, tls: false, group: A }],
      routes: [{ name: alice.name, connection_id: `group/${A}` }],
      connection_states: [{ id: `group/${A}`, state: 'up', error: '', peer_node_id: 'w', remote_address: w.endpoint }],
    });
    expect(sw.register).toMatchObject({
      connections: [{ id: 'node/x', endpoint: expect.any(String), tls: false, node_id: 'x' }],
      routes: [{ name: alice.name, connection_id: 'node/x' }],
      connection_states: [{ id: 'node/x', state: 'up', peer_node_id: 'x' }],
    });
    // The new controller's commands work on what the nodes kept.
    expect(await sz.command({ delete_route: { name: alice.name, connection_id: `group/${A}` } })).toMatchObject(ok);
    const err = await bob.app.request('org/ns/alice', 'route gone').catch((e: { code?: number }) => e);
    expect((err as { code?: number }).code).toBe(ErrorCode.NoRoute);
  });
});

describe('liveness', () => {
  it('reconnects when the controller goes silent for three heartbeat intervals', async () => {
    const ctl = await new TestController({ heartbeatMs: 200, heartbeats: false }).start();
    const n = await startNode('n1', A, [{ endpoint: ctl.url }]);
    const first = await ctl.session('n1');
    const second = await ctl.session('n1', 1);
    expect(second).not.toBe(first);
    await eventually(() => first.closed, 5000, 'first channel closed');
    // The node heartbeated on the first channel until it gave up on it.
    expect(first.messages.filter((m) => m.heartbeat).length).toBeGreaterThan(0);
    expect(n.logs.some((l) => l.level === 40 && l.msg.startsWith('no message from the controller for 3 heartbeat intervals'))).toBe(true);
  });

  it('stays registered while the controller heartbeats', async () => {
    const ctl = await new TestController({ heartbeatMs: 100 }).start();
    const n = await startNode('n1', A, [{ endpoint: ctl.url }]);
    const s = await ctl.session('n1');
    // 20 node heartbeats = 2 s = 6+ silence windows of 300 ms, all on one channel.
    await eventually(() => s.messages.filter((m) => m.heartbeat).length >= 20, 10_000, '20 heartbeats');
    expect(ctl.sessions).toHaveLength(1);
    expect(s.closed).toBe(false);
    expect(n.logs.some((l) => l.msg.startsWith('no message from the controller'))).toBe(false);
  });
});

describe('over SPIFFE mTLS', () => {
  it('registers with its SVID; a node that does not accept the controller trust domain cannot', async () => {
    const env = await startSpiffeEnv({
      ctl: 'spiffe://admin.example/ns/slim/sa/slim-control-plane',
      node: 'spiffe://cluster-a.example/ns/slim/sa/slim',
      other: 'spiffe://cluster-a.example/ns/slim/sa/slim',
    });
    cleanups.push(async () => {
      await env.stop();
      closeSharedSources();
    });
    const tls = await ConnectionTls.create(
      { insecure: false, skipVerify: false, cert: { type: 'spire', socketPath: env.socket['ctl'] }, ca: { type: 'spire', socketPath: env.socket['ctl'], trustDomains: [A] } },
      'test.controller.tls',
      { readyTimeoutMs: 5000 },
    );
    cleanups.push(() => tls!.close());
    const ctl = await new TestController({ tls }).start();
    const endpoint = `https://localhost:${ctl.port}`;
    const n = await startNode('n1', A, [{ endpoint, tls: spireTls(env.socket['node']!, ['admin.example']) }], { serverTls: spireTls(env.socket['node']!) });
    const s = await ctl.session('n1');
    expect(s.identity).toBe('spiffe://cluster-a.example/ns/slim/sa/slim');
    expect(s.register!.endpoints[0]!.tls).toBe(true);
    await eventually(() => n.logs.some((l) => l.msg === 'registered with controller'), 5000, 'registered');

    const other = await startNode('n2', A, [{ endpoint, tls: spireTls(env.socket['other']!, []) }]);
    await eventually(() => other.logs.some((l) => l.msg === 'controller unreachable; will retry'), 10_000, 'n2 refused the controller');
    expect(ctl.sessions.some((x) => x.nodeId === 'n2')).toBe(false);
  });
});
