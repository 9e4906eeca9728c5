// The MLS wrapper the SDK session layer builds end-to-end encryption on: real ts-mls groups in this
// process, bytes passed between members by hand. Every refusal is checked for its reason and for
// leaving the refusing member's state usable (a later genuine message or commit still goes through).

import { describe, expect, it } from 'vitest';
import { createGroup } from 'ts-mls/clientState.js';
import { createCommit } from 'ts-mls/createCommit.js';
import { createApplicationMessage } from 'ts-mls/createMessage.js';
import { getCiphersuiteFromName } from 'ts-mls/crypto/ciphersuite.js';
import { getCiphersuiteImpl } from 'ts-mls/crypto/getCiphersuiteImpl.js';
import { defaultCapabilities } from 'ts-mls/defaultCapabilities.js';
import { generateKeyPackage } from 'ts-mls/keyPackage.js';
import { decodeMlsMessage, encodeMlsMessage } from 'ts-mls/message.js';
import { processPrivateMessage } from 'ts-mls/processMessages.js';
import { emptyPskIndex } from 'ts-mls/pskIndex.js';
import type { CiphersuiteImpl, Credential, KeyPackage } from 'ts-mls';
import {
  MLS_CIPHERSUITE,
  MLS_KEY_RETENTION,
  MlsGroup,
  MlsIdentity,
  MlsRefused,
  keyPackageIdentity,
  type MlsRefusal,
} from '../client/session/mls-group.js';

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (b: Uint8Array): string => new TextDecoder().decode(b);
const GROUP = text('session/group-1');
const ID = {
  a: 'spiffe://example.org/ns/default/sa/alice',
  b: 'spiffe://example.org/ns/default/sa/bob',
  c: 'spiffe://example.org/ns/default/sa/carol',
  d: 'spiffe://example.org/ns/default/sa/dave',
  o: 'spiffe://elsewhere.example/ns/x/sa/outsider',
};

async function refusal(op: Promise<unknown>): Promise<MlsRefusal> {
  const err = await op.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MlsRefused);
  return (err as MlsRefused).reason;
}

function flipped(bytes: Uint8Array, index: number): Uint8Array {
  const copy = bytes.slice();
  copy[index] = (copy[index] ?? 0) ^ 0x01;
  return copy;
}

/** Deterministic Fisher–Yates so a failing order can be reproduced. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = items.slice();
  let s = seed >>> 0;
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

const FOREVER = { notBefore: 0n, notAfter: 2n ** 63n - 1n };

function rawSuite(): Promise<CiphersuiteImpl> {
  return getCiphersuiteImpl(getCiphersuiteFromName(MLS_CIPHERSUITE));
}

function keyPackageOf(bytes: Uint8Array): KeyPackage {
  const decoded = decodeMlsMessage(bytes, 0)?.[0];
  if (decoded?.wireformat !== 'mls_key_package') throw new Error('expected a key package');
  return decoded.keyPackage;
}

/** `joiner` offers a key package, `adder` adds it; every other member applies the commit. */
async function addMember(adder: MlsGroup, joiner: MlsIdentity, others: MlsGroup[] = []): Promise<MlsGroup> {
  const kp = await joiner.newKeyPackage();
  const { commit, welcome } = await adder.add([kp.bytes]);
  for (const g of others) await g.processCommit(commit);
  return MlsGroup.join(joiner, kp, welcome);
}

async function pair(): Promise<{ a: MlsGroup; b: MlsGroup; bob: MlsIdentity }> {
  const alice = await MlsIdentity.create(ID.a);
  const bob = await MlsIdentity.create(ID.b);
  const a = await MlsGroup.create(alice, GROUP);
  const b = await addMember(a, bob);
  return { a, b, bob };
}

async function roundTrip(from: MlsGroup, to: MlsGroup, body: string): Promise<void> {
  const got = await to.decrypt(await from.encrypt(text(body)));
  expect(str(got.plaintext)).toBe(body);
  expect(got.sender).toBe(from.myIdentity);
  expect(got.epoch).toBe(from.epoch);
}

describe('MlsGroup: two members', () => {
  it('creates, adds by key package, joins from the welcome and exchanges messages both ways', async () => {
    const alice = await MlsIdentity.create(ID.a);
    const bob = await MlsIdentity.create(ID.b);
    const a = await MlsGroup.create(alice, GROUP);
    expect(a.epoch).toBe(0n);
    expect(a.members()).toEqual([{ identity: ID.a, leafIndex: 0 }]);

    const kp = await bob.newKeyPackage();
    const { commit, welcome } = await a.add([kp.bytes]);
    expect(commit.length).toBeGreaterThan(0);
    const b = await MlsGroup.join(bob, kp, welcome);

    expect(a.epoch).toBe(1n);
    expect(b.epoch).toBe(1n);
    expect(b.groupId).toEqual(GROUP);
    expect(b.myIdentity).toBe(ID.b);
    const both = [
      { identity: ID.a, leafIndex: 0 },
      { identity: ID.b, leafIndex: 1 },
    ];
    expect(a.members()).toEqual(both);
    expect(b.members()).toEqual(both);

    const toBob = await b.decrypt(await a.encrypt(text('hello bob'), text('hdr-1')));
    expect(toBob).toEqual({ plaintext: text('hello bob'), aad: text('hdr-1'), sender: ID.a, epoch: 1n });
    const toAlice = await a.decrypt(await b.encrypt(text('hello alice')));
    expect(toAlice).toEqual({ plaintext: text('hello alice'), aad: new Uint8Array(), sender: ID.b, epoch: 1n });

    // A key package is single use: once joined with, it cannot be joined with again.
    await expect(MlsGroup.join(bob, kp, welcome)).rejects.toThrow(/already used/);
  });
});

describe('MlsGroup: out-of-order delivery', () => {
  it('decrypts 50 messages of one sender in shuffled order', async () => {
    const { a, b } = await pair();
    const sent: Uint8Array[] = [];
    for (let i = 0; i < 50; i++) sent.push(await a.encrypt(text(`m${i}`)));
    for (const i of shuffled([...sent.keys()], 7)) {
      const got = await b.decrypt(sent[i] as Uint8Array);
      expect(str(got.plaintext)).toBe(`m${i}`);
    }
  });

  it('tolerates exactly the configured 1024-generation window, in both directions', async () => {
    expect(MLS_KEY_RETENTION.retainKeysForGenerations).toBeGreaterThanOrEqual(1024);
    expect(MLS_KEY_RETENTION.retainKeysForEpochs).toBeGreaterThanOrEqual(4);
    const { a, b } = await pair();
    const sent: Uint8Array[] = [];
    for (let i = 0; i <= 1025; i++) sent.push(await a.encrypt(text(`m${i}`)));

    // 1025 generations ahead of anything seen is beyond the window; refused, nothing changes.
    expect(await refusal(b.decrypt(sent[1025] as Uint8Array))).toBe('wrong-epoch');
    // 1024 ahead is within it, and then the oldest (1024 behind) is still there.
    expect(str((await b.decrypt(sent[1024] as Uint8Array)).plaintext)).toBe('m1024');
    expect(str((await b.decrypt(sent[0] as Uint8Array)).plaintext)).toBe('m0');
    for (const i of shuffled([...Array(1026).keys()].slice(1).filter((i) => i !== 1024), 11)) {
      expect(str((await b.decrypt(sent[i] as Uint8Array)).plaintext)).toBe(`m${i}`);
    }
  });
});

describe('MlsGroup: concurrent calls are serialized', () => {
  it('20 encrypt() calls in one tick decrypt in call order at the peer', async () => {
    const { a, b } = await pair();
    const sent = await Promise.all([...Array(20).keys()].map((i) => a.encrypt(text(`c${i}`))));
    for (const [i, ct] of sent.entries()) expect(str((await b.decrypt(ct)).plaintext)).toBe(`c${i}`);
  });

  it('concurrent decrypts each keep their ratchet update (all are replays afterwards)', async () => {
    const { a, b } = await pair();
    const sent: Uint8Array[] = [];
    for (let i = 0; i < 20; i++) sent.push(await a.encrypt(text(`d${i}`)));
    const got = await Promise.all(sent.map((ct) => b.decrypt(ct)));
    expect(got.map((g) => str(g.plaintext))).toEqual(sent.map((_, i) => `d${i}`));
    for (const ct of sent) expect(await refusal(b.decrypt(ct))).toBe('replay');
  });

  it('keeps call order across encrypt, add and encrypt issued together', async () => {
    const { a, b } = await pair();
    const carol = await MlsIdentity.create(ID.c);
    const kp = await carol.newKeyPackage();
    const before = [0, 1, 2].map((i) => a.encrypt(text(`before${i}`)));
    const added = a.add([kp.bytes]);
    const after = [0, 1, 2].map((i) => a.encrypt(text(`after${i}`)));
    const [beforeCts, { commit, welcome }, afterCts] = await Promise.all([Promise.all(before), added, Promise.all(after)]);

    for (const [i, ct] of beforeCts.entries()) {
      expect(await b.decrypt(ct)).toMatchObject({ plaintext: text(`before${i}`), epoch: 1n });
    }
    // The peer has not applied the commit yet: a message of the next epoch is for later.
    expect(await refusal(b.decrypt(afterCts[0] as Uint8Array))).toBe('epoch-ahead');
    const effect = await b.processCommit(commit);
    expect(effect).toEqual({ epoch: 2n, added: [ID.c], removed: [], committer: ID.a, removedMe: false });
    const c = await MlsGroup.join(carol, kp, welcome);
    for (const [i, ct] of afterCts.entries()) {
      expect(await b.decrypt(ct)).toMatchObject({ plaintext: text(`after${i}`), epoch: 2n });
      expect(await c.decrypt(ct)).toMatchObject({ plaintext: text(`after${i}`), sender: ID.a });
    }
  });
});

describe('MlsGroup: replayed and tampered ciphertexts', () => {
  it('refuses a replay as "replay" and still decrypts the next genuine message', async () => {
    const { a, b } = await pair();
    const m0 = await a.encrypt(text('m0'));
    const m1 = await a.encrypt(text('m1'));
    await b.decrypt(m0);
    expect(await refusal(b.decrypt(m0))).toBe('replay');
    expect(await refusal(b.decrypt(m0))).toBe('replay');
    expect(str((await b.decrypt(m1)).plaintext)).toBe('m1');
    await roundTrip(b, a, 'still fine');
  });

  it('refuses flipped bytes (middle, end, authenticated data) and keeps the genuine message decryptable', async () => {
    const { a, b } = await pair();
    const ct = await a.encrypt(text('payload'), text('routing-header'));

    expect(await refusal(b.decrypt(flipped(ct, Math.floor(ct.length / 2))))).toBe('tampered');
    expect(await refusal(b.decrypt(flipped(ct, ct.length - 1)))).toBe('tampered');
    const aadAt = Buffer.from(ct).indexOf(Buffer.from('routing-header'));
    expect(aadAt).toBeGreaterThan(0);
    expect(await refusal(b.decrypt(flipped(ct, aadAt + 3)))).toBe('tampered');
    // Header bytes are refused too, each for what they now say; nothing is accepted.
    for (let i = 0; i < 24; i++) await expect(b.decrypt(flipped(ct, i))).rejects.toBeInstanceOf(MlsRefused);
    expect(await refusal(b.decrypt(ct.subarray(0, ct.length - 5)))).toBe('malformed');
    expect(await refusal(b.decrypt(new Uint8Array([...ct, 0])))).toBe('malformed');

    expect(b.epoch).toBe(1n);
    expect(await b.decrypt(ct)).toMatchObject({ plaintext: text('payload'), aad: text('routing-header'), sender: ID.a });
  });

  it('refuses inputs of the wrong kind or for another group', async () => {
    const { a, b } = await pair();
    const { commit } = await a.update();
    expect(await refusal(b.decrypt(commit))).toBe('malformed');
    await b.processCommit(commit);
    const ct = await a.encrypt(text('x'));
    expect(await refusal(b.processCommit(ct))).toBe('malformed');
    expect(await refusal(b.decrypt(text('not mls at all')))).toBe('malformed');

    const other = await MlsGroup.create(await MlsIdentity.create(ID.o), text('session/group-2'));
    expect(await refusal(b.decrypt(await other.encrypt(text('elsewhere'))))).toBe('wrong-group');
    expect(str((await b.decrypt(ct)).plaintext)).toBe('x');
  });
});

describe('MlsGroup: membership changes', () => {
  it('adds and removes members; removed and not-yet-joined members cannot read', async () => {
    const [alice, bob, carol, dave] = await Promise.all([ID.a, ID.b, ID.c, ID.d].map((id) => MlsIdentity.create(id)));
    const a = await MlsGroup.create(alice as MlsIdentity, GROUP);
    const b = await addMember(a, bob as MlsIdentity);
    const c = await addMember(a, carol as MlsIdentity, [b]);
    expect(a.epoch).toBe(2n);
    expect([b.epoch, c.epoch]).toEqual([2n, 2n]);
    for (const g of [a, b, c]) expect(g.members().map((m) => m.identity)).toEqual([ID.a, ID.b, ID.c]);

    for (const from of [a, b, c]) for (const to of [a, b, c]) if (from !== to) await roundTrip(from, to, `${from.myIdentity}→`);

    const inFlight = await a.encrypt(text('sent at epoch 2'));
    const { commit } = await a.remove([ID.c]);
    expect(a.members().map((m) => m.identity)).toEqual([ID.a, ID.b]);
    expect(await b.processCommit(commit)).toEqual({ epoch: 3n, added: [], removed: [ID.c], committer: ID.a, removedMe: false });
    expect(await c.processCommit(commit)).toEqual({ epoch: 3n, added: [], removed: [ID.c], committer: ID.a, removedMe: true });
    expect(c.active).toBe(false);
    expect(c.epoch).toBe(2n);
    await expect(c.encrypt(text('still here?'))).rejects.toThrow(/no longer a member/);

    // Messages encrypted before the commit are still readable by everyone who was a member then.
    expect(str((await b.decrypt(inFlight)).plaintext)).toBe('sent at epoch 2');
    expect(str((await c.decrypt(inFlight)).plaintext)).toBe('sent at epoch 2');

    const afterRemoval = await a.encrypt(text('carol is gone'));
    expect(str((await b.decrypt(afterRemoval)).plaintext)).toBe('carol is gone');
    expect(await refusal(c.decrypt(afterRemoval))).toBe('wrong-epoch');

    const d = await addMember(a, dave as MlsIdentity, [b]);
    expect(d.members().map((m) => m.identity)).toEqual([ID.a, ID.b, ID.d]);
    expect(await refusal(d.decrypt(afterRemoval))).toBe('wrong-epoch');
    expect(await refusal(d.decrypt(inFlight))).toBe('wrong-epoch');
    await roundTrip(a, d, 'welcome dave');
    await roundTrip(b, d, 'hi dave');
    await roundTrip(d, b, 'hi bob');

    await expect(a.remove([ID.o])).rejects.toThrow(ID.o);
    await expect(a.remove([ID.a])).rejects.toThrow(/ourselves/);
    expect(a.epoch).toBe(4n);
  });

  it('keeps receive keys for 4 past epochs and refuses older ones', async () => {
    const { a, b } = await pair();
    const early = await a.encrypt(text('early-1'));
    const early2 = await a.encrypt(text('early-2'));
    for (let i = 0; i < 4; i++) await b.processCommit((await a.update()).commit);
    expect(b.epoch).toBe(5n);
    expect(await b.decrypt(early)).toMatchObject({ plaintext: text('early-1'), epoch: 1n, sender: ID.a });
    await b.processCommit((await a.update()).commit);
    expect(await refusal(b.decrypt(early2))).toBe('wrong-epoch');
    await roundTrip(a, b, 'current epoch');
  });
});

describe('MlsGroup: welcomes', () => {
  it('refuses a welcome made for another key package, leaving the offered one usable', async () => {
    const { a } = await pair();
    const carol = await MlsIdentity.create(ID.c);
    const kp1 = await carol.newKeyPackage();
    const kp2 = await carol.newKeyPackage();
    const { welcome } = await a.add([kp2.bytes]);
    expect(await refusal(MlsGroup.join(carol, kp1, welcome))).toBe('wrong-key-package');
    expect(await refusal(MlsGroup.join(carol, kp1, text('garbage')))).toBe('malformed');
    const c = await MlsGroup.join(carol, kp2, welcome);
    await roundTrip(a, c, 'joined with kp2');
  });

  it('refuses a welcome into a group whose member has an empty identity (AuthenticationService)', async () => {
    const cs = await rawSuite();
    // A peer not using this wrapper can create such a group; only joiners can catch it.
    const nobody: Credential = { credentialType: 'basic', identity: new Uint8Array() };
    const creator = await generateKeyPackage(nobody, defaultCapabilities(), FOREVER, [], cs);
    const rogue = await createGroup(GROUP, creator.publicPackage, creator.privatePackage, [], cs);
    const bob = await MlsIdentity.create(ID.b);
    const kp = await bob.newKeyPackage();
    const { welcome } = await createCommit(
      { state: rogue, cipherSuite: cs },
      { extraProposals: [{ proposalType: 'add', add: { keyPackage: keyPackageOf(kp.bytes) } }], ratchetTreeExtension: true },
    );
    if (welcome === undefined) throw new Error('expected a welcome');
    const encoded = encodeMlsMessage({ version: 'mls10', wireformat: 'mls_welcome', welcome });
    expect(await refusal(MlsGroup.join(bob, kp, encoded))).toBe('bad-credential');
  });
});

describe('MlsGroup: interop with a plain ts-mls member', () => {
  it('exchanges messages and applies its commits, including ones sent as PublicMessage', async () => {
    const cs = await rawSuite();
    const creator = await generateKeyPackage({ credentialType: 'basic', identity: text(ID.a) }, defaultCapabilities(), FOREVER, [], cs);
    let peer = await createGroup(GROUP, creator.publicPackage, creator.privatePackage, [], cs);
    const bob = await MlsIdentity.create(ID.b);
    const kpB = await bob.newKeyPackage();
    const addB = await createCommit(
      { state: peer, cipherSuite: cs },
      { extraProposals: [{ proposalType: 'add', add: { keyPackage: keyPackageOf(kpB.bytes) } }], ratchetTreeExtension: true },
    );
    peer = addB.newState;
    if (addB.welcome === undefined) throw new Error('expected a welcome');
    const b = await MlsGroup.join(bob, kpB, encodeMlsMessage({ version: 'mls10', wireformat: 'mls_welcome', welcome: addB.welcome }));

    const fromPeer = await createApplicationMessage(peer, text('from plain ts-mls'), cs);
    peer = fromPeer.newState;
    const wire = encodeMlsMessage({ version: 'mls10', wireformat: 'mls_private_message', privateMessage: fromPeer.privateMessage });
    expect(await b.decrypt(wire)).toMatchObject({ plaintext: text('from plain ts-mls'), sender: ID.a, epoch: 1n });

    const carol = await MlsIdentity.create(ID.c);
    const addC = await createCommit(
      { state: peer, cipherSuite: cs },
      {
        extraProposals: [{ proposalType: 'add', add: { keyPackage: keyPackageOf((await carol.newKeyPackage()).bytes) } }],
        wireAsPublicMessage: true,
      },
    );
    peer = addC.newState;
    expect(await b.processCommit(encodeMlsMessage(addC.commit))).toEqual({
      epoch: 2n,
      added: [ID.c],
      removed: [],
      committer: ID.a,
      removedMe: false,
    });

    // A PublicMessage is signed and carries a membership tag (its last bytes) keyed by the epoch.
    const rekey = await createCommit({ state: peer, cipherSuite: cs }, { wireAsPublicMessage: true });
    peer = rekey.newState;
    const rekeyBytes = encodeMlsMessage(rekey.commit);
    expect(await refusal(b.processCommit(flipped(rekeyBytes, rekeyBytes.length - 1)))).toBe('tampered');
    expect(b.epoch).toBe(2n);
    expect((await b.processCommit(rekeyBytes)).epoch).toBe(3n);

    const toPeer = decodeMlsMessage(await b.encrypt(text('from the wrapper')), 0)?.[0];
    if (toPeer?.wireformat !== 'mls_private_message') throw new Error('expected a private message');
    const got = await processPrivateMessage(peer, toPeer.privateMessage, emptyPskIndex, cs);
    expect(got.kind === 'applicationMessage' && str(got.message)).toBe('from the wrapper');
  });
});

describe('MlsGroup: commits from the wrong party', () => {
  it("refuses an outsider's commit for a group with the same id and keeps the state", async () => {
    const { a, b } = await pair();
    const outsider = await MlsIdentity.create(ID.o);
    const o = await MlsGroup.create(outsider, GROUP);
    const { commit: atEpoch0 } = await o.add([(await (await MlsIdentity.create(ID.d)).newKeyPackage()).bytes]);
    expect(await refusal(b.processCommit(atEpoch0))).toBe('wrong-epoch');
    // Same group id and epoch: the outsider lacks the epoch's keys, so it does not even decrypt.
    const { commit: atEpoch1 } = await o.update();
    expect(await refusal(b.processCommit(atEpoch1))).toBe('tampered');
    expect(b.epoch).toBe(1n);
    expect(b.members().map((m) => m.identity)).toEqual([ID.a, ID.b]);
    await roundTrip(a, b, 'unaffected');
    await roundTrip(b, a, 'unaffected too');
  });

  it('refuses a commit from a member outside allowedCommitters, then accepts it without the restriction', async () => {
    const { a, b } = await pair();
    const c = await addMember(a, await MlsIdentity.create(ID.c), [b]);
    const { commit } = await b.remove([ID.c]);
    expect(await refusal(a.processCommit(commit, { allowedCommitters: [ID.a] }))).toBe('not-member');
    expect(await refusal(c.processCommit(commit, { allowedCommitters: [ID.a] }))).toBe('not-member');
    expect(a.epoch).toBe(2n);
    expect(a.members().map((m) => m.identity)).toEqual([ID.a, ID.b, ID.c]);
    await roundTrip(c, a, 'c still in at epoch 2');

    expect(await a.processCommit(commit, { allowedCommitters: [ID.a, ID.b] })).toEqual({
      epoch: 3n,
      added: [],
      removed: [ID.c],
      committer: ID.b,
      removedMe: false,
    });
    await roundTrip(b, a, 'b committed');
    expect(await refusal(a.processCommit(commit))).toBe('wrong-epoch');
  });
});

describe('keyPackageIdentity', () => {
  it('returns the identity of a valid key package and refuses damaged ones', async () => {
    const bob = await MlsIdentity.create(ID.b);
    const { bytes } = await bob.newKeyPackage();
    expect(await keyPackageIdentity(bytes)).toBe(ID.b);

    expect(await refusal(keyPackageIdentity(bytes.subarray(0, bytes.length - 10)))).toBe('malformed');
    expect(await refusal(keyPackageIdentity(bytes.subarray(0, 3)))).toBe('malformed');
    expect(await refusal(keyPackageIdentity(new Uint8Array([...bytes, 0])))).toBe('malformed');
    // The key package signature is its last field.
    expect(await refusal(keyPackageIdentity(flipped(bytes, bytes.length - 1)))).toBe('tampered');
    const idAt = Buffer.from(bytes).indexOf(Buffer.from(ID.b));
    expect(await refusal(keyPackageIdentity(flipped(bytes, idAt + 10)))).toBe('tampered');

    const { a } = await pair();
    const welcome = (await a.add([(await bob.newKeyPackage()).bytes])).welcome;
    expect(await refusal(keyPackageIdentity(welcome))).toBe('malformed');
  });

  it('refuses non-basic and empty credentials, and add() refuses what it refuses without changing the group', async () => {
    const cs = await rawSuite();
    const encode = async (credential: Credential): Promise<Uint8Array> => {
      const kp = await generateKeyPackage(credential, defaultCapabilities(), FOREVER, [], cs);
      return encodeMlsMessage({ version: 'mls10', wireformat: 'mls_key_package', keyPackage: kp.publicPackage });
    };
    const empty = await encode({ credentialType: 'basic', identity: new Uint8Array() });
    const x509 = await encode({ credentialType: 'x509', certificates: [text('not really a certificate')] });
    expect(await refusal(keyPackageIdentity(empty))).toBe('bad-credential');
    expect(await refusal(keyPackageIdentity(x509))).toBe('bad-credential');

    const { a, b } = await pair();
    expect(await refusal(a.add([empty]))).toBe('bad-credential');
    const carol = await MlsIdentity.create(ID.c);
    const good = (await carol.newKeyPackage()).bytes;
    expect(await refusal(a.add([good, flipped(good, good.length - 1)]))).toBe('tampered');
    expect(a.epoch).toBe(1n);
    expect(a.members()).toHaveLength(2);
    await roundTrip(a, b, 'group unchanged');
  });
});
