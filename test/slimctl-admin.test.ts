// slimctl's admin commands (nodes, routes, connections, subscriptions, topology [--watch]) as a real
// process against a real grpc-js AdminService serving canned data: table and JSON output, filters
// passed through, the watch printing events and refreshed topologies (and reconnecting when the
// stream breaks), the one-line errors and exit statuses, and SPIFFE mTLS with the dev issuer's
// Workload API on both ends.

import { rmSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../harness/node-config.js';
import { ProcessGroup, freePort, type ManagedProcess } from '../harness/processes.js';
import { ConnectionTls } from '../identity/connection-tls.js';
import { serveGrpc, verifyGrpcCall, type GrpcListener } from '../identity/grpc-tls.js';
import { closeSharedSources } from '../identity/x509-source.js';
import {
  adminServiceDefinition,
  type AdminEvent,
  type ConnectionInfo,
  type GroupInfo,
  type ListRequest,
  type NodeInfo,
  type RouteInfo,
  type SubscriptionInfo,
  type Topology,
} from '../proto/admin.js';
import { makeCa, makeLeaf } from './support/certs.js';
import { startSpiffeEnv, type SpiffeEnv } from './support/spiffe-env.js';

const A = 'cluster-a.example';
const B = 'cluster-b.example';
const CONTROLLER_ID = 'spiffe://admin.example/ns/slim/sa/slim-control-plane';
const ADMIN_ID = 'spiffe://admin.example/ns/ops/sa/slimctl';
const OUTSIDER_ID = 'spiffe://cluster-a.example/ns/default/sa/alice';

// ---------------------------------------------------------------------------------------------
// Canned controller state

function node(id: string, group: string, over: Partial<NodeInfo> = {}): NodeInfo {
  return {
    node_id: id,
    group,
    identity: `spiffe://${group}/ns/slim/sa/slim`,
    endpoints: [{ local_endpoint: `10.${group === A ? 1 : 2}.0.${id.at(-1)}:46357`, external_endpoint: `slim.${group}:46357`, tls: true }],
    status: 'up',
    last_heartbeat_ms: Date.now() - 2000,
    registered_at_ms: Date.now() - 60_000,
    subscriptions: 1,
    connections: 1,
    routes: 1,
    pending_commands: 0,
    last_error: '',
    ...over,
  };
}

class State {
  bDown = false;
  nodes(): NodeInfo[] {
    return [
      node('slim-a-0', A),
      node('slim-a-1', A, { subscriptions: 0, pending_commands: 1 }),
      node('slim-b-0', B, { status: this.bDown ? 'down' : 'up', last_error: 'route org/ns/carol: no connection to cluster-c.example', routes: 2 }),
    ];
  }
  routes(): RouteInfo[] {
    return [
      { node_id: 'slim-b-0', group: B, name: 'org/ns/alice', connection_id: 'conn-b0-a', target: A, state: 'installed', error: '' },
      { node_id: 'slim-b-0', group: B, name: 'org/ns/carol', connection_id: '', target: 'cluster-c.example', state: 'failed', error: 'no connection to cluster-c.example' },
      { node_id: 'slim-a-1', group: A, name: 'org/ns/alice', connection_id: 'conn-a1-a0', target: 'slim-a-0', state: 'pending', error: '' },
    ];
  }
  connections(): ConnectionInfo[] {
    return [
      { node_id: 'slim-b-0', group: B, connection_id: 'conn-b0-a', endpoint: `slim.${A}:46357`, kind: 'external', target: A, state: 'up', error: '', peer_node_id: 'slim-a-0', remote_address: '10.1.0.0:46357', tls: true },
      { node_id: 'slim-a-1', group: A, connection_id: 'conn-a1-a0', endpoint: '10.1.0.0:46357', kind: 'local', target: 'slim-a-0', state: 'connecting', error: '', peer_node_id: '', remote_address: '', tls: true },
      { node_id: 'slim-a-0', group: A, connection_id: 'static-0', endpoint: '10.9.9.9:46357', kind: 'static', target: '', state: 'failing', error: 'connect ECONNREFUSED 10.9.9.9:46357', peer_node_id: '', remote_address: '', tls: false },
    ];
  }
  subscriptions(): SubscriptionInfo[] {
    return [
      { node_id: 'slim-a-0', group: A, name: 'org/ns/alice' },
      { node_id: 'slim-b-0', group: B, name: 'org/ns/bob' },
    ];
  }
  topology(): Topology {
    const nodes = this.nodes();
    const group = (g: string, reaches: string[], up: number, failing: number): GroupInfo => {
      const members = nodes.filter((n) => n.group === g);
      const upCount = members.filter((n) => n.status === 'up').length;
      return {
        group: g,
        health: upCount === 0 ? 'down' : upCount < members.length || failing > 0 ? 'degraded' : 'healthy',
        external_endpoints: [`slim.${g}:46357`],
        nodes: members,
        connections_up: up,
        connections_failing: failing,
        reaches,
      };
    };
    return { groups: [group(A, [], 4, 0), group(B, [A], this.bDown ? 0 : 1, 0)] };
  }
}

const groupOfNode = (nodes: NodeInfo[], id: string): string => nodes.find((n) => n.node_id === id)?.group ?? '';

function filtered<T extends { node_id: string; group?: string }>(rows: T[], req: ListRequest, nodes: NodeInfo[]): T[] {
  return rows.filter((r) => (!req.node_id || r.node_id === req.node_id) && (!req.group || (r.group ?? groupOfNode(nodes, r.node_id)) === req.group));
}

interface FakeController {
  port: number;
  state: State;
  /** Every request, as `Method` and its ListRequest. */
  requests: { method: string; req: ListRequest; caller: string }[];
  watchCalls: number;
  stop(): Promise<void>;
}

interface FakeOptions {
  /** Every call fails with PERMISSION_DENIED. */
  deny?: boolean;
  /** The first Watch stream fails with UNAVAILABLE right after its node_down event. */
  breakFirstWatch?: boolean;
  /** Serve over SPIFFE mTLS with this TLS; only `admin` may call. */
  tls?: ConnectionTls;
  admin?: string;
}

const servers: FakeController[] = [];

async function startFakeController(opts: FakeOptions = {}): Promise<FakeController> {
  const state = new State();
  const server = new grpc.Server();
  const fake: FakeController = { port: 0, state, requests: [], watchCalls: 0, stop: async () => undefined };
  /** Watch streams still owed their node_down event: sent after the next GetTopology answer. */
  const owed: grpc.ServerWritableStream<unknown, AdminEvent>[] = [];
  const open = new Set<grpc.ServerWritableStream<unknown, AdminEvent>>();
  let topologiesServed = 0;
  /** Once the watcher has a stream open and has seen where things stand, slim-b-0 goes down. */
  const emitOwed = (): void =>
    void setImmediate(() => {
      for (const w of owed.splice(0)) {
        state.bDown = true;
        w.write({ at_ms: Date.now(), type: 'node_down', node_id: 'slim-b-0', group: B, detail: 'no heartbeat for 15 s' });
        if (opts.breakFirstWatch) {
          w.emit('error', { code: grpc.status.UNAVAILABLE, details: 'controller restarting' });
          open.delete(w);
        }
      }
    });

  const gate = (method: string, call: grpc.ServerUnaryCall<ListRequest, unknown> | grpc.ServerWritableStream<unknown, AdminEvent>): grpc.ServiceError | undefined => {
    let caller = '';
    if (opts.tls) {
      const v = verifyGrpcCall(opts.tls, call);
      if (!v.ok) return { code: grpc.status.UNAUTHENTICATED, details: v.message } as grpc.ServiceError;
      caller = v.id;
    }
    fake.requests.push({ method, req: { node_id: '', group: '', ...(call.request as Partial<ListRequest>) }, caller });
    if (opts.deny) return { code: grpc.status.PERMISSION_DENIED, details: 'spiffe://cluster-b.example/ns/default/sa/bob is not an admin of this controller' } as grpc.ServiceError;
    if (opts.admin && caller !== opts.admin) return { code: grpc.status.PERMISSION_DENIED, details: `${caller} is not an admin of this controller` } as grpc.ServiceError;
    return undefined;
  };
  const list =
    <T>(method: string, field: string, rows: (req: ListRequest) => T[]) =>
    (call: grpc.ServerUnaryCall<ListRequest, unknown>, cb: grpc.sendUnaryData<unknown>): void => {
      const err = gate(method, call);
      if (err) return cb(err);
      cb(null, { [field]: rows(call.request) });
    };

  server.addService(adminServiceDefinition(), {
    ListNodes: list('ListNodes', 'nodes', (req) => filtered(state.nodes(), req, state.nodes())),
    ListRoutes: list('ListRoutes', 'routes', (req) => filtered(state.routes(), req, state.nodes())),
    ListConnections: list('ListConnections', 'connections', (req) => filtered(state.connections(), req, state.nodes())),
    ListSubscriptions: list('ListSubscriptions', 'subscriptions', (req) => filtered(state.subscriptions(), req, state.nodes())),
    GetTopology: (call: grpc.ServerUnaryCall<ListRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const err = gate('GetTopology', call);
      if (err) return cb(err);
      cb(null, state.topology());
      topologiesServed++;
      emitOwed();
    },
    Watch: (call: grpc.ServerWritableStream<unknown, AdminEvent>) => {
      const err = gate('Watch', call);
      if (err) {
        call.emit('error', err);
        return;
      }
      fake.watchCalls++;
      open.add(call);
      call.on('cancelled', () => open.delete(call));
      if (fake.watchCalls === 1) {
        owed.push(call);
        if (topologiesServed > 0) emitOwed();
      } else call.write({ at_ms: Date.now(), type: 'route_added', node_id: 'slim-a-0', group: A, detail: 'org/ns/alice → slim-a-0' });
    },
  });

  let listener: GrpcListener | undefined;
  if (opts.tls) {
    listener = await serveGrpc(opts.tls, server, '127.0.0.1', 0);
    fake.port = listener.port;
  } else {
    fake.port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
  }
  fake.stop = async () => {
    for (const w of open) w.end();
    await listener?.close();
    server.forceShutdown();
  };
  servers.push(fake);
  return fake;
}

// ---------------------------------------------------------------------------------------------
// Running slimctl

const group = new ProcessGroup();

interface Run {
  code: number | null;
  output: string;
  lines: string[];
}

function spawnSlimctl(args: string[], env: Record<string, string> = {}): ManagedProcess {
  return group.spawn('slimctl', 'slimctl', args, { env: { SPIFFE_ENDPOINT_SOCKET: '', SLIMCTL_SERVER: '', ...env } });
}

async function slimctl(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const p = spawnSlimctl(args, env);
  const { code } = await p.exited;
  return { code, output: p.output, lines: p.lines };
}

let plain: FakeController;
const at = (f: FakeController): string[] => ['--server', `127.0.0.1:${f.port}`];

beforeAll(async () => {
  plain = await startFakeController();
});

afterAll(async () => {
  await group.stopAll();
  for (const s of servers.splice(0)) await s.stop();
});

// ---------------------------------------------------------------------------------------------

describe('slimctl admin commands: tables', () => {
  it('nodes: one row per node with group, status, endpoints, counts, heartbeat age, identity and last error', async () => {
    const r = await slimctl(['nodes', '--insecure', ...at(plain)]);
    expect(r.code, r.output).toBe(0);
    expect(r.lines[0]).toMatch(/^NODE\s+GROUP\s+STATUS\s+LOCAL\s+EXTERNAL\s+SUBS\s+CONNS\s+ROUTES\s+PENDING\s+LAST-HEARTBEAT\s+IDENTITY\s+LAST-ERROR$/);
    expect(r.output).toMatch(/slim-a-0\s+cluster-a\.example\s+up\s+10\.1\.0\.0:46357\s+slim\.cluster-a\.example:46357\s+1\s+1\s+1\s+0\s+\d+s ago\s+spiffe:\/\/cluster-a\.example\/ns\/slim\/sa\/slim\s+-$/m);
    expect(r.output).toMatch(/slim-a-1\s+cluster-a\.example\s+up\s.*\s0\s+1\s+1\s+1\s+\d+s ago/);
    expect(r.output).toMatch(/slim-b-0\s+cluster-b\.example\s+up\s.*\s2\s+0\s+\d+s ago\s+\S+\s+route org\/ns\/carol: no connection to cluster-c\.example$/m);
    expect(r.lines).toHaveLength(4);
  });

  it('routes: name → target (connection), state and error', async () => {
    const r = await slimctl(['routes', '--insecure', ...at(plain)]);
    expect(r.code, r.output).toBe(0);
    expect(r.lines[0]).toMatch(/^NODE\s+GROUP\s+NAME\s+→ TARGET \(CONNECTION\)\s+STATE\s+ERROR$/);
    expect(r.output).toMatch(/slim-b-0\s+cluster-b\.example\s+org\/ns\/alice\s+→ cluster-a\.example \(conn-b0-a\)\s+installed\s+-$/m);
    expect(r.output).toMatch(/slim-b-0\s+cluster-b\.example\s+org\/ns\/carol\s+→ cluster-c\.example\s+failed\s+no connection to cluster-c\.example$/m);
    expect(r.output).toMatch(/slim-a-1\s+cluster-a\.example\s+org\/ns\/alice\s+→ slim-a-0 \(conn-a1-a0\)\s+pending\s+-$/m);
  });

  it('connections: kind, endpoint, target, state, peer, remote address and error', async () => {
    const r = await slimctl(['connections', '--insecure', ...at(plain)]);
    expect(r.code, r.output).toBe(0);
    expect(r.lines[0]).toMatch(/^NODE\s+GROUP\s+CONNECTION\s+KIND\s+ENDPOINT\s+TARGET\s+STATE\s+PEER\s+REMOTE\s+ERROR$/);
    expect(r.output).toMatch(/slim-b-0\s+cluster-b\.example\s+conn-b0-a\s+external\s+slim\.cluster-a\.example:46357 \(tls\)\s+cluster-a\.example\s+up\s+slim-a-0\s+10\.1\.0\.0:46357\s+-$/m);
    expect(r.output).toMatch(/slim-a-0\s+cluster-a\.example\s+static-0\s+static\s+10\.9\.9\.9:46357\s+-\s+failing\s+-\s+-\s+connect ECONNREFUSED 10\.9\.9\.9:46357$/m);
  });

  it('subscriptions: group, node, name', async () => {
    const r = await slimctl(['subscriptions', '--insecure', ...at(plain)]);
    expect(r.code, r.output).toBe(0);
    expect(r.lines).toEqual([expect.stringMatching(/^GROUP\s+NODE\s+NAME$/), expect.stringMatching(/^cluster-a\.example\s+slim-a-0\s+org\/ns\/alice$/), expect.stringMatching(/^cluster-b\.example\s+slim-b-0\s+org\/ns\/bob$/)]);
  });

  it('topology: a header line per group, its nodes indented', async () => {
    const r = await slimctl(['topology', '--insecure', ...at(plain)]);
    expect(r.code, r.output).toBe(0);
    expect(r.output).toContain('cluster-a.example  healthy  external slim.cluster-a.example:46357  reaches -  connections 4 up / 0 failing');
    expect(r.output).toContain('cluster-b.example  healthy  external slim.cluster-b.example:46357  reaches cluster-a.example  connections 1 up / 0 failing');
    expect(r.output).toMatch(/^ {2}NODE\s+STATUS/m);
    expect(r.output).toMatch(/^ {2}slim-a-0\s+up\s/m);
    expect(r.output).toMatch(/^ {2}slim-b-0\s+up\s/m);
    // slim-b-0 is listed under cluster-b's header, not cluster-a's.
    expect(r.output.indexOf('  slim-b-0')).toBeGreaterThan(r.output.indexOf('cluster-b.example  healthy'));
  });

  it('filters: --node and --group reach the server as ListRequest fields', async () => {
    const before = plain.requests.length;
    const r = await slimctl(['routes', '--insecure', ...at(plain), '--node', 'slim-b-0', '--group', B]);
    expect(r.code, r.output).toBe(0);
    expect(plain.requests.slice(before)).toEqual([{ method: 'ListRoutes', req: { node_id: 'slim-b-0', group: B }, caller: '' }]);
    expect(r.output).toContain('org/ns/carol');
    expect(r.output).not.toContain('slim-a-1');

    for (const cmd of ['nodes', 'connections', 'subscriptions'] as const) {
      const n = plain.requests.length;
      const g = await slimctl([cmd, '--insecure', ...at(plain), '--group', A]);
      expect(g.code, g.output).toBe(0);
      expect(plain.requests.slice(n).map((x) => x.req)).toEqual([{ node_id: '', group: A }]);
      expect(g.output).not.toContain('slim-b-0');
    }
  });

  it('empty answers print one line', async () => {
    const cases: [string, string][] = [
      ['nodes', 'no nodes registered (node nope)'],
      ['routes', 'no routes (node nope)'],
      ['connections', 'no connections (node nope)'],
      ['subscriptions', 'no subscriptions (node nope)'],
    ];
    for (const [cmd, line] of cases) {
      const r = await slimctl([cmd, '--insecure', ...at(plain), '--node', 'nope']);
      expect(r.code, r.output).toBe(0);
      expect(r.lines).toEqual([line]);
    }
  });

  it('reads the server address from SLIMCTL_SERVER', async () => {
    const r = await slimctl(['subscriptions', '--insecure'], { SLIMCTL_SERVER: `127.0.0.1:${plain.port}` });
    expect(r.code, r.output).toBe(0);
    expect(r.output).toContain('org/ns/bob');
  });
});

describe('slimctl admin commands: -o json', () => {
  it('prints the API objects with admin.proto field names', async () => {
    const nodes = await slimctl(['nodes', '--insecure', ...at(plain), '-o', 'json']);
    expect(nodes.code, nodes.output).toBe(0);
    const n = JSON.parse(nodes.output) as { nodes: NodeInfo[] };
    expect(n.nodes.map((x) => x.node_id)).toEqual(['slim-a-0', 'slim-a-1', 'slim-b-0']);
    const b = n.nodes.find((x) => x.node_id === 'slim-b-0')!;
    expect(Object.keys(b)).toEqual([
      'node_id', 'group', 'identity', 'endpoints', 'status', 'last_heartbeat_ms', 'registered_at_ms',
      'subscriptions', 'connections', 'routes', 'pending_commands', 'last_error',
    ]);
    expect(b).toMatchObject({ group: B, status: 'up', routes: 2, endpoints: [{ local_endpoint: '10.2.0.0:46357', external_endpoint: `slim.${B}:46357`, tls: true }] });
    expect(typeof b.last_heartbeat_ms).toBe('number');
    expect(nodes.output).toContain('\n  "nodes": [');

    const routes = JSON.parse((await slimctl(['routes', '--insecure', ...at(plain), '-o', 'json'])).output) as { routes: RouteInfo[] };
    expect(routes.routes).toContainEqual({ node_id: 'slim-b-0', group: B, name: 'org/ns/alice', connection_id: 'conn-b0-a', target: A, state: 'installed', error: '' });
    const conns = JSON.parse((await slimctl(['connections', '--insecure', ...at(plain), '-o', 'json'])).output) as { connections: ConnectionInfo[] };
    expect(conns.connections).toHaveLength(3);
    expect(conns.connections[0]).toMatchObject({ connection_id: 'conn-b0-a', kind: 'external', peer_node_id: 'slim-a-0', tls: true });
    const subs = JSON.parse((await slimctl(['subscriptions', '--insecure', ...at(plain), '-o', 'json', '--node', 'slim-b-0'])).output) as { subscriptions: SubscriptionInfo[] };
    expect(subs.subscriptions).toEqual([{ node_id: 'slim-b-0', group: B, name: 'org/ns/bob' }]);
    const topo = JSON.parse((await slimctl(['topology', '--insecure', ...at(plain), '-o', 'json'])).output) as Topology;
    expect(topo.groups.map((g) => [g.group, g.health, g.reaches, g.connections_up, g.nodes.length])).toEqual([
      [A, 'healthy', [], 4, 2],
      [B, 'healthy', [A], 1, 1],
    ]);
  });
});

describe('slimctl topology --watch', () => {
  it('-o json: the topology, the node_down event, then the refreshed topology, one object per line; exits 0 on SIGINT', async () => {
    const f = await startFakeController();
    const p = spawnSlimctl(['topology', '--watch', '--insecure', ...at(f), '-o', 'json']);
    type Line = { kind: string } & Partial<AdminEvent> & Partial<Topology>;
    const parsed = (): Line[] => p.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Line);
    const bStatus = (t: Line): string | undefined => t.groups?.flatMap((g) => g.nodes).find((n) => n.node_id === 'slim-b-0')?.status;

    await p.waitForLine((l) => l.includes('"kind":"event"'));
    await p.waitForLine((l) => l.includes('"kind":"topology"') && l.includes('"status":"down"'));
    const lines = parsed();
    expect(lines.map((l) => l.kind)).toEqual(['topology', 'event', 'topology']);
    expect(bStatus(lines[0]!)).toBe('up');
    expect(lines[1]).toMatchObject({ kind: 'event', type: 'node_down', node_id: 'slim-b-0', group: B, detail: 'no heartbeat for 15 s' });
    expect(typeof lines[1]!.at_ms).toBe('number');
    expect(bStatus(lines[2]!)).toBe('down');
    expect(lines[2]!.groups!.find((g) => g.group === B)!.health).toBe('down');

    await p.stop('SIGINT');
    expect(p.exitCode).toBe(0);
    expect(p.lines.filter((l) => !l.startsWith('{'))).toEqual([]);
  });

  it('table: event lines with time, type, node, group and detail, then the topology again', async () => {
    const f = await startFakeController();
    const p = spawnSlimctl(['topology', '-w', '--insecure', ...at(f)]);
    const ev = await p.waitForLine(/node_down/);
    expect(ev).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z {2}node_down\s+slim-b-0 {2}cluster-b\.example {2}no heartbeat for 15 s$/);
    await p.waitForLine(/^cluster-b\.example {2}down {2}/);
    const evIndex = p.lines.indexOf(ev);
    expect(p.lines.findIndex((l) => /^cluster-b\.example {2}healthy/.test(l))).toBeLessThan(evIndex);
    expect(p.lines.findIndex((l) => /^cluster-b\.example {2}down/.test(l))).toBeGreaterThan(evIndex);
    await p.stop('SIGTERM');
    expect(p.exitCode).toBe(0);
  });

  it('reconnects when the event stream breaks, says so on stderr, and prints the topology again', async () => {
    const f = await startFakeController({ breakFirstWatch: true });
    const p = spawnSlimctl(['topology', '--watch', '--insecure', ...at(f), '-o', 'json']);
    await p.waitForLine(new RegExp(`^slimctl: the event stream from 127\\.0\\.0\\.1:${f.port} broke: controller restarting; reconnecting in \\d+\\.\\d s$`));
    await p.waitForLine(new RegExp(`^slimctl: event stream to 127\\.0\\.0\\.1:${f.port} re-established$`));
    await p.waitForLine((l) => l.includes('"type":"route_added"'));
    expect(f.watchCalls).toBe(2);
    const kinds = p.lines.filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { kind: string; type?: string }).type ?? 'topology');
    // Before the break: topology, node_down (its refresh may or may not have made it); after: topology, route_added.
    expect(kinds.slice(0, 2)).toEqual(['topology', 'node_down']);
    expect(kinds.slice(-2)).toEqual(['topology', 'route_added']);
    await p.stop('SIGINT');
    expect(p.exitCode).toBe(0);
  });
});

describe('slimctl admin errors', () => {
  it('an unreachable server: one line naming the address, exit 1', async () => {
    const port = await freePort();
    const r = await slimctl(['nodes', '--insecure', '--server', `127.0.0.1:${port}`]);
    expect(r.code).toBe(1);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(new RegExp(`^slimctl: cannot reach the controller admin API at 127\\.0\\.0\\.1:${port}: connection refused`));
  });

  it('permission denied: the refused-identity line, exit 1 (also for --watch)', async () => {
    const f = await startFakeController({ deny: true });
    for (const args of [['routes'], ['topology', '--watch']]) {
      const r = await slimctl([...args, '--insecure', ...at(f)]);
      expect(r.code, r.output).toBe(1);
      expect(r.lines).toEqual(['slimctl: the controller refused this identity: spiffe://cluster-b.example/ns/default/sa/bob is not an admin of this controller']);
    }
  });

  it('bad flags exit 2: unknown output format, bad --server, no TLS choice, contradictory TLS flags', async () => {
    const cases: [string[], RegExp][] = [
      [['nodes', '--insecure', '-o', 'yaml'], /^slimctl: option '-o, --output <format>' argument 'yaml' is invalid/],
      [['nodes', '--insecure', '--server', 'nope'], /^slimctl: option '--server <host:port>' argument 'nope' is invalid/],
      [['nodes'], /^slimctl: how to reach the controller admin API securely\? Pass --spiffe-socket unix:\/path \(or set SPIFFE_ENDPOINT_SOCKET\)/],
      [['nodes', '--insecure', '--ca-file', '/x.pem'], /^slimctl: --insecure \(plaintext\) contradicts/],
      [['nodes', '--cert-file', '/x.pem'], /^slimctl: --cert-file and --key-file go together/],
      [['nodes', '--ca-file', '/nonexistent/ca.pem'], /^slimctl: --ca-file: cannot read CA bundle \/nonexistent\/ca\.pem: ENOENT/],
      [['routes', '--insecure', '--bogus'], /^slimctl: unknown option '--bogus'/],
    ];
    for (const [args, line] of cases) {
      const r = await slimctl(args);
      expect(r.code, `${args.join(' ')}: ${r.output}`).toBe(2);
      expect(r.lines[0]).toMatch(line);
    }
  });
});

describe('slimctl admin over SPIFFE mTLS (dev issuer)', () => {
  let env: SpiffeEnv;
  let serverTls: ConnectionTls;
  let secure: FakeController;

  beforeAll(async () => {
    env = await startSpiffeEnv({ controller: CONTROLLER_ID, admin: ADMIN_ID, outsider: OUTSIDER_ID });
    const socket = `unix:${env.socket['controller']}`;
    // The controller accepts admin.example (its own) and cluster-a.example at the TLS level;
    // its handlers let only ADMIN_ID call.
    const t = await ConnectionTls.create(
      { insecure: false, skipVerify: false, cert: { type: 'spire', socketPath: socket }, ca: { type: 'spire', socketPath: socket, trustDomains: [A] } },
      'test.controller.tls',
      { readyTimeoutMs: 5000 },
    );
    serverTls = t!;
    secure = await startFakeController({ tls: serverTls, admin: ADMIN_ID });
  });

  afterAll(async () => {
    await secure?.stop();
    servers.splice(servers.indexOf(secure), 1);
    serverTls?.close();
    closeSharedSources();
    await env?.stop();
  });

  it('--spiffe-socket: the admin workload lists nodes and the controller sees its SPIFFE ID', async () => {
    const r = await slimctl(['nodes', ...at(secure), '--spiffe-socket', `unix:${env.socket['admin']}`, '-o', 'json']);
    expect(r.code, r.output).toBe(0);
    expect((JSON.parse(r.output) as { nodes: NodeInfo[] }).nodes).toHaveLength(3);
    expect(secure.requests.at(-1)).toEqual({ method: 'ListNodes', req: { node_id: '', group: '' }, caller: ADMIN_ID });
  });

  it('SPIFFE_ENDPOINT_SOCKET is used when no TLS flag is given', async () => {
    const r = await slimctl(['topology', ...at(secure)], { SPIFFE_ENDPOINT_SOCKET: `unix://${env.socket['admin']}` });
    expect(r.code, r.output).toBe(0);
    expect(r.output).toContain('cluster-b.example  healthy');
    expect(secure.requests.at(-1)!.caller).toBe(ADMIN_ID);
  });

  it('a workload the controller does not take as admin gets the refused-identity line', async () => {
    const r = await slimctl(['nodes', ...at(secure), '--spiffe-socket', `unix:${env.socket['outsider']}`, '--trust-domain', 'admin.example']);
    expect(r.code, r.output).toBe(1);
    expect(r.lines).toEqual([`slimctl: the controller refused this identity (${OUTSIDER_ID}): ${OUTSIDER_ID} is not an admin of this controller`]);
  });

  it('a client that does not accept the controller\'s trust domain refuses it before sending anything', async () => {
    const before = secure.requests.length;
    const r = await slimctl(['nodes', ...at(secure), '--spiffe-socket', `unix:${env.socket['outsider']}`]);
    expect(r.code, r.output).toBe(1);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(
      new RegExp(`^slimctl: cannot reach the controller admin API at 127\\.0\\.0\\.1:${secure.port}: this client refused its certificate: .*admin\\.example.* \\(to accept it, pass --trust-domain admin\\.example\\)$`),
    );
    expect(secure.requests.length).toBe(before);
  });
});

describe('slimctl admin over TLS with PEM files', () => {
  let dir: string;
  let serverTls: ConnectionTls;
  let secure: FakeController;
  let client: { cert: string; key: string };
  let ca: string;

  beforeAll(async () => {
    dir = scratchDir('slimctl-admin-pki');
    const testCa = makeCa(dir, 'admin');
    ca = testCa.cert;
    const server = makeLeaf(testCa, 'controller', CONTROLLER_ID);
    client = makeLeaf(testCa, 'operator', ADMIN_ID);
    serverTls = (await ConnectionTls.create(
      { insecure: false, skipVerify: false, cert: { type: 'file', cert: server.cert, key: server.key }, ca: { type: 'file', path: testCa.cert } },
      'test.controller.tls',
    ))!;
    secure = await startFakeController({ tls: serverTls, admin: ADMIN_ID });
  });

  afterAll(async () => {
    await secure?.stop();
    servers.splice(servers.indexOf(secure), 1);
    serverTls?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('--ca-file --cert-file --key-file: verified both ways, the controller sees the certificate\'s SPIFFE ID; nothing on stderr', async () => {
    const r = await slimctl(['subscriptions', ...at(secure), '--ca-file', ca, '--cert-file', client.cert, '--key-file', client.key]);
    expect(r.code, r.output).toBe(0);
    expect(r.lines).toEqual([expect.stringMatching(/^GROUP/), expect.stringMatching(/org\/ns\/alice$/), expect.stringMatching(/org\/ns\/bob$/)]);
    expect(secure.requests.at(-1)).toEqual({ method: 'ListSubscriptions', req: { node_id: '', group: '' }, caller: ADMIN_ID });
  });
});
