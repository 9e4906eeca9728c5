// The controller end to end: a slim-controller process, two groups (cluster-a, cluster-b) of two
// slim-node processes each, every group behind a TCP load balancer (its "LoadBalancer
// Service"), identities from the dev issuer, mutual TLS on every hop — the data plane and the
// control channel alike. Nothing is configured between the nodes: every link they hold the
// controller asked for.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProcessGroup, freePort, type ManagedProcess } from '../harness/processes.js';
import { localNodeConfig, scratchDir, spireTls, writeConfig } from '../harness/node-config.js';
import { TcpBalancer } from '../harness/tcp-balancer.js';
import { SlimApp } from '../client/slim-app.js';
import { AdminClient } from '../client/admin-client.js';
import type { RouteInfo } from '../proto/admin.js';
import { eventually } from './support/local-nodes.js';
import { startSpiffeEnv, type SpiffeEnv } from './support/spiffe-env.js';

const A = 'cluster-a.example';
const B = 'cluster-b.example';
const NODE_A = `spiffe://${A}/ns/slim/sa/slim`;
const NODE_B = `spiffe://${B}/ns/slim/sa/slim`;

interface Node {
  id: string;
  group: string;
  port: number;
  opsPort: number;
  local: string;
  process: ManagedProcess;
  socket: string;
  file: string;
}

let env: SpiffeEnv;
const procs = new ProcessGroup();
const nodes = new Map<string, Node>();
const apps: SlimApp[] = [];
const balancers = new Map<string, { lb: TcpBalancer; endpoint: string }>();
let controller: ManagedProcess;
let controllerFile: string;
let south: number;
let north: number;
let ctlOps: number;
let admin: AdminClient;
let originalA0: Node;
const dir = scratchDir('slim-ctl-it');

function controllerConfig(): Record<string, unknown> {
  const socket = `unix:${env.socket['controller']}`;
  return {
    config: {
      southbound: { httpHost: '127.0.0.1', httpPort: south, tls: { useSpiffe: true }, spire: { socketPath: socket } },
      northbound: { httpHost: '127.0.0.1', httpPort: north },
      // The startup grace must outlast the nodes' reconnect backoff (up to 5 s) on a loaded
      // machine, or the first node back loses routes toward the last (deleted, then re-added).
      reconciler: { heartbeatInterval: '500ms', nodeGracePeriod: '1500ms', commandTimeout: '5s', startupGrace: '6s' },
      logging: { level: 'debug' },
      observability: { endpoint: `127.0.0.1:${ctlOps}` },
    },
    spire: { enabled: true, trustedDomains: [`spiffe://${A}`, `spiffe://${B}`] },
  };
}

async function startController(): Promise<ManagedProcess> {
  controller = procs.spawn('controller', 'slim-controller', ['--config', controllerFile]);
  await controller.waitForLine(/"msg":"slim-controller started"/);
  return controller;
}

/** A node of `group` whose only configured peer is the controller (config written, not started). */
async function planNode(id: string, group: string, socket: string, opts: { claimGroup?: string; ports?: [number, number]; advertise?: string; extraDataplane?: Record<string, unknown> } = {}): Promise<Node> {
  const [port, opsPort] = opts.ports ?? [await freePort(), await freePort()];
  const other = group === A ? B : A;
  const doc = localNodeConfig({
    nodeId: id,
    group: opts.claimGroup ?? group,
    port,
    opsPort,
    logLevel: 'debug',
    serverTls: spireTls(env.socket[socket]!, [other]),
    externalEndpoint: balancers.get(group)?.endpoint,
    controllers: [{ endpoint: `https://127.0.0.1:${south}`, tls: spireTls(env.socket[socket]!, ['admin.example']) }],
    extraDataplane: opts.extraDataplane,
  });
  if (opts.advertise) {
    const svc = (doc.services as Record<string, { dataplane: { servers: { metadata: Record<string, string> }[] } }>)['slim/0']!;
    svc.dataplane.servers[0]!.metadata.local_endpoint = opts.advertise;
  }
  const file = writeConfig(dir, `${id}.yaml`, doc);
  return { id, group, port, opsPort, local: opts.advertise ?? `127.0.0.1:${port}`, socket, file, process: undefined as unknown as ManagedProcess };
}

async function startNode(n: Node): Promise<Node> {
  n.process = procs.spawn(n.id, 'slim-node', ['--config', n.file]);
  await n.process.waitForLine(/"msg":"slim-node started"/);
  nodes.set(n.id, n);
  return n;
}

async function nodeJson<T>(id: string, path: string): Promise<T> {
  return (await (await fetch(`http://127.0.0.1:${nodes.get(id)!.opsPort}${path}`)).json()) as T;
}

interface NodeConnections {
  controlled: { id: string; endpoint: string; state: string; peer_node_id: string; target: string }[];
}

function routeSet(routes: RouteInfo[]): string[] {
  return routes.filter((r) => r.state === 'installed').map((r) => `${r.node_id}: ${r.name} -> ${r.connection_id}`).sort();
}

async function counter(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

function app(name: string, node: string, socket: string): Promise<SlimApp> {
  const n = nodes.get(node)!;
  return SlimApp.connect({ name, slim: JSON.stringify({ endpoint: `https://127.0.0.1:${n.port}`, tls: spireTls(env.socket[socket]!, []) }) }).then((a) => {
    apps.push(a);
    return a;
  });
}

beforeAll(async () => {
  env = await startSpiffeEnv({
    controller: 'spiffe://admin.example/ns/slim/sa/slim-control-plane',
    admin: 'spiffe://admin.example/ns/ops/sa/slimctl',
    'node-a': NODE_A,
    'node-b': NODE_B,
    alice: `spiffe://${A}/ns/default/sa/alice`,
    bob: `spiffe://${B}/ns/default/sa/bob`,
    carol: `spiffe://${A}/ns/default/sa/carol`,
    dave: `spiffe://${B}/ns/default/sa/dave`,
    impostor: `spiffe://${A}/ns/other/sa/slim`,
  });
  [south, north, ctlOps] = [await freePort(), await freePort(), await freePort()];
  controllerFile = writeConfig(dir, 'controller.yaml', controllerConfig());
  await startController();
  // Ports first, so each group's balancer can be put in front of its nodes before they start.
  const plan: [string, string, string][] = [['a0', A, 'node-a'], ['a1', A, 'node-a'], ['b0', B, 'node-b'], ['b1', B, 'node-b']];
  const ports = new Map<string, [number, number]>();
  for (const [id] of plan) ports.set(id, [await freePort(), await freePort()]);
  for (const g of [A, B]) {
    const lb = new TcpBalancer(plan.filter((p) => p[1] === g).map(([id]) => ({ host: '127.0.0.1', port: ports.get(id)![0] })));
    const addr = await lb.listen();
    balancers.set(g, { lb, endpoint: `127.0.0.1:${addr.port}` });
  }
  for (const [id, g, socket] of plan) await startNode(await planNode(id, g, socket, { ports: ports.get(id) }));
  admin = await AdminClient.connect({ server: `127.0.0.1:${north}`, tls: spiffeClientTls(env.socket['admin']!) });
}, 90_000);

function spiffeClientTls(socket: string, trustDomains: string[] = []) {
  return { insecure: false, skipVerify: false, cert: { type: 'spire' as const, socketPath: `unix:${socket}` }, ca: { type: 'spire' as const, socketPath: `unix:${socket}`, trustDomains } };
}

afterAll(async () => {
  for (const a of apps) a.close();
  admin?.close();
  await procs.stopAll();
  for (const { lb } of balancers.values()) await lb.close();
  await env?.stop();
});

describe('controller: registration, routes on subscription, reconciliation', () => {
  it('registers every node, authenticated by its SVID, and logs the seed\'s verification line', async () => {
    for (const id of ['a0', 'a1', 'b0', 'b1']) await controller.waitForLine((l) => l.includes(`Registering node with ID ${id}`));
    await eventually(async () => (await admin.nodes()).filter((n) => n.status === 'up').length === 4, 10_000, 'four nodes up');
    const list = await admin.nodes();
    expect(list.map((n) => [n.node_id, n.group, n.identity])).toEqual([
      ['a0', A, NODE_A],
      ['a1', A, NODE_A],
      ['b0', B, NODE_B],
      ['b1', B, NODE_B],
    ]);
    expect(list.find((n) => n.node_id === 'a0')!.endpoints[0]).toMatchObject({ local_endpoint: nodes.get('a0')!.local, external_endpoint: balancers.get(A)!.endpoint, tls: true });
  });

  it('serves the admin API to admin identities only; slimctl reads it', async () => {
    // A workload of cluster-a passes TLS (the controller trusts cluster-a) but is no admin.
    const notAdmin = await AdminClient.connect({ server: `127.0.0.1:${north}`, tls: spiffeClientTls(env.socket['carol']!, ['admin.example']) });
    try {
      const err = await notAdmin.nodes().catch((e: unknown) => e);
      expect(err).toMatchObject({ kind: 'refused' });
      expect(String((err as Error).message)).toContain(`spiffe://${A}/ns/default/sa/carol is not in trust domain(s) admin.example`);
    } finally {
      notAdmin.close();
    }
    const ctl = procs.spawn('slimctl', 'slimctl', ['nodes', '--server', `127.0.0.1:${north}`, '--spiffe-socket', `unix:${env.socket['admin']}`]);
    expect((await ctl.exited).code).toBe(0);
    const out = ctl.lines.join('\n');
    for (const id of ['a0', 'a1', 'b0', 'b1']) expect(out).toMatch(new RegExp(`^${id}\\s+cluster-[ab]\\.example\\s+up\\s`, 'm'));
  });

  it('alice subscribes on a0: a1 gets a route over a0\'s local endpoint, cluster-b over cluster-a\'s load balancer, and bob reaches her', async () => {
    const alice = await app('org/ns/alice', 'a0', 'alice');
    alice.onMessage((m) => alice.reply(m, `hello back to ${m.identity}`));
    // Apps subscribe to their own name with their instance id; routes carry that full name.
    const n = `org/ns/alice/${alice.name.instance}`;
    const want = [`a1: ${n} -> node/a0`, `b0: ${n} -> group/${A}`, `b1: ${n} -> group/${A}`];
    const aliceRoutes = async (): Promise<string[]> => routeSet(await admin.routes()).filter((x) => x.includes(': org/ns/alice'));
    await eventually(async () => JSON.stringify(await aliceRoutes()) === JSON.stringify(want), 10_000, 'alice routes installed');
    expect(await aliceRoutes()).toEqual(want);

    // The controller's view of the connections...
    const conns = await admin.connections();
    const intra = conns.find((c) => c.node_id === 'a1' && c.connection_id === 'node/a0')!;
    expect(intra).toMatchObject({ kind: 'local', endpoint: nodes.get('a0')!.local, target: 'node a0' });
    for (const z of ['b0', 'b1']) {
      expect(conns.find((c) => c.node_id === z && c.connection_id === `group/${A}`)).toMatchObject({ kind: 'external', endpoint: balancers.get(A)!.endpoint, target: `group ${A}` });
    }
    // ...and the nodes' own lists agree: pod endpoint inside the group, load balancer across.
    await eventually(async () => {
      const a1 = await nodeJson<NodeConnections>('a1', '/connections');
      const b0 = await nodeJson<NodeConnections>('b0', '/connections');
      const toA0 = a1.controlled.find((c) => c.id === 'node/a0');
      const toA = b0.controlled.find((c) => c.id === `group/${A}`);
      return toA0?.state === 'up' && toA0.endpoint === nodes.get('a0')!.local && toA?.state === 'up' && toA.endpoint === balancers.get(A)!.endpoint;
    }, 10_000, 'the nodes report their connections up');

    const bob = await app('org/ns/bob', 'b1', 'bob');
    let reply: Awaited<ReturnType<SlimApp['request']>> | undefined;
    await eventually(async () => {
      try {
        reply = await bob.request('org/ns/alice', 'hi alice', { timeoutMs: 2000 });
        return true;
      } catch {
        return false;
      }
    }, 15_000, 'bob gets a reply from alice');
    expect(reply!.payload.toString()).toBe(`hello back to spiffe://${B}/ns/default/sa/bob`);
    expect(reply!.identity).toBe(`spiffe://${A}/ns/default/sa/alice`);
  });

  it('a node of cluster-b cannot register as cluster-a: refused with the reason, nothing else disturbed', async () => {
    originalA0 = nodes.get('a0')!;
    const rogue = await startNode(await planNode('rogue', B, 'node-b', { claimGroup: A }));
    const line = await controller.waitForLine((l) => l.includes('rejected a node registration') && l.includes('"node_id":"rogue"'));
    expect(line).toContain(`group ${A} is not the trust domain of the node's identity ${NODE_B}`);
    await rogue.process.waitForLine((l) => l.includes('controller refused registration') && l.includes('is not the trust domain'));
    expect((await admin.nodes()).map((n) => n.node_id)).not.toContain('rogue');
    expect(await admin.rejections({ node_id: 'rogue' })).toEqual([
      expect.objectContaining({ node_id: 'rogue', group: A, identity: NODE_B, reason: expect.stringContaining('is not the trust domain') }),
    ]);
    await rogue.process.stop();
    nodes.delete('rogue');
    expect((await admin.nodes()).filter((n) => n.status === 'up')).toHaveLength(4);
  });

  it('a second node claiming a registered node id under another identity is refused; the first keeps its place', async () => {
    const impostor = await startNode(await planNode('a0', A, 'impostor'));
    const line = await controller.waitForLine((l) => l.includes('rejected a node registration') && l.includes('"node_id":"a0"'));
    expect(line).toContain(`node id a0 is registered by ${NODE_A}, not spiffe://${A}/ns/other/sa/slim`);
    expect((await admin.rejections({ node_id: 'a0' }))[0]).toMatchObject({ identity: `spiffe://${A}/ns/other/sa/slim` });
    await impostor.process.stop();
    nodes.set('a0', originalA0);
    expect((await admin.nodes({ node_id: 'a0' }))[0]).toMatchObject({ status: 'up', identity: NODE_A });
  });

  it('a connection a node cannot make is reported with its reason; everything else keeps working', async () => {
    // a2 is misconfigured: it advertises a local endpoint nothing listens on, and it takes no
    // node for a node (node_spiffe_paths), so it refuses the links it dials itself too. Its
    // group mates cannot reach it.
    const a2 = await startNode(await planNode('a2', A, 'node-a', { advertise: '127.0.0.1:1', extraDataplane: { node_spiffe_paths: ['/ns/nobody/sa/none'] } }));
    await controller.waitForLine((l) => l.includes('Registering node with ID a2'));
    const erin = await app('org/ns/erin', 'a2', 'carol');
    void erin;
    await eventually(async () => {
      const c = (await admin.connections({ node_id: 'a0' })).find((x) => x.connection_id === 'node/a2');
      return c?.state === 'failing' && c.error.includes('127.0.0.1:1');
    }, 15_000, "a0's connection to a2 reported failing");
    expect((await admin.nodes({ node_id: 'a0' }))[0]!.last_error).toContain('127.0.0.1:1');
    const bob = apps.find((x) => x.name.service === 'bob')!;
    expect((await bob.request('org/ns/alice', 'still there?', { timeoutMs: 3000 })).payload.toString()).toContain('hello back');
    erin.close();
    await a2.process.stop();
    nodes.delete('a2');
    await eventually(async () => !(await admin.nodes()).some((n) => n.node_id === 'a2'), 10_000, 'a2 removed');
    await eventually(async () => !(await admin.connections()).some((c) => c.connection_id === 'node/a2'), 10_000, 'connections to a2 removed');
  });

  it('unsubscribing removes the routes; a killed node\'s routes leave the others after the grace period', async () => {
    const carol = await app('org/ns/carol', 'a1', 'carol');
    const has = async (node: string, conn: string): Promise<boolean> =>
      routeSet(await admin.routes()).some((r) => r.startsWith(`${node}: org/ns/carol/`) && r.endsWith(` -> ${conn}`));
    await eventually(async () => (await has('a0', 'node/a1')) && (await has('b0', `group/${A}`)) && (await has('b1', `group/${A}`)), 10_000, 'carol routes');
    carol.close();
    await eventually(async () => !routeSet(await admin.routes()).some((r) => r.includes('org/ns/carol')), 10_000, 'carol routes removed after unsubscribe');
    // And on the node itself.
    const a0Routes = await nodeJson<{ name: string }[]>('a0', '/routes');
    expect(a0Routes.some((r) => r.name.startsWith('org/ns/carol'))).toBe(false);

    // A subscriber on a node that then dies: after the grace period the routes toward it go.
    const carol2 = await app('org/ns/carol', 'a1', 'carol');
    await eventually(async () => (await has('a0', 'node/a1')) && (await has('b1', `group/${A}`)), 10_000, 'carol routes again');
    await nodes.get('a1')!.process.stop('SIGKILL');
    carol2.close(); // or it would subscribe again once a1 is back
    await eventually(async () => (await admin.nodes()).find((n) => n.node_id === 'a1')?.status === 'down', 5_000, 'a1 down');
    await eventually(async () => !(await admin.nodes()).some((n) => n.node_id === 'a1'), 10_000, 'a1 removed after the grace period');
    await eventually(async () => !routeSet(await admin.routes()).some((r) => r.includes('org/ns/carol') || r.includes('node/a1')), 10_000, 'routes toward a1 removed');
    const a0 = await nodeJson<NodeConnections>('a0', '/connections');
    expect(a0.controlled.find((c) => c.id === 'node/a1')).toBeUndefined();
    // Bring a1 back for the rest of the suite.
    const a1 = nodes.get('a1')!;
    await startNode(a1);
    await eventually(async () => (await admin.nodes()).filter((n) => n.status === 'up').length === 4, 10_000, 'a1 back');
  });

  it('the data plane outlives the controller; a restarted controller reconverges and sends only the difference', async () => {
    await eventually(async () => (await admin.nodes()).every((n) => n.pending_commands === 0), 10_000, 'quiet');
    const before = await admin.routes();
    const beforeConns = await admin.connections();
    const bob = apps.find((a) => a.name.service === 'bob')!;
    await controller.stop('SIGKILL');

    // Controller gone: bob keeps reaching alice across the groups.
    for (let i = 0; i < 20; i++) {
      const r = await bob.request('org/ns/alice', `while the controller is away ${i}`, { timeoutMs: 2000 });
      expect(r.payload.toString()).toContain('hello back');
    }
    // A change while it is away: dave subscribes on b0.
    const dave = await app('org/ns/dave', 'b0', 'dave');
    await new Promise((r) => setTimeout(r, 300));

    await startController();
    const restartedAt = Date.now();
    admin.close();
    admin = await AdminClient.connect({ server: `127.0.0.1:${north}`, tls: spiffeClientTls(env.socket['admin']!) });
    for (const id of ['a0', 'a1', 'b0', 'b1']) await controller.waitForLine((l) => l.includes(`Registering node with ID ${id}`), 15_000);
    const d = `org/ns/dave/${dave.name.instance}`;
    const daveRoutes = [`a0: ${d} -> group/${B}`, `a1: ${d} -> group/${B}`, `b1: ${d} -> node/b0`];
    await eventually(async () => {
      const r = routeSet(await admin.routes());
      return daveRoutes.every((d) => r.includes(d));
    }, 15_000, 'dave routes installed by the restarted controller');
    // Wait past the startup grace (deletions allowed) and for everything to settle.
    await new Promise((r) => setTimeout(r, Math.max(0, restartedAt + 6500 - Date.now())));
    await eventually(async () => (await admin.nodes()).every((n) => n.pending_commands === 0), 10_000, 'quiet again');

    const after = await admin.routes();
    const afterConns = await admin.connections();
    const key = (r: RouteInfo): string => `${r.node_id} ${r.name} ${r.connection_id}`;
    const addedRoutes = after.filter((r) => !before.some((b) => key(b) === key(r)));
    const removedRoutes = before.filter((b) => !after.some((r) => key(b) === key(r)));
    const ckey = (c: { node_id: string; connection_id: string; endpoint: string }): string => `${c.node_id} ${c.connection_id} ${c.endpoint}`;
    const addedConns = afterConns.filter((c) => c.kind !== 'static' && !beforeConns.some((b) => ckey(b) === ckey(c)));
    const removedConns = beforeConns.filter((b) => b.kind !== 'static' && !afterConns.some((c) => ckey(b) === ckey(c)));
    // Everything dave needs, and nothing else.
    expect(addedRoutes.map((r) => `${r.node_id}: ${r.name} -> ${r.connection_id}`).sort()).toEqual(daveRoutes);
    expect(removedRoutes).toEqual([]);
    const sent = await counter(ctlOps, 'slim_controller_commands_total');
    expect(sent).toBe(addedRoutes.length + addedConns.length + removedConns.length);

    // And the data plane still works end to end.
    const r = await bob.request('org/ns/alice', 'after the restart', { timeoutMs: 3000 });
    expect(r.payload.toString()).toContain('hello back');
  }, 90_000);
});
