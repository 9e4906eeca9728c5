// Controlled connections and routes (node/controlled-connections.ts) and the split-horizon rule
// they rely on (DESIGN §4, two-step routing), with real SlimNode instances in this process on
// loopback and real SlimApp clients. Commands are applied through node.controlled directly; the
// gRPC control channel is test/node-controller-client.test.ts.
//
// Groups: cluster-a.example ("A") and cluster-b.example ("B").

import { describe, expect, it } from 'vitest';
import { startInProcessNode, useCleanups } from './support/in-process-node.js';
import { pino } from 'pino';
import { SlimApp, type ReceivedMessage } from '../client/slim-app.js';
import { freePort } from '../harness/processes.js';
import { parseNodeConfig } from '../node/config.js';
import { SlimNode } from '../node/node.js';
import { Kind, formatName, parseName, type Name } from '../proto/dataplane.js';
import { eventually } from './support/local-nodes.js';

const A = 'cluster-a.example';
const B = 'cluster-b.example';
const GROUP_A = `group/${A}`;

const cleanups = useCleanups();


interface TestNode {
  node: SlimNode;
  /** host:port, as a controller would name the endpoint. */
  endpoint: string;
  url: string;
}

/**
 * `controlled` (default): the node has a controller configured (one that never answers, here),
 * as every node whose routes are controlled has; false: static links only.
 */
async function startNode(nodeId: string, group: string, dial: TestNode[] = [], opsPort?: number, controlled = true): Promise<TestNode> {
  const n = await startInProcessNode(
    { nodeId, group, dial: dial.map((d) => d.url), opsPort, ...(controlled ? { controllers: [{ endpoint: 'http://127.0.0.1:1' }] } : {}) },
    cleanups,
  );
  return { node: n.node, endpoint: n.endpoint, url: n.url };
}

/** Waits until `a` and `b` hold a link with each other. */
async function linked(a: TestNode, b: TestNode): Promise<void> {
  const [ida, idb] = [a.node.cfg.nodeId, b.node.cfg.nodeId];
  await eventually(() => a.node.nodeLink(idb, b.node.cfg.group) !== undefined && b.node.nodeLink(ida, a.node.cfg.group) !== undefined, 5000, `link ${ida} ↔ ${idb}`);
}

async function app(n: TestNode, name: string): Promise<{ app: SlimApp; got: ReceivedMessage[] }> {
  const a = await SlimApp.connect({ name, slim: n.url, connectTimeoutMs: 3000, subscribeTimeoutMs: 3000 });
  cleanups.push(() => a.close());
  const got: ReceivedMessage[] = [];
  a.onMessage((m) => got.push(m));
  return { app: a, got };
}

/** `node` routes `name` over its link with `via` (learned from via's interest, or a route). */
async function knows(node: TestNode, name: Name, via: TestNode): Promise<void> {
  await eventually(() => {
    const l = node.node.nodeLink(via.node.cfg.nodeId, via.node.cfg.group);
    return l !== undefined && node.node.table.hasSubscription(name, l);
  }, 5000, `${node.node.cfg.nodeId} routes ${formatName(name)} via ${via.node.cfg.nodeId}`);
}

const texts = (got: ReceivedMessage[]): string[] => got.map((m) => m.payload.toString());

describe('split horizon with two-step routing', () => {
  it('forwards a publish from a node of another group to a node of this group (the second step)', async () => {
    const x = await startNode('x', A);
    const w = await startNode('w', A, [x]);
    const z = await startNode('z', B);
    await linked(w, x);
    // Z (group B) reaches group A through W; W reaches alice through X (interest X told W).
    const created = await z.node.controlled.createConnection({ id: GROUP_A, endpoint: w.endpoint, tls: false, group: A });
    expect(created).toEqual({ success: true, error: '' });
    const alice = await app(x, 'org/ns/alice');
    // The name alice subscribes to (with its instance), as a controller routes it.
    expect(z.node.controlled.setRoute(formatName(alice.app.name), GROUP_A)).toEqual({ success: true, error: '' });
    await knows(w, alice.app.name, x);
    const bob = await app(z, 'org/ns/bob');
    bob.app.publish('org/ns/alice', 'anycast');
    bob.app.publish(alice.app.name, 'exact');
    bob.app.publish('org/ns/alice', 'multicast', { fanout: 5 });
    await eventually(() => alice.got.length === 3, 5000, 'three messages at alice');
    expect(texts(alice.got)).toEqual(['anycast', 'exact', 'multicast']);
    // Two node-to-node hops: Z → W → X.
    expect(formatName(alice.got[0]!.source!)).toBe(formatName(bob.app.name));
    expect(w.node.stats.dropped.get('no_route') ?? 0).toBe(0);
  });

  it('forwards a publish from a node of the same group to local apps only', async () => {
    const x = await startNode('x', A);
    const w = await startNode('w', A, [x]);
    const y = await startNode('y', A);
    await linked(w, x);
    // Y routes alice to W, but alice is behind X: W may not pass a same-group message on.
    expect(await y.node.controlled.createConnection({ id: 'node/w', endpoint: w.endpoint, tls: false, node_id: 'w' })).toEqual({ success: true, error: '' });
    expect(y.node.controlled.setRoute('org/ns/alice', 'node/w')).toEqual({ success: true, error: '' });
    const alice = await app(x, 'org/ns/alice');
    await knows(w, alice.app.name, x);
    const bob = await app(y, 'org/ns/bob');
    const sentBefore = y.node.stats.sent[Kind.Publish]!;
    bob.app.publish('org/ns/alice', 'via w');
    bob.app.publish('org/ns/alice', 'via w, multicast', { fanout: 5 });
    await eventually(() => (w.node.stats.dropped.get('no_route') ?? 0) === 2, 5000, 'both dropped at w');
    // Y did forward both (to W); W dropped them rather than pass them to X.
    expect(y.node.stats.sent[Kind.Publish]! - sentBefore).toBe(2);
    expect(x.node.stats.received[Kind.Publish]).toBe(0);
    expect(alice.got).toHaveLength(0);
  });

  it('delivers a multicast through a group route once to every subscriber, over exactly one link', async () => {
    // Group A: W and X both link to Y; W's app alice1, Y's app alice2. Z (group B) has its own
    // connection to W and, from X, a second link into group A.
    const y = await startNode('y', A);
    const w = await startNode('w', A, [y]);
    const z = await startNode('z', B);
    await linked(w, y);
    expect(await z.node.controlled.createConnection({ id: GROUP_A, endpoint: w.endpoint, tls: false, group: A })).toEqual({ success: true, error: '' });
    const x = await startNode('x', A, [y, w, z]);
    await linked(x, z);
    await linked(x, y);
    await linked(x, w);
    const alice1 = await app(w, 'org/ns/alice');
    const alice2 = await app(y, 'org/ns/alice');
    for (const a of [alice1, alice2]) expect(z.node.controlled.setRoute(formatName(a.app.name), GROUP_A).success).toBe(true);
    await knows(w, alice2.app.name, y);
    // Each route holds one subscription count, on the connection's own link (to W), not on X's.
    for (const a of [alice1, alice2]) {
      expect(z.node.table.hasSubscription(a.app.name, z.node.nodeLink('w', A)!)).toBe(true);
      expect(z.node.table.hasSubscription(a.app.name, z.node.nodeLink('x', A)!)).toBe(false);
    }
    expect(z.node.routesJson().map((r) => r.link_peer_node_id)).toEqual(['w', 'w']);

    const bob = await app(z, 'org/ns/bob');
    const zSent = z.node.stats.sent[Kind.Publish]!;
    for (let i = 0; i < 5; i++) bob.app.publish('org/ns/alice', `m${i}`, { fanout: 10 });
    // Sentinels behind the multicasts on the same links: once both arrived, so did every copy.
    bob.app.publish(alice1.app.name, 'end');
    bob.app.publish(alice2.app.name, 'end');
    await eventually(() => texts(alice1.got).includes('end') && texts(alice2.got).includes('end'), 5000, 'sentinels');
    const expected = ['m0', 'm1', 'm2', 'm3', 'm4', 'end'];
    expect({ alice1: texts(alice1.got), alice2: texts(alice2.got), zSent: z.node.stats.sent[Kind.Publish]! - zSent, xReceived: x.node.stats.received[Kind.Publish] }).toEqual({
      alice1: expected,
      alice2: expected,
      // One copy per multicast out of Z (to W), plus the two sentinels; nothing through X.
      zSent: 7,
      xReceived: 0,
    });
  });
});

describe('static links between groups (no controller)', () => {
  it('link nodes with the same node id in different groups (each cluster has its own slim-0)', async () => {
    const a = await startNode('slim-0', A, [], undefined, false);
    const b = await startNode('slim-0', B, [a], undefined, false);
    await linked(a, b);
    expect(a.node.nodeLink('slim-0')).toBeUndefined();
    expect(a.node.nodeLink('slim-0', B)!.peerGroup).toBe(B);
  });

  it('deliver a multicast once: a node of another group passes nothing on to its group mates', async () => {
    // A full static mesh: z (group B) links to x and w (group A), which link to each other.
    const x = await startNode('x', A, [], undefined, false);
    const w = await startNode('w', A, [x], undefined, false);
    const z = await startNode('z', B, [x, w], undefined, false);
    await linked(w, x);
    await linked(z, x);
    await linked(z, w);
    const alice1 = await app(x, 'org/ns/alice');
    const alice2 = await app(w, 'org/ns/alice');
    await knows(z, alice1.app.name, x);
    await knows(z, alice2.app.name, w);
    await knows(w, alice1.app.name, x);
    const bob = await app(z, 'org/ns/bob');
    for (let i = 0; i < 5; i++) bob.app.publish('org/ns/alice', `m${i}`, { fanout: 10 });
    bob.app.publish(alice1.app.name, 'end');
    bob.app.publish(alice2.app.name, 'end');
    await eventually(() => texts(alice1.got).includes('end') && texts(alice2.got).includes('end'), 5000, 'sentinels');
    await new Promise((r) => setTimeout(r, 100));
    const expected = ['m0', 'm1', 'm2', 'm3', 'm4', 'end'];
    expect({ alice1: texts(alice1.got), alice2: texts(alice2.got) }).toEqual({ alice1: expected, alice2: expected });
  });
});

describe('interest between groups under a controller', () => {
  it('names cross groups only by route, so two links into a group still deliver a multicast once', async () => {
    const x = await startNode('x', A, [], undefined, true);
    const w = await startNode('w', A, [x], undefined, true);
    const z = await startNode('z', B, [], undefined, true);
    await linked(w, x);
    // Z dialled group A's load balancer and landed on W; X dialled group B's and landed on Z.
    expect((await z.node.controlled.createConnection({ id: GROUP_A, endpoint: w.endpoint, tls: false, group: A })).success).toBe(true);
    expect((await x.node.controlled.createConnection({ id: `group/${B}`, endpoint: z.endpoint, tls: false, group: B })).success).toBe(true);
    await linked(x, z);
    const alice = await app(x, 'org/ns/alice');
    expect(z.node.controlled.setRoute(formatName(alice.app.name), GROUP_A).success).toBe(true);
    await knows(w, alice.app.name, x);
    // X did not tell Z about alice over their cross-group link: only the route (via W) counts.
    await new Promise((r) => setTimeout(r, 100));
    expect(z.node.table.hasSubscription(alice.app.name, z.node.nodeLink('x', A)!)).toBe(false);
    const bob = await app(z, 'org/ns/bob');
    for (let i = 0; i < 5; i++) bob.app.publish('org/ns/alice', `m${i}`, { fanout: 10 });
    bob.app.publish(alice.app.name, 'end');
    await eventually(() => texts(alice.got).includes('end'), 5000, 'sentinel');
    expect(texts(alice.got)).toEqual(['m0', 'm1', 'm2', 'm3', 'm4', 'end']);
  });
});

describe('deleting a controlled connection', () => {
  it("keeps the link: the peer's own connection may be riding on it", async () => {
    const x = await startNode('x', A, [], undefined, true);
    const w = await startNode('w', A, [], undefined, true);
    // Each needs the other (alice on x, bob on w): one link serves both connections.
    expect((await w.node.controlled.createConnection({ id: 'node/x', endpoint: x.endpoint, tls: false, node_id: 'x' })).success).toBe(true);
    expect((await x.node.controlled.createConnection({ id: 'node/w', endpoint: w.endpoint, tls: false, node_id: 'w' })).success).toBe(true);
    const alice = await app(x, 'org/ns/alice');
    const bob = await app(w, 'org/ns/bob');
    const sender = await app(x, 'org/ns/sender');
    expect(w.node.controlled.setRoute(formatName(alice.app.name), 'node/x').success).toBe(true);
    expect(x.node.controlled.setRoute(formatName(bob.app.name), 'node/w').success).toBe(true);
    sender.app.publish(bob.app.name, 'before');
    await eventually(() => bob.got.length === 1, 3000, 'first message');
    // alice leaves: the controller deletes w's route to x and then, its last route, node/x.
    expect(w.node.controlled.deleteRoute(formatName(alice.app.name), 'node/x').success).toBe(true);
    expect(w.node.controlled.deleteConnection('node/x').success).toBe(true);
    for (let i = 0; i < 20; i++) {
      sender.app.publish(bob.app.name, `m${i}`);
      await new Promise((r) => setTimeout(r, 2));
    }
    sender.app.publish(bob.app.name, 'end');
    await eventually(() => texts(bob.got).includes('end'), 3000, 'last message');
    expect(bob.got).toHaveLength(22);
    expect(x.node.stats.dropped.get('no_route') ?? 0).toBe(0);
  });
});

describe('controlled routes', () => {
  it('follow the links of their group: re-resolved when a link goes down, one count each', async () => {
    const y = await startNode('y', A);
    const w = await startNode('w', A, [y]);
    const z = await startNode('z', B);
    await linked(w, y);
    expect((await z.node.controlled.createConnection({ id: GROUP_A, endpoint: w.endpoint, tls: false, group: A })).success).toBe(true);
    const x = await startNode('x', A, [y, z]);
    await linked(x, z);
    await linked(x, y);
    const alice = await app(y, 'org/ns/alice');
    await knows(w, alice.app.name, y);
    await knows(x, alice.app.name, y);
    const route = parseName('org/ns/alice');
    // Twice: idempotent, one entry and one count.
    expect(z.node.controlled.setRoute('org/ns/alice', GROUP_A).success).toBe(true);
    expect(z.node.controlled.setRoute('org/ns/alice', GROUP_A).success).toBe(true);
    expect(z.node.controlled.routes()).toEqual([{ name: 'org/ns/alice', connection_id: GROUP_A }]);
    const wLink = z.node.nodeLink('w', A)!;
    expect(z.node.table.hasSubscription(route, wLink)).toBe(true);
    const bob = await app(z, 'org/ns/bob');
    bob.app.publish('org/ns/alice', 'via w');
    await eventually(() => alice.got.length === 1, 5000, 'first message');

    // W goes away: the route moves to the other link into group A (X's), and traffic follows.
    await w.node.stop();
    await eventually(() => z.node.routesJson()[0]?.link_peer_node_id === 'x', 5000, 'route re-resolved to x');
    expect(z.node.table.hasSubscription(route, z.node.nodeLink('x', A)!)).toBe(true);
    bob.app.publish('org/ns/alice', 'via x');
    await eventually(() => alice.got.length === 2, 5000, 'second message');
    expect(texts(alice.got)).toEqual(['via w', 'via x']);
    const conn = z.node.connectionsJson().controlled[0]!;
    expect(conn).toMatchObject({ id: GROUP_A, endpoint: w.endpoint, tls: false, target: { group: A }, state: 'up', peer_node_id: 'x' });

    // Deleting the route removes exactly its one count: nothing for alice is left on X's link.
    expect(z.node.controlled.deleteRoute('org/ns/alice', GROUP_A)).toEqual({ success: true, error: '' });
    expect(z.node.table.hasSubscription(route, z.node.nodeLink('x', A)!)).toBe(false);
    expect(z.node.controlled.deleteRoute('org/ns/alice', GROUP_A)).toEqual({ success: true, error: '' });
    expect(z.node.controlled.deleteConnection(GROUP_A)).toEqual({ success: true, error: '' });
    expect(z.node.controlled.deleteConnection(GROUP_A)).toEqual({ success: true, error: '' });
    expect(z.node.connectionsJson().controlled).toEqual([]);
    // X's link was not this connection's to close.
    expect(z.node.nodeLink('x', A)).toBeDefined();
  });

  it('keeps a route learned-interest count separate: deleting the route leaves what the peer told', async () => {
    const x = await startNode('x', A);
    const w = await startNode('w', A);
    expect((await w.node.controlled.createConnection({ id: 'node/x', endpoint: x.endpoint, tls: false, node_id: 'x' })).success).toBe(true);
    const alice = await app(x, 'org/ns/alice');
    await knows(w, alice.app.name, x);
    const xLink = w.node.nodeLink('x')!;
    expect(xLink.dialled).toBe(true);
    // The same exact name as X's interest: two counts on one (name, link) pair.
    expect(w.node.controlled.setRoute(formatName(alice.app.name), 'node/x').success).toBe(true);
    expect(w.node.controlled.deleteRoute(formatName(alice.app.name), 'node/x').success).toBe(true);
    expect(w.node.table.hasSubscription(alice.app.name, xLink)).toBe(true);
    // Deleting the connection keeps the link (the peer may use it), and what the peer told.
    expect(w.node.controlled.deleteConnection('node/x').success).toBe(true);
    expect(w.node.nodeLink('x')).toBe(xLink);
    expect(w.node.table.hasSubscription(alice.app.name, xLink)).toBe(true);
    expect(w.node.routesJson()).toEqual([]);
  });

  it('acknowledges commands with clear reasons', async () => {
    const w = await startNode('w', A);
    const c = w.node.controlled;
    expect(c.setRoute('org/ns/alice', 'node/nowhere')).toEqual({ success: false, error: 'no connection node/nowhere' });
    expect(c.deleteRoute('org/ns/alice', 'node/nowhere')).toEqual({ success: true, error: '' });
    expect(c.deleteConnection('node/nowhere')).toEqual({ success: true, error: '' });
    const tls = await c.createConnection({ id: 'node/x', endpoint: '127.0.0.1:1', tls: true, node_id: 'x' });
    expect(tls.success).toBe(false);
    expect(tls.error).toContain('services.slim/0.dataplane.servers[0].tls');
    expect((await c.createConnection({ id: 'node/x', endpoint: 'not an endpoint', tls: false, node_id: 'x' })).error).toContain('is not host:port');
    expect((await c.createConnection({ id: 'node/x', endpoint: '127.0.0.1:1', tls: false })).error).toContain('no target');

    // Nothing listens on the port: the first failed dial fails the ack, naming the endpoint.
    const deadPort = await freePort();
    const r = await c.createConnection({ id: 'node/x', endpoint: `127.0.0.1:${deadPort}`, tls: false, node_id: 'x' });
    expect(r.success).toBe(false);
    expect(r.error).toMatch(new RegExp(`^connection node/x: cannot reach 127\\.0\\.0\\.1:${deadPort}: .*ECONNREFUSED`));
    // The connection stays (retrying in the background) and takes routes.
    expect(c.connections()).toEqual([{ id: 'node/x', endpoint: `127.0.0.1:${deadPort}`, tls: false, node_id: 'x' }]);
    expect(c.setRoute('org/ns/alice', 'node/x')).toEqual({ success: true, error: '' });
    expect(c.setRoute('org/ns', 'node/x').error).toMatch(/^invalid route name: name "org\/ns" must be/);
    expect(w.node.routesJson()).toEqual([{ name: 'org/ns/alice', connection_id: 'node/x', target: { node_id: 'x' }, link_peer_node_id: null }]);
    await eventually(() => c.states()[0]?.state === 'failing', 5000, 'failing state');
    expect(c.states()[0]!.error).toContain(`cannot reach 127.0.0.1:${deadPort}`);

    // When the peer shows up there, the dialer finds it and the route attaches.
    const x = await startNodeOn('x', A, deadPort);
    await eventually(() => w.node.routesJson()[0]?.link_peer_node_id === 'x', 10_000, 'route attached once x is up');
    expect(w.node.table.hasSubscription(parseName('org/ns/alice'), w.node.nodeLink('x')!)).toBe(true);
    expect(x.node.nodeLink('w')).toBeDefined();
  });
});

describe('the ops endpoint', () => {
  it('serves the node\'s own connection list (/connections) and routes (/routes) as JSON', async () => {
    const x = await startNode('x', A);
    const opsPort = await freePort();
    const z = await startNode('z', B, [x], opsPort);
    await linked(z, x);
    expect((await z.node.controlled.createConnection({ id: GROUP_A, endpoint: x.endpoint, tls: false, group: A })).success).toBe(true);
    expect(z.node.controlled.setRoute('org/ns/alice', GROUP_A).success).toBe(true);
    await app(z, 'org/ns/bob');
    const get = async (path: string): Promise<{ status: number; type: string | null; body: string }> => {
      const r = await fetch(`http://127.0.0.1:${opsPort}${path}`);
      return { status: r.status, type: r.headers.get('content-type'), body: await r.text() };
    };
    const conns = await get('/connections');
    expect(conns.status).toBe(200);
    expect(conns.type).toBe('application/json');
    const doc = JSON.parse(conns.body) as Record<string, unknown[]>;
    expect(doc['controlled']).toEqual([
      // The static client's link already leads to group A: the connection uses it, no second link.
      { id: GROUP_A, endpoint: x.endpoint, tls: false, target: { group: A }, state: 'up', error: '', peer_node_id: 'x', remote_address: x.endpoint },
    ]);
    expect(doc['static']).toEqual([{ id: 'static/0', endpoint: x.endpoint, tls: false, state: 'up', error: '', peer_node_id: 'x', remote_address: x.endpoint }]);
    expect(doc['links']).toEqual([
      { kind: 'remote_group', peer_node_id: 'x', peer_group: A, remote_address: x.endpoint, dialled: true, identity: '' },
      { kind: 'app', peer_node_id: '', peer_group: '', remote_address: expect.stringMatching(/^127\.0\.0\.1:\d+$/), dialled: false, identity: '', app: expect.stringMatching(/^org\/ns\/bob\//) },
    ]);
    const routes = await get('/routes');
    expect(JSON.parse(routes.body)).toEqual([{ name: 'org/ns/alice', connection_id: GROUP_A, target: { group: A }, link_peer_node_id: 'x' }]);
    const missing = await get('/nothing');
    expect(missing.status).toBe(404);
    expect(missing.body).toBe('not found: try /metrics, /healthz, /readyz, /connections, /routes\n');
    expect((await get('/metrics')).body).toMatch(/slim_controlled_routes\{[^}]*\} 1/);
    expect((await get('/readyz')).body).toBe('ready\n');
  });
});

/** A node on a given port (for "the peer comes up later"). */
async function startNodeOn(nodeId: string, group: string, port: number): Promise<TestNode> {
  const cfg = parseNodeConfig(
    JSON.stringify({
      tracing: { log_level: 'silent' },
      observability: { endpoint: '' },
      runtime: { drain_timeout: '100ms' },
      services: { 'slim/0': { node_id: nodeId, group_name: group, dataplane: { servers: [{ endpoint: `127.0.0.1:${port}`, tls: { insecure: true } }] } } },
    }),
  );
  const node = new SlimNode(cfg, pino({ level: 'silent' }));
  await node.start();
  cleanups.push(() => node.stop());
  return { node, endpoint: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}` };
}
