// Sessions between apps on a real node (in process, real HTTP/2 sockets, plaintext links, so
// identities are the apps' names): point-to-point and group, plain and MLS, and what the
// session layer does with bad input.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { pino } from 'pino';
import { SlimApp } from '../client/slim-app.js';
import type { GroupSession, MembershipEvent } from '../client/session/group-session.js';
import { MlsGroup, MlsIdentity } from '../client/session/mls-group.js';
import type { PointToPointSession } from '../client/session/point-to-point.js';
import { nameIdentity } from '../client/session/session.js';
import { formatName, parseName, type Name } from '../proto/dataplane.js';
import { FrameType, SESSION_CONTENT_TYPE, SessionKind, decodeSessionFrame, encodeSessionFrame, frame, type SessionFrame } from '../proto/session.js';
import { startInProcessNode, useCleanups } from './support/in-process-node.js';
import { take } from './support/sessions.js';
import { eventually } from './support/local-nodes.js';

const cleanups = useCleanups();
const log = pino({ level: process.env.SLIM_TEST_LOG ?? 'silent' });
afterEach(() => vi.restoreAllMocks());

async function node(): Promise<string> {
  return (await startInProcessNode({ nodeId: 'n1' }, cleanups)).url;
}

async function app(url: string, name: string, opts: { instance?: string; requireMls?: boolean; accept?: boolean } = {}): Promise<SlimApp> {
  const a = await SlimApp.connect({
    name,
    slim: url,
    instance: opts.instance,
    log: log.child({ app: name }),
    sessions: { requireMls: opts.requireMls, accept: opts.accept },
  });
  cleanups.push(() => a.close());
  return a;
}

/** Alice's part in the seed: every message on every session is answered on that session. */
function replier(a: SlimApp): PointToPointSession[] {
  const sessions: PointToPointSession[] = [];
  a.sessions.on('session', (s) => {
    sessions.push(s as PointToPointSession);
    s.onMessage((m) => void s.send(`re: ${m.payload.toString()}`).catch(() => undefined));
  });
  return sessions;
}


/** Records the session frames an app publishes (what it hands its node). */
function spyFrames(a: SlimApp): { dest: string; f: SessionFrame; bytes: Uint8Array }[] {
  const seen: { dest: string; f: SessionFrame; bytes: Uint8Array }[] = [];
  const orig = a.publish.bind(a);
  vi.spyOn(a, 'publish').mockImplementation((dest, payload, opts) => {
    if (opts?.contentType === SESSION_CONTENT_TYPE) {
      const bytes = typeof payload === 'string' ? Buffer.from(payload) : payload;
      seen.push({ dest: typeof dest === 'string' ? dest : formatName(dest), f: decodeSessionFrame(bytes), bytes });
    }
    return orig(dest, payload, opts);
  });
  return seen;
}

function sendFrame(from: SlimApp, to: string, f: SessionFrame): void {
  from.publish(to, encodeSessionFrame(f), { contentType: SESSION_CONTENT_TYPE });
}

describe('point-to-point sessions', () => {
  for (const mls of [false, true]) {
    it(`bob and alice exchange 10 messages ${mls ? 'over MLS' : 'in plaintext'}, in order, each once`, async () => {
      const url = await node();
      const alice = await app(url, 'org/ns/alice');
      const bob = await app(url, 'org/ns/bob');
      const accepted = replier(alice);
      const s = await bob.sessions.openPointToPoint('org/ns/alice', { mls });
      expect(s.isOpen).toBe(true);
      expect(s.mls).toBe(mls);
      expect(formatName(s.peer!)).toBe(formatName(alice.name));
      expect(s.remoteIdentity).toBe(nameIdentity(alice.name));
      const replies = s.messages();
      for (let i = 0; i < 10; i++) await s.send(`hello ${i}`);
      const got = await take(replies, 10);
      expect(got.map((m) => m.payload.toString())).toEqual(Array.from({ length: 10 }, (_, i) => `re: hello ${i}`));
      expect(got.every((m) => m.identity === nameIdentity(alice.name) && formatName(m.source) === formatName(alice.name))).toBe(true);
      expect(accepted).toHaveLength(1);
      expect(accepted[0]!.id).toBe(s.id);
      if (mls) {
        expect(s.epoch).toBe(1);
        expect(s.mlsState!.members().map((m) => m.identity).sort()).toEqual([nameIdentity(alice.name), nameIdentity(bob.name)].sort());
      }
      expect(alice.sessions.stats.dropped).toEqual({});
      expect(bob.sessions.stats.dropped).toEqual({});
    });
  }

  it('MLS: what bob hands his node never contains the plaintext', async () => {
    const url = await node();
    const alice = await app(url, 'org/ns/alice');
    const bob = await app(url, 'org/ns/bob');
    replier(alice);
    const frames = spyFrames(bob);
    const s = await bob.sessions.openPointToPoint('org/ns/alice', { mls: true });
    const secret = 'the-launch-code-is-0000';
    await s.send(secret);
    await take(s.messages(), 1);
    const data = frames.filter((x) => x.f.type === FrameType.Data);
    expect(data).toHaveLength(1);
    expect(Buffer.from(data[0]!.bytes).includes(secret)).toBe(false);
    // The same send without MLS does carry it: the check above can fail.
    const plain = await bob.sessions.openPointToPoint('org/ns/alice', { mls: false });
    await plain.send(secret);
    expect(frames.some((x) => x.f.sessionId === plain.id && Buffer.from(x.bytes).includes(secret))).toBe(true);
  });

  it('binds to one instance of an anycast name and talks only to it', async () => {
    const url = await node();
    const a1 = await app(url, 'org/ns/alice', { instance: 'one' });
    const a2 = await app(url, 'org/ns/alice', { instance: 'two' });
    const got1 = replier(a1);
    const got2 = replier(a2);
    const bob = await app(url, 'org/ns/bob');
    const sessions = await Promise.all([0, 1, 2, 3].map(() => bob.sessions.openPointToPoint('org/ns/alice')));
    for (const s of sessions) {
      const replies = s.messages();
      for (let i = 0; i < 5; i++) await s.send(`m${i}`);
      const got = await take(replies, 5);
      expect(new Set(got.map((m) => formatName(m.source)))).toEqual(new Set([formatName(s.peer!)]));
    }
    // Round robin spread the four sessions over both instances, each bound to exactly one.
    expect(got1.length + got2.length).toBe(4);
    expect(got1.length).toBeGreaterThan(0);
    expect(got2.length).toBeGreaterThan(0);
    const ids1 = new Set(got1.map((s) => s.id));
    expect(got2.some((s) => ids1.has(s.id))).toBe(false);
  });

  it('best effort: no acknowledgements, messages still arrive', async () => {
    const url = await node();
    const alice = await app(url, 'org/ns/alice');
    const bob = await app(url, 'org/ns/bob');
    replier(alice);
    const frames = spyFrames(alice);
    const s = await bob.sessions.openPointToPoint('org/ns/alice', { reliability: { reliable: false } });
    for (let i = 0; i < 5; i++) await s.send(`m${i}`);
    const got = await take(s.messages(), 5);
    expect(got.map((m) => m.payload.toString()).sort()).toEqual(['re: m0', 're: m1', 're: m2', 're: m3', 're: m4']);
    expect(frames.filter((x) => x.f.type === FrameType.Ack)).toEqual([]);
  });

  it('refusals and a name nobody serves are errors that say why', async () => {
    const url = await node();
    const bob = await app(url, 'org/ns/bob');
    await app(url, 'org/ns/closed'); // connected, but never listens for sessions
    await expect(bob.sessions.openPointToPoint('org/ns/closed')).rejects.toThrow(/org\/ns\/closed\/\w+ refused the session: org\/ns\/closed\/\w+ does not accept sessions/);
    const strict = await app(url, 'org/ns/strict', { requireMls: true });
    replier(strict);
    await expect(bob.sessions.openPointToPoint('org/ns/strict')).rejects.toThrow(/accepts only MLS sessions/);
    const ok = await bob.sessions.openPointToPoint('org/ns/strict', { mls: true });
    expect(ok.mls).toBe(true);
    await expect(bob.sessions.openPointToPoint('org/ns/nobody', { timeoutMs: 600 })).rejects.toThrow(
      /no answer from org\/ns\/nobody to a session request to org\/ns\/nobody after \d+ attempt\(s\) \(no route to org\/ns\/nobody/,
    );
  });

  it('closing one side ends the other: its stream ends and later sends fail', async () => {
    const url = await node();
    const alice = await app(url, 'org/ns/alice');
    const bob = await app(url, 'org/ns/bob');
    const accepted = replier(alice);
    const s = await bob.sessions.openPointToPoint('org/ns/alice', { mls: true });
    await s.send('x');
    await take(s.messages(), 1);
    const closed = new Promise<string>((r) => accepted[0]!.on('closed', r));
    await s.close();
    expect(await closed).toMatch(/closed by org\/ns\/bob\/\w+: closed by the application/);
    expect((await accepted[0]!.messages().next()).done).toBe(true);
    await expect(accepted[0]!.send('late')).rejects.toThrow(/is closed/);
    await expect(s.send('late')).rejects.toThrow(/is closed/);
  });
});

describe('group sessions', () => {
  async function groupOf(url: string, names: string[]) {
    const apps = new Map<string, SlimApp>();
    const joined = new Map<string, GroupSession>();
    const received = new Map<string, string[]>();
    const events = new Map<string, string[]>();
    for (const n of names) {
      const a = await app(url, `org/ns/${n}`);
      apps.set(n, a);
      received.set(n, []);
      events.set(n, []);
      a.sessions.on('session', (s) => {
        const g = s as GroupSession;
        joined.set(n, g);
        g.on('membership', (e: MembershipEvent) => events.get(n)!.push(`${e.type}:${e.member.name.service}`));
        g.onMessage((m) => received.get(n)!.push(`${m.source.service}:${m.payload.toString()}`));
      });
    }
    return { apps, joined, received, events };
  }

  it('moderator invites, members exchange over MLS, membership events everywhere, remove and leave', async () => {
    const url = await node();
    const mod = await app(url, 'org/ns/mod');
    const { joined, received, events } = await groupOf(url, ['b', 'c']);
    const g = await mod.sessions.createGroup('org/ns/chat', { mls: true, heartbeatMs: 200 });
    const modEvents: string[] = [];
    const modGot: string[] = [];
    g.on('membership', (e) => modEvents.push(`${e.type}:${e.member.name.service}`));
    g.onMessage((m) => modGot.push(`${m.source.service}:${m.payload.toString()}`));
    await g.invite('org/ns/b');
    await g.invite('org/ns/c');
    expect(g.members.map((m) => m.name.service).sort()).toEqual(['b', 'c', 'mod']);
    expect(g.epoch).toBe(2);
    expect(joined.get('b')!.epoch).toBe(2);
    expect(joined.get('c')!.epoch).toBe(2);
    // b learned of c through the commit; c joined knowing everyone.
    expect(events.get('b')).toEqual(['joined:c']);
    expect(joined.get('c')!.members.map((m) => m.name.service).sort()).toEqual(['b', 'c', 'mod']);
    await g.send('hello all');
    await joined.get('b')!.send('b here');
    await joined.get('c')!.send('c here');
    await eventually(() => received.get('b')!.length === 2 && received.get('c')!.length === 2 && modGot.length === 2, 5000, 'group messages');
    expect(received.get('b')!.sort()).toEqual(['c:c here', 'mod:hello all']);
    expect(received.get('c')!.sort()).toEqual(['b:b here', 'mod:hello all']);
    expect(modGot.sort()).toEqual(['b:b here', 'c:c here']);

    const cClosed = new Promise<string>((r) => joined.get('c')!.on('closed', r));
    await g.remove('org/ns/c');
    expect(await cClosed).toBe('removed by the moderator');
    expect(events.get('c')).toContain('removed:c');
    await eventually(() => events.get('b')!.includes('removed:c'), 3000, 'b sees c removed');
    expect(g.epoch).toBe(3);
    expect(joined.get('b')!.epoch).toBe(3);
    await g.send('without c');
    await eventually(() => received.get('b')!.includes('mod:without c'), 3000, 'b gets the next message');
    expect(received.get('c')).not.toContain('mod:without c');

    await joined.get('b')!.leave();
    expect(joined.get('b')!.isOpen).toBe(false);
    await eventually(() => modEvents.includes('left:b'), 3000, 'moderator sees b leave');
    expect(g.members.map((m) => m.name.service)).toEqual(['mod']);
    expect(modEvents).toEqual(['joined:b', 'joined:c', 'removed:c', 'left:b']);
    for (const a of [mod]) expect(a.sessions.stats.dropped).toEqual({});
  });

  it('heartbeats: a silent member is reported offline to everyone, and online when heard again', async () => {
    const url = await node();
    const mod = await app(url, 'org/ns/mod');
    const { apps, joined, events } = await groupOf(url, ['b', 'c']);
    const g = await mod.sessions.createGroup('org/ns/chat', { heartbeatMs: 100, missedHeartbeats: 3 });
    const modEvents: string[] = [];
    g.on('membership', (e) => modEvents.push(`${e.type}:${e.member.name.service}`));
    await g.invite('org/ns/b');
    await g.invite('org/ns/c');
    // c goes silent: nothing it sends reaches its node any more.
    const cLayer = apps.get('c')!.sessions;
    const transmit = vi.spyOn(cLayer, 'transmit').mockImplementation(() => undefined);
    await eventually(() => modEvents.includes('offline:c') && events.get('b')!.includes('offline:c'), 3000, 'c reported offline');
    expect(g.offlineMembers).toEqual([formatName(apps.get('c')!.name).replace('/c/', '/c/')]);
    transmit.mockRestore();
    await eventually(() => modEvents.includes('online:c') && events.get('b')!.includes('online:c'), 3000, 'c reported online');
    expect(joined.get('c')!.isOpen).toBe(true);
  });

  it('only the moderator changes membership; names that are not members are errors', async () => {
    const url = await node();
    const mod = await app(url, 'org/ns/mod');
    const { joined } = await groupOf(url, ['b']);
    const g = await mod.sessions.createGroup('org/ns/chat');
    await g.invite('org/ns/b');
    expect(() => joined.get('b')!.invite('org/ns/x')).toThrow(/only the moderator \(org\/ns\/mod\/\w+\) changes the membership/);
    await expect(g.remove('org/ns/zed')).rejects.toThrow('org/ns/zed is not a member of session');
    await expect(g.invite('org/ns/b')).rejects.toThrow(/already a member/);
  });
});

describe('bad input is dropped with a counted reason and the session goes on', () => {
  async function pair(mls: boolean) {
    const url = await node();
    const alice = await app(url, 'org/ns/alice');
    const bob = await app(url, 'org/ns/bob');
    const accepted = replier(alice);
    const frames = spyFrames(bob);
    const s = await bob.sessions.openPointToPoint('org/ns/alice', { mls });
    const replies = s.messages();
    return { url, alice, bob, accepted, frames, s, replies };
  }

  it('a frame for an unknown session and an undecodable frame', async () => {
    const { url, alice, s, replies } = await pair(false);
    const mallory = await app(url, 'org/ns/mallory');
    sendFrame(mallory, formatName(alice.name), frame({ sessionId: 'no-such-session', type: FrameType.Data, seq: 1, body: Buffer.from('x') }));
    mallory.publish(formatName(alice.name), Buffer.from([0xff, 0xff, 0xff]), { contentType: SESSION_CONTENT_TYPE });
    await eventually(() => alice.sessions.stats.dropped['unknown-session'] === 1 && alice.sessions.stats.dropped.malformed === 1, 3000, 'drops counted');
    await s.send('still here');
    expect((await take(replies, 1))[0]!.payload.toString()).toBe('re: still here');
  });

  it('MLS: a replayed ciphertext is not delivered twice, a moved or tampered one is refused', async () => {
    const { alice, bob, accepted, frames, s, replies } = await pair(true);
    await s.send('one');
    await take(replies, 1);
    const original = frames.find((x) => x.f.type === FrameType.Data)!;
    const aliceGot: string[] = [];
    // Alice's replier answers everything it receives: count what reaches her application.
    const onMsg = accepted[0]!;
    const delivered = () => onMsg.delivered;
    const before = delivered();
    // The same frame again: a duplicate, acknowledged again but not delivered.
    sendFrame(bob, formatName(alice.name), original.f);
    await eventually(() => alice.sessions.stats.duplicates === 1, 3000, 'duplicate noticed');
    // The same ciphertext under a new sequence number: MLS has used that key already.
    sendFrame(bob, formatName(alice.name), { ...original.f, seq: 2, low: 2 });
    // A fresh-looking ciphertext with one byte flipped.
    const body = Buffer.from(original.f.body);
    body[body.length - 20]! ^= 0x01;
    sendFrame(bob, formatName(alice.name), { ...original.f, seq: 3, low: 2, body });
    await eventually(() => Object.values(alice.sessions.stats.dropped).reduce((a, b) => a + b, 0) === 2, 3000, 'two refusals');
    const reasons = Object.keys(alice.sessions.stats.dropped).sort();
    expect(reasons.every((r) => ['replay', 'tampered', 'wrong-epoch'].includes(r))).toBe(true);
    expect(delivered()).toBe(before);
    expect(aliceGot).toEqual([]);
    // Bob's own next messages take sequence numbers 2 and 3 and still get through.
    await s.send('two');
    await s.send('three');
    expect((await take(replies, 2)).map((m) => m.payload.toString())).toEqual(['re: two', 're: three']);
  });

  it('MLS: a key package whose credential claims another identity is refused', async () => {
    const url = await node();
    const bob = await app(url, 'org/ns/bob');
    const mallory = await app(url, 'org/ns/mallory');
    // Mallory answers bob's discovery with a key package claiming to be alice.
    vi.spyOn(mallory.sessions, 'handle').mockImplementation((msg) => {
      const f = decodeSessionFrame(msg.payload);
      if (f.type !== FrameType.Discover) return;
      void MlsIdentity.create(nameIdentity(parseName('org/ns/alice/1')))
        .then((id) => id.newKeyPackage())
        .then((kp) => sendFrame(mallory, formatName(msg.source!), frame({ sessionId: f.sessionId, type: FrameType.Join, seq: f.seq, body: kp.bytes })))
        .catch(() => undefined); // the app may have closed meanwhile
    });
    await expect(bob.sessions.openPointToPoint('org/ns/mallory', { mls: true, timeoutMs: 1500 })).rejects.toThrow(/no answer/);
    expect(bob.sessions.stats.dropped['bad-credential']).toBeGreaterThanOrEqual(1);
  });

  it('MLS: a welcome for another key package is refused; the right one still opens the session', async () => {
    const url = await node();
    const alice = await app(url, 'org/ns/alice');
    const accepted = replier(alice);
    const bob = await app(url, 'org/ns/bob');
    // Bob is scripted here: frames addressed to him come to the test.
    const inbox: SessionFrame[] = [];
    vi.spyOn(bob.sessions, 'handle').mockImplementation((msg) => void inbox.push(decodeSessionFrame(msg.payload)));
    const bobId = await MlsIdentity.create(nameIdentity(bob.name));
    const sid = 'scripted-session';
    const group = await MlsGroup.create(bobId, Buffer.from(sid));
    sendFrame(bob, formatName(alice.name), frame({ sessionId: sid, type: FrameType.Discover, kind: SessionKind.PointToPoint, mls: true, seq: 1, reliable: true }));
    await eventually(() => inbox.some((f) => f.type === FrameType.Join), 3000, 'join');
    const join = inbox.find((f) => f.type === FrameType.Join)!;
    // A welcome built for a different key package with alice's identity.
    const other = await (await MlsIdentity.create(nameIdentity(alice.name))).newKeyPackage();
    const wrongGroup = await MlsGroup.create(bobId, Buffer.from(sid));
    const { welcome: wrong } = await wrongGroup.add([other.bytes]);
    const members = [
      { name: bob.name, identity: nameIdentity(bob.name) },
      { name: alice.name, identity: nameIdentity(alice.name) },
    ];
    sendFrame(bob, formatName(alice.name), frame({ sessionId: sid, type: FrameType.Welcome, seq: 2, body: wrong, members }));
    await eventually(() => alice.sessions.stats.dropped['wrong-key-package'] === 1, 3000, 'wrong welcome refused');
    expect(accepted).toHaveLength(0);
    expect(inbox.some((f) => f.type === FrameType.WelcomeAck)).toBe(false);
    const { welcome } = await group.add([join.body]);
    sendFrame(bob, formatName(alice.name), frame({ sessionId: sid, type: FrameType.Welcome, seq: 3, body: welcome, members }));
    await eventually(() => inbox.some((f) => f.type === FrameType.WelcomeAck && f.seq === 3), 3000, 'welcome acknowledged');
    expect(accepted).toHaveLength(1);
    // And the session carries traffic encrypted by the scripted side.
    const ct = await group.encrypt(Buffer.from('scripted hello'), Buffer.from(`${sid}/1/1`)); // authenticated: session/seq/low
    sendFrame(bob, formatName(alice.name), frame({ sessionId: sid, type: FrameType.Data, seq: 1, low: 1, body: ct, reliable: true }));
    await eventually(() => inbox.some((f) => f.type === FrameType.Data), 3000, 'alice replies');
    const reply = inbox.find((f) => f.type === FrameType.Data)!;
    expect(Buffer.from((await group.decrypt(reply.body)).plaintext).toString()).toBe('re: scripted hello');
  });

  it('group: commits and data from non-members are refused', async () => {
    const url = await node();
    const mod = await app(url, 'org/ns/mod');
    const b = await app(url, 'org/ns/b');
    let bg: GroupSession | undefined;
    b.sessions.on('session', (s) => (bg = s as GroupSession));
    const mallory = await app(url, 'org/ns/mallory');
    const g = await mod.sessions.createGroup('org/ns/chat', { mls: true });
    await g.invite('org/ns/b');
    await eventually(() => bg !== undefined, 3000, 'b joined');
    // An outsider's commit for a group with the same id.
    const outsider = await MlsGroup.create(await MlsIdentity.create(nameIdentity(mallory.name)), Buffer.from(g.id));
    const { commit } = await outsider.add([await (await MlsIdentity.create('spiffe://x/y')).newKeyPackage().then((k) => k.bytes)]);
    sendFrame(mallory, formatName(b.name), frame({ sessionId: g.id, type: FrameType.Commit, seq: 99, epoch: 9, body: commit, members: [] }));
    sendFrame(mallory, formatName(b.name), frame({ sessionId: g.id, type: FrameType.Data, seq: 1, low: 1, body: Buffer.from('x'), reliable: true }));
    await eventually(() => b.sessions.stats.dropped['not-moderator'] === 1 && b.sessions.stats.dropped['not-member'] === 1, 3000, 'refusals');
    expect(bg!.epoch).toBe(1);
    await g.send('after');
    const got = await take(bg!.messages(), 1);
    expect(got[0]!.payload.toString()).toBe('after');
  });
});

describe('review findings stay fixed', () => {
  /** Wraps an app's session-frame sending: `keep` decides per frame (may delay by returning a number of ms). */
  function filterSends(a: SlimApp, keep: (f: SessionFrame, dest: Name) => boolean | number): void {
    const layer = a.sessions;
    const orig = layer.transmit.bind(layer);
    vi.spyOn(layer, 'transmit').mockImplementation((dest, f, multicast) => {
      const k = keep(f, dest);
      if (k === true) orig(dest, f, multicast);
      else if (typeof k === 'number') setTimeout(() => orig(dest, f, multicast), k);
    });
  }

  it('a message given up on does not hold back the ones after it (the receiver hears the new mark)', async () => {
    const url = await node();
    const alice = await app(url, 'org/ns/alice');
    const bob = await app(url, 'org/ns/bob');
    const got: string[] = [];
    alice.sessions.on('session', (s) => s.onMessage((m) => got.push(m.payload.toString())));
    const s = await bob.sessions.openPointToPoint('org/ns/alice', { mls: true, reliability: { retryIntervalMs: 50, maxRetries: 2 } });
    filterSends(bob, (f) => !(f.type === FrameType.Data && f.seq === 2));
    const results = await Promise.allSettled(['m1', 'm2', 'm3'].map((m) => s.send(m)));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    await eventually(() => got.length === 2, 3000, 'm3 delivered after the gap');
    expect(got).toEqual(['m1', 'm3']);
  });

  it('a pinned identity: answers proving another are not taken', async () => {
    const url = await node();
    const alice = await app(url, 'org/ns/alice');
    replier(alice);
    const bob = await app(url, 'org/ns/bob');
    await expect(bob.sessions.openPointToPoint('org/ns/alice', { identity: 'spiffe://cluster-a.example/ns/default/sa/alice', timeoutMs: 600 })).rejects.toThrow(/no answer/);
    const s = await bob.sessions.openPointToPoint('org/ns/alice', { identity: nameIdentity(alice.name) });
    expect(s.remoteIdentity).toBe(nameIdentity(alice.name));
  });

  it('plaintext group: a member that missed a commit catches up with the next one', async () => {
    const url = await node();
    const mod = await app(url, 'org/ns/mod');
    const apps = new Map<string, SlimApp>();
    const sessions = new Map<string, GroupSession>();
    for (const n of ['b', 'c', 'd']) {
      const a = await app(url, `org/ns/${n}`);
      apps.set(n, a);
      a.sessions.on('session', (s) => sessions.set(n, s as GroupSession));
    }
    const g = await mod.sessions.createGroup('org/ns/chat', { reliability: { retryIntervalMs: 50, maxRetries: 2 } });
    await g.invite('org/ns/b');
    // The commit that adds c never reaches b (the moderator's retries run out).
    filterSends(mod, (f, dest) => !(f.type === FrameType.Commit && f.epoch === 2 && dest.service === 'b'));
    await g.invite('org/ns/c');
    expect(sessions.get('b')!.epoch).toBe(1);
    vi.restoreAllMocks();
    await g.invite('org/ns/d');
    await eventually(() => sessions.get('b')!.epoch === 3, 3000, 'b at epoch 3');
    expect(sessions.get('b')!.members.map((m) => m.name.service).sort()).toEqual(['b', 'c', 'd', 'mod']);
    await sessions.get('c')!.send('from c');
  });

  it('an initiator that gives up tells the peer; an invitation never confirmed is undone', async () => {
    const url = await node();
    const alice = await app(url, 'org/ns/alice');
    replier(alice);
    const bob = await app(url, 'org/ns/bob');
    filterSends(alice, (f) => f.type !== FrameType.WelcomeAck);
    await expect(bob.sessions.openPointToPoint('org/ns/alice', { reliability: { retryIntervalMs: 50, maxRetries: 2 } })).rejects.toThrow(/no answer .* the session welcome/);
    await eventually(() => alice.sessions.list().length === 0, 3000, 'alice dropped her half');

    const mod = await app(url, 'org/ns/mod');
    const g = await mod.sessions.createGroup('org/ns/chat', { reliability: { retryIntervalMs: 50, maxRetries: 2 } });
    await expect(g.invite('org/ns/alice')).rejects.toThrow(/did not confirm its welcome .* the invitation was undone/);
    expect(g.members.map((m) => m.name.service)).toEqual(['mod']);
  });

  it('a throwing drop listener neither wedges the session nor the connection', async () => {
    const url = await node();
    const alice = await app(url, 'org/ns/alice');
    const accepted = replier(alice);
    const bob = await app(url, 'org/ns/bob');
    const mallory = await app(url, 'org/ns/mallory');
    alice.sessions.on('drop', () => {
      throw new Error('listener bug');
    });
    const errors: unknown[] = [];
    alice.sessions.on('handlerError', (e) => errors.push(e));
    const s = await bob.sessions.openPointToPoint('org/ns/alice');
    sendFrame(mallory, formatName(alice.name), frame({ sessionId: s.id, type: FrameType.Ack, seq: 1 }));
    mallory.publish(formatName(alice.name), Buffer.from([0xff]), { contentType: SESSION_CONTENT_TYPE });
    await eventually(() => errors.length === 2, 3000, 'both listener errors reported');
    await s.send('still fine');
    expect((await take(s.messages(), 1))[0]!.payload.toString()).toBe('re: still fine');
    expect(accepted[0]!.isOpen).toBe(true);
    expect(alice.isReady).toBe(true);
  });

  it('leaving accept() stops accepting; half-open sessions are bounded', async () => {
    const url = await node();
    const alice = await SlimApp.connect({ name: 'org/ns/alice', slim: url, sessions: { maxPending: 2 } });
    cleanups.push(() => alice.close());
    const it = alice.sessions.accept();
    const bob = await app(url, 'org/ns/bob');
    // Scripted discoveries that never complete: the third is refused.
    const refusals: string[] = [];
    vi.spyOn(bob.sessions, 'handle').mockImplementation((msg) => {
      const f = decodeSessionFrame(msg.payload);
      if (f.type === FrameType.Refuse) refusals.push(f.reason);
    });
    for (const sid of ['p1', 'p2', 'p3']) sendFrame(bob, formatName(alice.name), frame({ sessionId: sid, type: FrameType.Discover, kind: SessionKind.PointToPoint, seq: 1 }));
    await eventually(() => refusals.length === 1, 3000, 'third refused');
    expect(refusals[0]).toMatch(/too many sessions being set up/);
    expect(alice.sessions.stats.dropped['too-many-pending']).toBe(1);
    await it.return!();
    vi.restoreAllMocks();
    await expect(bob.sessions.openPointToPoint('org/ns/alice', { timeoutMs: 2000 })).rejects.toThrow(/does not accept sessions/);
  });

  it('options out of range are errors naming them', async () => {
    const url = await node();
    const bob = await app(url, 'org/ns/bob');
    await expect(bob.sessions.createGroup('org/ns/chat', { heartbeatMs: 3e9 })).rejects.toThrow('group session: heartbeatMs must be a whole number of milliseconds from 1 to 3600000, got 3000000000');
    await expect(bob.sessions.openPointToPoint('org/ns/alice', { timeoutMs: Number.NaN })).rejects.toThrow('point-to-point session: timeoutMs must be');
    await expect(bob.sessions.openPointToPoint('org/ns/alice', { reliability: { window: 0 } })).rejects.toThrow('window must be a positive integer');
  });

  it('an instance that answered an invitation late is told to go, and lets go of the channel', async () => {
    const url = await node();
    const mod = await app(url, 'org/ns/mod');
    const b1 = await app(url, 'org/ns/b', { instance: 'one' });
    const b2 = await app(url, 'org/ns/b', { instance: 'two' });
    for (const b of [b1, b2]) b.sessions.on('session', () => undefined);
    // Whichever instance gets the first discovery answers it only after the retransmission went to the other.
    let first = true;
    for (const b of [b1, b2]) {
      filterSends(b, (f) => {
        if (f.type !== FrameType.Join) return true;
        if (first) {
          first = false;
          return 900;
        }
        return true;
      });
    }
    const g = await mod.sessions.createGroup('org/ns/chat');
    const member = await g.invite('org/ns/b');
    const loser = member.name.instance === 'one' ? b2 : b1;
    await eventually(() => loser.sessions.list().length === 0, 3000, 'the late instance dropped its half');
  });
});
