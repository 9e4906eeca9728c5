// Sessions over real slim-node processes: node-b dials node-a through a LinkTap, which records
// every message the nodes forward to each other and can drop a share of them.
//  - the seed's Bob and Alice programs with --enable-mls: 10 messages, and the plaintext never
//    crosses between the nodes (without MLS it does: the check can fail);
//  - loss injection: a reliable session delivers every message exactly once and in order; with
//    the link cut the sender gets the error, and the session carries on afterwards;
//  - a group of three: a member leaves, the key rotates, the leaver cannot read what follows, and
//    a member added later cannot read what came before.

import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { ProcessGroup } from '../harness/processes.js';
import type { LinkTap, LinkTapOptions } from '../harness/link-tap.js';
import { SlimApp } from '../client/slim-app.js';
import type { GroupSession } from '../client/session/group-session.js';
import { MlsRefused } from '../client/session/mls-group.js';
import type { PointToPointSession } from '../client/session/point-to-point.js';
import { SessionDeliveryError } from '../client/session/reliability.js';
import { decodeMessage } from '../proto/dataplane.js';
import { FrameType, SESSION_CONTENT_TYPE, decodeSessionFrame, type SessionFrame } from '../proto/session.js';
import { take } from './support/sessions.js';
import { eventually, metric, startTappedNodes, type StartedNode } from './support/local-nodes.js';

let group: ProcessGroup | undefined;
const apps: SlimApp[] = [];
const taps: LinkTap[] = [];
const log = pino({ level: process.env.SLIM_TEST_LOG ?? 'silent' });

afterEach(async () => {
  for (const a of apps.splice(0)) a.close();
  for (const t of taps.splice(0)) await t.close();
  await group?.stopAll();
  group = undefined;
});

async function tappedNodes(tapOpts: Omit<LinkTapOptions, 'upstream'>): Promise<{ a: StartedNode; b: StartedNode; tap: LinkTap }> {
  group = new ProcessGroup();
  return startTappedNodes(group, tapOpts, taps);
}

async function app(name: string, node: StartedNode): Promise<SlimApp> {
  const a = await SlimApp.connect({ name, slim: node.url, log: log.child({ app: name }) });
  apps.push(a);
  return a;
}

/** Session frames among what the tap forwarded. */
function tappedFrames(tap: LinkTap): SessionFrame[] {
  const out: SessionFrame[] = [];
  for (const body of tap.captured()) {
    const m = decodeMessage(body);
    if (m.kind === 'publish' && m.publish.contentType === SESSION_CONTENT_TYPE) out.push(decodeSessionFrame(m.publish.payload));
  }
  return out;
}


describe('the seed apps over MLS, between two nodes', () => {
  const secret = 'bob-to-alice-7f3a9c';

  async function run(mls: boolean): Promise<{ bob: string; alice: string; tap: LinkTap }> {
    const { a, b, tap } = await tappedNodes({ capture: true });
    const flags = mls ? ['--enable-mls'] : [];
    const alice = group!.spawn('alice', 'slim-receiver', ['--local', 'org/ns/alice', '--slim', a.url, ...flags]);
    await alice.waitForLine(/waiting for messages/);
    await eventually(async () => (await metric(b, 'slim_subscriptions')) >= 1, 5000, 'alice known on node-b');
    const bob = group!.spawn('bob', 'slim-sender', ['--local', 'org/ns/bob', '--remote', 'org/ns/alice', '--slim', b.url, '--message', secret, '--iterations', '10', ...flags]);
    const { code } = await bob.exited;
    expect(code, bob.output).toBe(0);
    return { bob: bob.output, alice: alice.output, tap };
  }

  it('bob opens an MLS session, 10 messages and replies cross, and no node forwards the plaintext', async () => {
    const { bob, alice, tap } = await run(true);
    expect(bob).toMatch(/opened MLS session \S+ with org\/ns\/alice\/\w+ \(identity slim-name:org\/ns\/alice\/\w+\), MLS epoch 1/);
    expect(bob).toContain('10/10 replies received');
    expect(bob.match(/reply "bob-to-alice-7f3a9c from org\/ns\/alice" from org\/ns\/alice\/\w+ \(identity slim-name:org\/ns\/alice\/\w+\)/g)).toHaveLength(10);
    expect(alice).toMatch(/new MLS session \S+ from org\/ns\/bob\/\w+, MLS epoch 1/);
    expect(alice.match(/received "bob-to-alice-7f3a9c" from org\/ns\/bob\/\w+ \(identity slim-name:org\/ns\/bob\/\w+\) on MLS session/g)).toHaveLength(10);
    const frames = tappedFrames(tap);
    expect(frames.filter((f) => f.type === FrameType.Data)).toHaveLength(20);
    expect(tap.capturedBytes().includes(secret)).toBe(false);
  });

  it('without --enable-mls the same text is visible to the nodes (the check above can fail)', async () => {
    const { bob, tap } = await run(false);
    expect(bob).toContain('10/10 replies received');
    expect(tap.capturedBytes().includes(secret)).toBe(true);
  });
});

describe('loss injection between the two nodes', () => {
  it('with reliability on, every message arrives exactly once and in order', async () => {
    const { a, b, tap } = await tappedNodes({ dropRate: 0.25, seed: 7, capture: false });
    const alice = await app('org/ns/alice', a);
    const bob = await app('org/ns/bob', b);
    let accepted: PointToPointSession | undefined;
    alice.sessions.on('session', (s) => (accepted = s as PointToPointSession));
    // Loss hits the handshake too: discovery, welcome and their answers are retried.
    const s = await bob.sessions.openPointToPoint('org/ns/alice', { mls: true, reliability: { retryIntervalMs: 150, maxRetries: 20 } });
    await eventually(() => accepted !== undefined, 5000, 'alice has the session');
    const inbox = accepted!.messages();
    const n = 300;
    const sends = Array.from({ length: n }, (_, i) => s.send(`m${i}`));
    const got = await take(inbox, n, 30_000);
    await Promise.all(sends);
    expect(got.map((m) => m.payload.toString())).toEqual(Array.from({ length: n }, (_, i) => `m${i}`));
    // Nothing more turns up: retransmissions of what arrived were suppressed, not delivered again.
    await new Promise((r) => setTimeout(r, 500));
    expect(accepted!.delivered).toBe(n);
    expect(tap.dropped).toBeGreaterThan(n * 0.1);
    expect(alice.sessions.stats.duplicates).toBeGreaterThan(0);
    expect(alice.sessions.stats.dropped).toEqual({});
  }, 60_000);

  it('when retries run out the sender gets the error, and the session carries on', async () => {
    const { a, b, tap } = await tappedNodes({ dropRate: 0, dropDirection: 'toUpstream' });
    const alice = await app('org/ns/alice', a);
    const bob = await app('org/ns/bob', b);
    let accepted: PointToPointSession | undefined;
    alice.sessions.on('session', (s) => (accepted = s as PointToPointSession));
    const s = await bob.sessions.openPointToPoint('org/ns/alice', { mls: true, reliability: { retryIntervalMs: 100, maxRetries: 3 } });
    await eventually(() => accepted !== undefined, 5000, 'alice has the session');
    const inbox = accepted!.messages();
    await s.send('before');
    tap.setDropRate(1); // bob → alice is cut
    const err = await s.send('lost').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SessionDeliveryError);
    expect((err as SessionDeliveryError).seq).toBe(2);
    expect((err as SessionDeliveryError).missing).toEqual([`org/ns/alice/${alice.name.instance}`]);
    expect((err as Error).message).toMatch(/message 2 was not acknowledged by org\/ns\/alice\/\w+ after 3 retransmission\(s\)/);
    tap.setDropRate(0);
    await s.send('after');
    expect((await take(inbox, 2)).map((m) => m.payload.toString())).toEqual(['before', 'after']);
  }, 30_000);
});

describe('a group of three over MLS', () => {
  it('the leaver cannot read later messages; a member added later cannot read earlier ones', async () => {
    const { a, b, tap } = await tappedNodes({ capture: true });
    const mod = await app('org/ns/mod', a);
    const names = ['b', 'c', 'd'];
    const members = new Map<string, GroupSession>();
    const received = new Map<string, string[]>(names.map((n) => [n, []]));
    for (const n of names) {
      const m = await app(`org/ns/${n}`, b);
      m.sessions.on('session', (s) => {
        members.set(n, s as GroupSession);
        s.onMessage((msg) => received.get(n)!.push(msg.payload.toString()));
      });
    }
    await eventually(async () => (await metric(a, 'slim_subscriptions')) >= 4, 5000, 'members known on node-a');
    const g = await mod.sessions.createGroup('org/ns/team', { mls: true });
    await g.invite('org/ns/b');
    await g.invite('org/ns/c');
    expect(g.epoch).toBe(2);
    await g.send('for b and c');
    await eventually(() => received.get('b')!.length === 1 && received.get('c')!.length === 1, 5000, 'first message');

    const c = members.get('c')!;
    const cState = c.mlsState!;
    await c.leave();
    expect(g.epoch).toBe(3); // the leave was a commit: new keys
    await eventually(() => members.get('b')!.epoch === 3, 5000, 'b at the new epoch');
    await g.send('after c left');
    await eventually(() => received.get('b')!.includes('after c left'), 5000, 'b reads on');
    expect(received.get('c')).toEqual(['for b and c']);
    // The ciphertext crossed between the nodes; c's last keys cannot open it.
    const afterLeave = tappedFrames(tap).filter((f) => f.type === FrameType.Data && f.sessionId === g.id).at(-1)!;
    const refusal = await cState.decrypt(afterLeave.body).catch((e: unknown) => e);
    expect(refusal).toBeInstanceOf(MlsRefused);
    expect(['wrong-epoch', 'epoch-ahead']).toContain((refusal as MlsRefused).reason);

    await g.invite('org/ns/d');
    expect(g.epoch).toBe(4);
    const d = members.get('d')!;
    for (const earlier of tappedFrames(tap).filter((f) => f.type === FrameType.Data && f.sessionId === g.id)) {
      await expect(d.mlsState!.decrypt(earlier.body)).rejects.toBeInstanceOf(MlsRefused);
    }
    await g.send('welcome d');
    await eventually(() => received.get('d')!.includes('welcome d') && received.get('b')!.includes('welcome d'), 5000, 'd reads from its join on');
    expect(received.get('d')).toEqual(['welcome d']);
    expect(tap.capturedBytes().includes('welcome d')).toBe(false);
  }, 60_000);
});
