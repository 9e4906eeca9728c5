// Real slim-node processes linked by dataplane.clients on loopback; apps are the real
// slim-receiver / slim-sender programs or SlimApp instances in the test process.

import { afterEach, describe, expect, it } from 'vitest';
import { ProcessGroup } from '../harness/processes.js';
import { DeliveryFailure, SlimApp, type ReceivedMessage } from '../client/slim-app.js';
import { ErrorCode, formatName } from '../proto/dataplane.js';
import { eventually, metric, startNodes } from './support/local-nodes.js';

let group: ProcessGroup;
const apps: SlimApp[] = [];

async function app(name: string, url: string): Promise<SlimApp> {
  const a = await SlimApp.connect({ name, slim: url, requestTimeoutMs: 3000 });
  apps.push(a);
  return a;
}

/** Collects what an app receives, replying to each when asked. */
function collect(a: SlimApp, reply = false): ReceivedMessage[] {
  const got: ReceivedMessage[] = [];
  a.onMessage((m) => {
    got.push(m);
    if (reply) a.reply(m, `re: ${m.payload.toString()}`);
  });
  return got;
}

afterEach(async () => {
  for (const a of apps.splice(0)) a.close();
  await group?.stopAll();
});

describe('two nodes linked by dataplane.clients', () => {
  it('carries bob\'s 10 messages to alice and her 10 replies back (real receiver and sender programs)', async () => {
    group = new ProcessGroup();
    const nodes = await startNodes(group, [{ id: 'node-a' }, { id: 'node-b', dial: ['node-a'] }]);
    const alice = group.spawn('alice', 'slim-receiver', ['--local', 'org/ns/alice', '--slim', nodes.get('node-a')!.url]);
    await alice.waitForLine(/waiting for messages/);
    const bob = group.spawn('bob', 'slim-sender', [
      '--local', 'org/ns/bob', '--remote', 'org/ns/alice', '--slim', nodes.get('node-b')!.url, '--message', 'hello', '--iterations', '10',
    ]);
    const { code } = await bob.exited;
    expect(bob.output).toContain('10/10 replies received');
    expect(code).toBe(0);
    expect(bob.lines.filter((l) => /sent "hello", reply "hello from org\/ns\/alice"/.test(l))).toHaveLength(10);
    expect(alice.lines.filter((l) => /received "hello" from org\/ns\/bob\//.test(l))).toHaveLength(10);
  });

  it('removes a disconnected app\'s subscriptions on both nodes, and senders then get a no-route error', async () => {
    group = new ProcessGroup();
    const nodes = await startNodes(group, [{ id: 'node-a' }, { id: 'node-b', dial: ['node-a'] }]);
    const [a, b] = [nodes.get('node-a')!, nodes.get('node-b')!];
    const alice = await app('org/ns/alice', a.url);
    collect(alice, true);
    const bob = await app('org/ns/bob', b.url);
    await eventually(async () => (await metric(b, 'slim_subscriptions')) === 2, 5000, 'alice learned on node-b');
    const reply = await bob.request('org/ns/alice', 'ping');
    expect(reply.payload.toString()).toBe('re: ping');

    // Each node holds two subscriptions: its local app's and the one learned from the other node.
    expect(await metric(a, 'slim_subscriptions')).toBe(2);
    alice.close();
    await eventually(async () => (await metric(a, 'slim_subscriptions')) === 1, 5000, 'alice gone from node-a (bob\'s learned interest left)');
    await eventually(async () => (await metric(b, 'slim_subscriptions')) === 1, 5000, 'alice gone from node-b (only bob left)');
    expect(await metric(a, 'slim_links', { kind: 'app' })).toBe(0);
    const err = await bob.request('org/ns/alice', 'ping').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeliveryFailure);
    expect((err as DeliveryFailure).code).toBe(ErrorCode.NoRoute);
  });

  it('tells an app explicitly when a name has no route', async () => {
    group = new ProcessGroup();
    const nodes = await startNodes(group, [{ id: 'node-a' }, { id: 'node-b', dial: ['node-a'] }]);
    const bob = await app('org/ns/bob', nodes.get('node-b')!.url);
    const failures: DeliveryFailure[] = [];
    bob.on('deliveryError', (f: DeliveryFailure) => failures.push(f));
    const id = bob.publish('org/ns/nobody', 'hello?');
    await eventually(() => failures.length === 1, 3000, 'delivery error');
    expect(failures[0]!.messageId).toBe(id);
    expect(failures[0]!.code).toBe(ErrorCode.NoRoute);
    expect(failures[0]!.message).toContain('org/ns/nobody');
    expect(await metric(nodes.get('node-b')!, 'slim_messages_dropped_total', { reason: 'no_route' })).toBe(1);
  });

  it('reconnects a dialled link after the peer node restarts and replays the subscriptions', async () => {
    group = new ProcessGroup();
    const nodes = await startNodes(group, [{ id: 'node-a' }, { id: 'node-b', dial: ['node-a'] }]);
    const [a, b] = [nodes.get('node-a')!, nodes.get('node-b')!];
    const bob = await app('org/ns/bob', b.url);
    collect(bob);
    // Restart node-b: node-a's subscription must reappear there once the link is redialled.
    const alice = await app('org/ns/alice', a.url);
    collect(alice, true);
    await eventually(async () => (await metric(b, 'slim_subscriptions')) === 2, 5000, 'alice learned on node-b');
    await a.process.stop();
    const restarted = group.spawn('node-a-again', 'slim-node', a.process.child.spawnargs.slice(-2));
    await restarted.waitForLine(/"msg":"slim-node started"/);
    const alice2 = await app('org/ns/alice', a.url);
    collect(alice2, true);
    await eventually(async () => (await metric(b, 'slim_links', { kind: 'peer_in_group' })) === 1, 10_000, 'link redialled');
    const reply = await bob.request('org/ns/alice', 'after restart');
    expect(reply.payload.toString()).toBe('re: after restart');
  });
});

describe('three nodes in a ring', () => {
  it('delivers each message once: no loop, anycast to one subscriber, multicast one copy each', async () => {
    group = new ProcessGroup();
    const nodes = await startNodes(group, [
      { id: 'node-a' },
      { id: 'node-b', dial: ['node-a'] },
      { id: 'node-c', dial: ['node-b', 'node-a'] },
    ]);
    const [a, b, c] = ['node-a', 'node-b', 'node-c'].map((id) => nodes.get(id)!);
    const onA = await app('org/ns/svc', a!.url);
    const onC = await app('org/ns/svc', c!.url);
    const gotA = collect(onA);
    const gotC = collect(onC);
    const sender = await app('org/ns/sender', b!.url);
    await eventually(async () => (await metric(b!, 'slim_subscriptions')) === 3, 5000, 'both subscribers learned on node-b');
    // Routes proven, not inferred: one probe to each exact instance through node-b.
    sender.publish(onA.name, 'probe');
    sender.publish(onC.name, 'probe');
    await eventually(() => gotA.length === 1 && gotC.length === 1, 5000, 'probes delivered');
    const before = {
      a: await metric(a!, 'slim_messages_received_total', { type: 'publish' }),
      c: await metric(c!, 'slim_messages_received_total', { type: 'publish' }),
    };
    gotA.length = 0;
    gotC.length = 0;

    for (let i = 0; i < 20; i++) sender.publish('org/ns/svc', `any-${i}`);
    for (let i = 0; i < 5; i++) sender.publish('org/ns/svc', `multi-${i}`, { fanout: 2 });
    await eventually(() => gotA.length + gotC.length >= 30, 5000, '30 deliveries');
    await new Promise((r) => setTimeout(r, 300)); // anything looping or duplicated would show up by now
    const texts = (got: ReceivedMessage[]) => got.map((m) => m.payload.toString());
    const kinds = (got: ReceivedMessage[], prefix: string) => texts(got).filter((t) => t.startsWith(prefix)).sort();
    // One assertion over everything, so a failure shows the whole picture.
    expect({
      deliveries: gotA.length + gotC.length,
      anycastSeen: [...kinds(gotA, 'any-'), ...kinds(gotC, 'any-')].sort(),
      // Anycast spreads across the two remote subscribers (round-robin within a class).
      anycastToA: kinds(gotA, 'any-').length,
      multicastToA: kinds(gotA, 'multi-'),
      multicastToC: kinds(gotC, 'multi-'),
      // Every node saw each publish at most once: A and C received exactly what they delivered.
      receivedByA: (await metric(a!, 'slim_messages_received_total', { type: 'publish' })) - before.a,
      receivedByC: (await metric(c!, 'slim_messages_received_total', { type: 'publish' })) - before.c,
      ttlExpiredOnB: await metric(b!, 'slim_messages_dropped_total', { reason: 'ttl_expired' }),
    }).toEqual({
      deliveries: 30,
      anycastSeen: Array.from({ length: 20 }, (_, i) => `any-${i}`).sort(),
      anycastToA: 10,
      multicastToA: ['multi-0', 'multi-1', 'multi-2', 'multi-3', 'multi-4'],
      multicastToC: ['multi-0', 'multi-1', 'multi-2', 'multi-3', 'multi-4'],
      receivedByA: gotA.length,
      receivedByC: gotC.length,
      ttlExpiredOnB: 0,
    });
  });
});

describe('anycast and multicast on one node', () => {
  it('prefers local subscribers, spreads anycast round-robin, multicasts to every subscriber once', async () => {
    group = new ProcessGroup();
    const nodes = await startNodes(group, [{ id: 'node-a' }, { id: 'node-b', dial: ['node-a'] }]);
    const [a, b] = [nodes.get('node-a')!, nodes.get('node-b')!];
    const x1 = await app('org/ns/worker', a.url);
    const x2 = await app('org/ns/worker', a.url);
    const remote = await app('org/ns/worker', b.url);
    const [g1, g2, gr] = [collect(x1), collect(x2), collect(remote)];
    const sender = await app('org/ns/sender', a.url);
    await eventually(async () => (await metric(a, 'slim_subscriptions')) === 4, 5000, 'subscriptions on node-a');

    for (let i = 0; i < 20; i++) sender.publish('org/ns/worker', `job-${i}`);
    await eventually(() => g1.length + g2.length === 20, 5000, 'anycast deliveries');
    expect(g1.length).toBe(10);
    expect(g2.length).toBe(10);
    expect(gr.length).toBe(0); // local apps first

    sender.publish('org/ns/worker', 'everyone', { fanout: 10 });
    await eventually(() => g1.length === 11 && g2.length === 11 && gr.length === 1, 5000, 'multicast deliveries');
    // An exact instance reaches only that instance, even across nodes.
    sender.publish(remote.name, 'just you');
    await eventually(() => gr.length === 2, 5000, 'exact-instance delivery');
    expect(gr[1]!.payload.toString()).toBe('just you');
    expect(formatName(gr[1]!.source!)).toBe(formatName(sender.name));
    expect(g1.length + g2.length).toBe(22);
  });
});
