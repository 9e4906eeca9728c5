// LinkTap between two real slim-node processes: node-b dials node-a through the tap, an app on
// each node. bob (on node-b) publishes to alice (on node-a), so his messages cross the tap
// towards the dialled node: the tap's toUpstream direction.

import { afterEach, describe, expect, it } from 'vitest';
import { ProcessGroup } from '../harness/processes.js';
import { mulberry32, type LinkTap, type LinkTapOptions } from '../harness/link-tap.js';
import { SlimApp, type ReceivedMessage } from '../client/slim-app.js';
import { decodeMessage } from '../proto/dataplane.js';
import { eventually, metric, startTappedNodes, type StartedNode } from './support/local-nodes.js';

let group: ProcessGroup | undefined;
const apps: SlimApp[] = [];
const taps: LinkTap[] = [];

afterEach(async () => {
  for (const a of apps.splice(0)) a.close();
  for (const t of taps.splice(0)) await t.close();
  await group?.stopAll();
  group = undefined;
});

async function app(name: string, url: string): Promise<SlimApp> {
  const a = await SlimApp.connect({ name, slim: url, requestTimeoutMs: 3000 });
  apps.push(a);
  return a;
}

function collect(a: SlimApp): ReceivedMessage[] {
  const got: ReceivedMessage[] = [];
  a.onMessage((m) => got.push(m));
  return got;
}

interface Setup {
  a: StartedNode;
  b: StartedNode;
  tap: LinkTap;
  alice: SlimApp;
  bob: SlimApp;
  got: ReceivedMessage[];
}

/** node-a, node-b dialling node-a through a tap; alice on node-a, bob on node-b, each known on the other node. */
async function tappedPair(tapOpts: Omit<LinkTapOptions, 'upstream'>): Promise<Setup> {
  group = new ProcessGroup();
  const { a, b } = await startTappedNodes(group, tapOpts, taps);
  const alice = await app('org/ns/alice', a.url);
  const got = collect(alice);
  const bob = await app('org/ns/bob', b.url);
  await eventually(async () => (await metric(b, 'slim_subscriptions')) === 2, 5000, 'alice learned on node-b');
  await eventually(async () => (await metric(a, 'slim_subscriptions')) === 2, 5000, 'bob learned on node-a');
  expect(taps).toHaveLength(1);
  return { a, b, tap: taps[0]!, alice, bob, got };
}

const texts = (got: ReceivedMessage[]): string[] => got.map((m) => m.payload.toString());

describe('LinkTap between two nodes', () => {
  it('relays everything at drop rate 0 and captures what the nodes forwarded', async () => {
    const { tap, bob, got } = await tappedPair({ capture: true });
    const sent = Array.from({ length: 200 }, (_, i) => `canary-7f3a9c plaintext #${i}`);
    for (const s of sent) bob.publish('org/ns/alice', s);
    await eventually(() => got.length === 200, 10_000, '200 deliveries');

    expect(texts(got)).toEqual(sent);
    expect(tap.toUpstream.forwarded).toBe(200);
    expect(tap.toUpstream.dropped).toBe(0);
    expect(tap.toDownstream.forwarded).toBe(0);
    // Link negotiation and subscriptions crossed both ways and are counted apart from publishes.
    expect(tap.toUpstream.control).toBeGreaterThan(0);
    expect(tap.toDownstream.control).toBeGreaterThan(0);
    expect(tap.forwarded).toBe(200);

    const captured = tap.captured();
    expect(captured.length).toBe(200 + tap.toUpstream.control + tap.toDownstream.control);
    // Each entry is one whole message body: the first is node-b's link negotiation.
    const first = decodeMessage(captured[0]!);
    expect(first.kind === 'link' && first.link.nodeId).toBe('node-b');
    const publishes = captured.map((c) => decodeMessage(c)).filter((m) => m.kind === 'publish');
    expect(publishes.map((m) => (m.kind === 'publish' ? Buffer.from(m.publish.payload).toString() : ''))).toEqual(sent);
    expect(tap.capturedBytes().includes('canary-7f3a9c')).toBe(true);
    expect(tap.capturedBytes().includes('never sent by anyone')).toBe(false);
  });

  it('drops a seeded share of the publishes only, keeping the link and its routes up', async () => {
    const seed = 20240611;
    const { a, b, tap, bob, got } = await tappedPair({ dropRate: 0.3, seed, dropDirection: 'toUpstream' });
    for (let i = 0; i < 1000; i++) bob.publish('org/ns/alice', `lossy-${i}`);
    await eventually(() => tap.toUpstream.forwarded + tap.toUpstream.dropped === 1000, 10_000, 'all 1000 publishes through the tap');
    await eventually(() => got.length === 1000 - tap.dropped, 10_000, 'forwarded publishes delivered');
    await new Promise((r) => setTimeout(r, 200)); // a late extra delivery would show up by now
    expect(got.length).toBe(1000 - tap.toUpstream.dropped);
    expect(tap.toUpstream.dropped).toBeGreaterThanOrEqual(200);
    expect(tap.toUpstream.dropped).toBeLessThanOrEqual(400);

    // Reproducible: toUpstream draws once per publish from mulberry32(seed), so the survivors
    // are exactly the publishes whose draw was not below the rate.
    const rng = mulberry32(seed);
    const expected = Array.from({ length: 1000 }, (_, i) => i).filter(() => rng() >= 0.3).map((i) => `lossy-${i}`);
    expect(texts(got)).toEqual(expected);

    // Nothing but publishes was lost: the link never went down, both nodes still route.
    expect(a.process.output).not.toContain('"msg":"link down"');
    expect(b.process.output).not.toContain('"msg":"link down"');
    expect(await metric(b, 'slim_subscriptions')).toBe(2);

    tap.setDropRate(0);
    const droppedBefore = tap.dropped;
    got.length = 0;
    for (let i = 0; i < 100; i++) bob.publish('org/ns/alice', `clean-${i}`);
    await eventually(() => got.length === 100, 10_000, '100 deliveries after loss stopped');
    expect(texts(got)).toEqual(Array.from({ length: 100 }, (_, i) => `clean-${i}`));
    expect(tap.dropped).toBe(droppedBefore);
  });

  it('ends the link on both nodes when it closes', async () => {
    const { a, b, tap } = await tappedPair({});
    const started = Date.now();
    await tap.close();
    expect(Date.now() - started).toBeLessThan(2000);
    await a.process.waitForLine((l) => l.includes('"msg":"link down"') && l.includes('"link":"node node-b '), 5000);
    await b.process.waitForLine((l) => l.includes('"msg":"link down"') && l.includes('"link":"node node-a '), 5000);
    await eventually(async () => (await metric(a, 'slim_links', { kind: 'peer_in_group' })) === 0, 5000, 'node-a lost its peer link');
    await eventually(async () => (await metric(b, 'slim_links', { kind: 'peer_in_group' })) === 0, 5000, 'node-b lost its peer link');
    // Routes learned over the link went with it.
    await eventually(async () => (await metric(b, 'slim_subscriptions')) === 1, 5000, 'alice gone from node-b');
    // A second close is harmless.
    await tap.close();
  });

  it('passes the link on again after the dialled node restarts behind it', async () => {
    const { a, b, tap, bob, got } = await tappedPair({});
    await a.process.stop();
    await b.process.waitForLine((l) => l.includes('"msg":"link down"') && l.includes('"link":"node node-a '), 5000);
    await eventually(async () => (await metric(b, 'slim_subscriptions')) === 1, 5000, 'alice gone from node-b');
    const restarted = group!.spawn('node-a-again', 'slim-node', a.process.child.spawnargs.slice(-2));
    await restarted.waitForLine(/"msg":"slim-node started"/);
    // node-b redials the tap, which opens a fresh connection to the new node-a; alice's SlimApp
    // reconnects to it by itself.
    await restarted.waitForLine((l) => l.includes('"msg":"link up"') && l.includes('"link":"node node-b '), 10_000);
    await eventually(async () => (await metric(b, 'slim_subscriptions')) === 2, 10_000, 'alice learned on node-b again');
    const before = tap.toUpstream.forwarded;
    got.length = 0;
    for (let i = 0; i < 10; i++) bob.publish('org/ns/alice', `again-${i}`);
    await eventually(() => got.length === 10, 5000, '10 deliveries after the restart');
    expect(texts(got)).toEqual(Array.from({ length: 10 }, (_, i) => `again-${i}`));
    expect(tap.toUpstream.forwarded - before).toBe(10);
  });
});
