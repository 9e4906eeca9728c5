// End-to-end encryption for SDK sessions: a small, typed wrapper around ts-mls (RFC 9420 MLS).
//
// The session layer sees opaque byte strings (key packages, welcomes, commits, ciphertexts) that it
// carries over the data plane, plus one error type, MlsRefused, whose `reason` it logs and counts.
// Everything here is per-group state; the routing nodes never see keys.

// Runtime values come from ts-mls's per-module subpaths (all listed in its package "exports"), never
// from the package index: the index also loads ts-mls's noble crypto provider, which statically
// imports @noble/hashes — an optional peer this project does not install — so `import 'ts-mls'`
// throws ERR_MODULE_NOT_FOUND at load. Type-only imports from the index are erased and safe.
//
// A few of these modules are not part of ts-mls's @public surface; the index offers no way to verify
// a key package outside a commit, compute a KeyPackageRef, learn which member sent an application
// message, or tell its error kinds apart. test/mls-group.test.ts pins the behaviour relied on, so a
// ts-mls upgrade that changes it fails there rather than silently misreporting.
import { webcrypto } from 'node:crypto';
import type {
  AuthenticationService,
  CiphersuiteImpl,
  ClientConfig,
  ClientState,
  Credential,
  IncomingMessageCallback,
  KeyPackage,
  KeyRetentionConfig,
  MLSMessage,
  PrivateKeyPackage,
  PrivateMessage,
  Proposal,
  RatchetTree,
  Signature,
  Welcome,
} from 'ts-mls';
import { createGroup, joinGroup } from 'ts-mls/clientState.js';
import { createCommit } from 'ts-mls/createCommit.js';
import { createApplicationMessage } from 'ts-mls/createMessage.js';
import { getCiphersuiteFromName } from 'ts-mls/crypto/ciphersuite.js';
import { getCiphersuiteImpl } from 'ts-mls/crypto/getCiphersuiteImpl.js';
import { defaultCapabilities } from 'ts-mls/defaultCapabilities.js';
import { generateKeyPackageWithKey, makeKeyPackageRef, verifyKeyPackage } from 'ts-mls/keyPackage.js';
import { defaultKeyPackageEqualityConfig } from 'ts-mls/keyPackageEqualityConfig.js';
import { verifyLeafNodeSignatureKeyPackage } from 'ts-mls/leafNode.js';
import { defaultLifetimeConfig } from 'ts-mls/lifetimeConfig.js';
import { decodeMlsMessage, encodeMlsMessage } from 'ts-mls/message.js';
import { unprotectPrivateMessage } from 'ts-mls/messageProtection.js';
import { CryptoError, CryptoVerificationError, ValidationError } from 'ts-mls/mlsError.js';
import { defaultPaddingConfig } from 'ts-mls/paddingConfig.js';
import { processPrivateMessage, processPublicMessage } from 'ts-mls/processMessages.js';
import { emptyPskIndex } from 'ts-mls/pskIndex.js';
import { toBufferSource, zeroOutUint8Array } from 'ts-mls/util/byteArray.js';

export const MLS_CIPHERSUITE = 'MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519';

/** Why an incoming MLS input was refused; the session layer logs and counts these. */
export type MlsRefusal =
  | 'malformed' // bytes do not decode as the expected MLS message
  | 'wrong-group' // a message for another group id
  | 'wrong-epoch' // ciphertext/commit for an epoch we do not have keys for (older than retained, or newer)
  | 'epoch-ahead' // specifically: a message from an epoch newer than ours (caller may retry after the next commit)
  | 'replay' // the key for that generation was already used (a replayed ciphertext)
  | 'tampered' // AEAD or signature check failed
  | 'not-member' // a commit/message from someone who is not a member / not the allowed committer
  | 'wrong-key-package' // a welcome that is not for the key package we offered
  | 'bad-credential'; // credential not basic, or identity empty / not what was expected

export class MlsRefused extends Error {
  readonly reason: MlsRefusal;

  constructor(reason: MlsRefusal, detail: string, options?: { cause?: unknown }) {
    super(`MLS input refused (${reason}): ${detail}`, options);
    this.name = 'MlsRefused';
    this.reason = reason;
  }
}

/** Default validity of a key package we issue; see MlsIdentity.newKeyPackage. */
export const DEFAULT_KEY_PACKAGE_LIFETIME_S = 7 * 24 * 3600;
// Hosts' clocks disagree; a key package must not be refused by a peer whose clock is a bit behind.
const KEY_PACKAGE_CLOCK_SKEW_S = 3600;

/**
 * Receive-side key retention.
 *
 * Generations: the session layer decrypts before it reorders, and loss plus retransmission means
 * ciphertext N+1 routinely arrives before N. With 1024 retained (and 1024 forward ratchet steps
 * allowed), any arrival order within a window of 1024 messages per sender decrypts: message N+1024
 * may be decrypted first and N afterwards. Further out of order the older key is already evicted
 * and decrypt() reports 'replay' (ts-mls cannot tell eviction from reuse); further ahead it reports
 * 'wrong-epoch' (no key for it, and ratcheting further would let one member make us burn CPU).
 *
 * Epochs: messages encrypted just before a commit are still in flight when we apply it, so the
 * receive keys of the 4 previous epochs are kept; older epochs are refused with 'wrong-epoch'.
 *
 * Cost: up to 1024 × 32-byte secrets per sender per retained epoch.
 */
export const MLS_KEY_RETENTION: Readonly<KeyRetentionConfig> = Object.freeze({
  retainKeysForGenerations: 1024,
  maximumForwardRatchetSteps: 1024,
  retainKeysForEpochs: 4,
});

const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/** The SPIFFE ID in a basic credential, or why the credential is unacceptable. */
function credentialProblem(credential: Credential): string | undefined {
  if (credential.credentialType !== 'basic') return `credential type ${credential.credentialType} is not basic`;
  if (credential.identity.length === 0) return 'credential identity is empty';
  try {
    utf8.decode(credential.identity);
  } catch {
    return 'credential identity is not UTF-8';
  }
  return undefined;
}

function identityOf(credential: Credential): string {
  const problem = credentialProblem(credential);
  if (problem !== undefined) throw new MlsRefused('bad-credential', problem);
  // credentialProblem has established both the type and the encoding.
  return utf8.decode((credential as { identity: Uint8Array }).identity);
}

// ts-mls consults this for every leaf it accepts (added key packages, committers' new leaf nodes, the
// ratchet tree in a welcome). Throwing rather than returning false carries our reason out through
// ts-mls, which would otherwise turn it into an anonymous "Could not validate credential".
const basicCredentialsOnly: AuthenticationService = {
  async validateCredential(credential: Credential): Promise<boolean> {
    const problem = credentialProblem(credential);
    if (problem !== undefined) throw new MlsRefused('bad-credential', problem);
    return true;
  },
};

const clientConfig: ClientConfig = {
  keyRetentionConfig: MLS_KEY_RETENTION,
  lifetimeConfig: defaultLifetimeConfig,
  keyPackageEqualityConfig: defaultKeyPackageEqualityConfig,
  // Pads short messages to 256 bytes so ciphertext length does not reveal short-message content.
  paddingConfig: defaultPaddingConfig,
  authService: basicCredentialsOnly,
};

/**
 * ts-mls's WebCrypto Ed25519 imports the key again for every sign and verify; importing a PKCS#8
 * private key costs more than signing, and every application message is signed by its sender and
 * verified by each receiver. Caching the imported key per key buffer roughly halves encrypt().
 * Entries die with the buffers (the group state's signing key, the ratchet tree's leaf keys), and the
 * stored copy makes a buffer whose bytes were changed miss rather than use a stale key.
 */
function cachingEd25519(base: Signature): Signature {
  const { subtle } = webcrypto;
  const imported = new WeakMap<Uint8Array, { bytes: Uint8Array; key: webcrypto.CryptoKey }>();
  async function importCached(bytes: Uint8Array, format: 'pkcs8' | 'raw', usage: webcrypto.KeyUsage): Promise<webcrypto.CryptoKey> {
    const hit = imported.get(bytes);
    if (hit !== undefined && bytesEqual(hit.bytes, bytes)) return hit.key;
    const copy = bytes.slice();
    const key = await subtle.importKey(format, copy, 'Ed25519', false, [usage]);
    imported.set(bytes, { bytes: copy, key });
    return key;
  }
  return {
    keygen: () => base.keygen(),
    async sign(signKey, message) {
      // Our keygen yields PKCS#8 (48 bytes); anything else goes through ts-mls's own conversion.
      if (signKey.length !== ED25519_PKCS8_LENGTH) return base.sign(signKey, message);
      const key = await importCached(signKey, 'pkcs8', 'sign');
      return new Uint8Array(await subtle.sign('Ed25519', key, toBufferSource(message)));
    },
    async verify(publicKey, message, signature) {
      const key = await importCached(publicKey, 'raw', 'verify');
      return subtle.verify('Ed25519', key, toBufferSource(signature), toBufferSource(message));
    },
  };
}
const ED25519_PKCS8_LENGTH = 48;

let suitePromise: Promise<CiphersuiteImpl> | undefined;
function suite(): Promise<CiphersuiteImpl> {
  suitePromise ??= getCiphersuiteImpl(getCiphersuiteFromName(MLS_CIPHERSUITE)).then((cs) => ({
    ...cs,
    signature: cachingEd25519(cs.signature),
  }));
  return suitePromise;
}

// Advertising x509 would invite peers to add x509 leaves that our AuthenticationService then refuses.
function basicCapabilities(): ReturnType<typeof defaultCapabilities> {
  const caps = defaultCapabilities();
  return { ...caps, credentials: caps.credentials.filter((c) => c !== 'x509') };
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function zeroAll(secrets: readonly Uint8Array[]): void {
  for (const s of secrets) zeroOutUint8Array(s);
}

function decodeMessage(bytes: Uint8Array, expected: string): MLSMessage {
  let decoded: [MLSMessage, number] | undefined;
  try {
    decoded = decodeMlsMessage(bytes, 0);
  } catch (err) {
    throw new MlsRefused('malformed', `does not decode as an MLS ${expected}: ${errorText(err)}`, { cause: err });
  }
  if (decoded === undefined) throw new MlsRefused('malformed', `does not decode as an MLS ${expected}`);
  const [message, length] = decoded;
  // Trailing bytes would be unauthenticated payload riding along with an authenticated message.
  if (length !== bytes.length) {
    throw new MlsRefused('malformed', `${bytes.length - length} trailing bytes after the MLS ${expected}`);
  }
  if (message.version !== 'mls10') throw new MlsRefused('malformed', `protocol version ${message.version}`);
  return message;
}

/**
 * An AEAD or HPKE open that failed: ts-mls wraps every failure of those in CryptoError (for AES-GCM the
 * underlying cause is WebCrypto's OperationError, checked too in case a path does not wrap it). The
 * keys involved are derived by us, so in practice the cause is a ciphertext, tag, or AAD that is not
 * what was sealed — or a sealer that did not have the keys.
 */
function isDecryptionFailure(err: unknown): boolean {
  return err instanceof CryptoError || (err instanceof Error && err.name === 'OperationError');
}

/**
 * Maps a failure inside ts-mls while processing someone else's bytes to a refusal. ts-mls signals
 * most conditions only by error class and message; the messages matched here are pinned by tests.
 */
function refusalFromMls(err: unknown, what: string): MlsRefused {
  if (err instanceof MlsRefused) return err;
  const detail = `${what}: ${errorText(err)}`;
  if (isDecryptionFailure(err) || err instanceof CryptoVerificationError) return new MlsRefused('tampered', detail, { cause: err });
  if (err instanceof ValidationError) {
    if (err.message === 'Desired gen in the past') return new MlsRefused('replay', detail, { cause: err });
    if (err.message === 'Desired generation too far in the future') return new MlsRefused('wrong-epoch', detail, { cause: err });
    if (err.message === 'Unable to find leafnode for leafIndex') return new MlsRefused('not-member', detail, { cause: err });
  }
  // Everything else is input ts-mls found structurally or semantically invalid (CodecError,
  // ValidationError, an InternalError from a path that does not fit our tree) or that its decoders
  // tripped over (RangeError). Counting it as 'malformed' keeps hostile bytes from escaping as
  // unclassified exceptions.
  return new MlsRefused('malformed', detail, { cause: err });
}

/** Verifies a key package on its own (outside any group) and returns its credential identity. */
async function validateKeyPackage(kp: KeyPackage, cs: CiphersuiteImpl): Promise<string> {
  if (kp.version !== 'mls10') throw new MlsRefused('malformed', `key package version ${kp.version}`);
  if (kp.cipherSuite !== MLS_CIPHERSUITE) {
    throw new MlsRefused('malformed', `key package cipher suite ${kp.cipherSuite}, expected ${MLS_CIPHERSUITE}`);
  }
  if (kp.leafNode.leafNodeSource !== 'key_package') {
    throw new MlsRefused('malformed', `key package leaf node source ${kp.leafNode.leafNodeSource}`);
  }
  if (bytesEqual(kp.initKey, kp.leafNode.hpkePublicKey)) {
    throw new MlsRefused('malformed', 'key package init key equals its leaf encryption key');
  }
  if (!(await verifyKeyPackage(kp, cs.signature))) throw new MlsRefused('tampered', 'key package signature invalid');
  if (!(await verifyLeafNodeSignatureKeyPackage(kp.leafNode, cs.signature))) {
    throw new MlsRefused('tampered', 'key package leaf node signature invalid');
  }
  const identity = identityOf(kp.leafNode.credential);
  // An expired key package may have had its private keys discarded, so a welcome to it could never be
  // read; a not-yet-valid one means a clock far off. Either way the binding is not usable now.
  const now = BigInt(Math.floor(Date.now() / 1000));
  const { notBefore, notAfter } = kp.leafNode.lifetime;
  if (now < notBefore || now > notAfter) {
    throw new MlsRefused('bad-credential', `key package of ${identity} is not valid now (${notBefore}..${notAfter})`);
  }
  return identity;
}

function decodeKeyPackage(bytes: Uint8Array): KeyPackage {
  const message = decodeMessage(bytes, 'key package');
  if (message.wireformat !== 'mls_key_package') {
    throw new MlsRefused('malformed', `expected an MLS key package, got ${message.wireformat}`);
  }
  return message.keyPackage;
}

/**
 * Validates an encoded key package someone sent (signature, ciphersuite, lifetime) and returns its
 * credential identity. Throws MlsRefused('malformed' | 'tampered' | 'bad-credential'); an expired or
 * not-yet-valid key package is 'bad-credential'.
 */
export async function keyPackageIdentity(bytes: Uint8Array): Promise<string> {
  return validateKeyPackage(decodeKeyPackage(bytes), await suite());
}

export interface MlsKeyPackage {
  /** The encoded MLSMessage(key_package) to send. */
  readonly bytes: Uint8Array;
}

interface OfferedKeyPackage {
  readonly owner: MlsIdentity;
  readonly publicPackage: KeyPackage;
  readonly privatePackage: PrivateKeyPackage;
}

// Private halves live here, keyed by the handle given out, so the handle itself can be passed
// around (and logged) without exposing them, and so only key packages we issued can be joined with.
const offered = new WeakMap<MlsKeyPackage, OfferedKeyPackage>();

/** Claims a key package for one use; a join that is refused hands it back with releaseOffered. */
function takeOffered(kp: MlsKeyPackage, me: MlsIdentity): OfferedKeyPackage {
  const entry = offered.get(kp);
  if (entry === undefined) throw new Error('key package was not issued by MlsIdentity.newKeyPackage() or was already used');
  if (entry.owner !== me) throw new Error(`key package belongs to ${entry.owner.identity}, not ${me.identity}`);
  offered.delete(kp);
  return entry;
}

function releaseOffered(kp: MlsKeyPackage, entry: OfferedKeyPackage): void {
  offered.set(kp, entry);
}

/** Ends a key package's one use: its init key must not decrypt anything else. */
function retireOffered(entry: OfferedKeyPackage): void {
  zeroOutUint8Array(entry.privatePackage.initPrivateKey);
}

/** One member-to-be: a signature key pair and a basic credential whose identity is `identity` (the app's SPIFFE ID). */
export class MlsIdentity {
  readonly identity: string;
  readonly #signKey: Uint8Array;
  readonly #publicKey: Uint8Array;

  private constructor(identity: string, keys: { signKey: Uint8Array; publicKey: Uint8Array }) {
    this.identity = identity;
    this.#signKey = keys.signKey;
    this.#publicKey = keys.publicKey;
  }

  static async create(identity: string): Promise<MlsIdentity> {
    // Peers refuse these (basicCredentialsOnly), so refusing here keeps the mistake local and early.
    if (identity.length === 0) throw new Error('MLS identity must not be empty');
    const cs = await suite();
    return new MlsIdentity(identity, await cs.signature.keygen());
  }

  /** The Ed25519 public key other members see in our leaf; stable across key packages. */
  get signaturePublicKey(): Uint8Array {
    return this.#publicKey.slice();
  }

  /**
   * A fresh single-use key package (private keys kept inside the returned object). Valid from an hour
   * ago (peer clock skew) until `lifetimeSeconds` from now; adders refuse it after that.
   */
  async newKeyPackage(lifetimeSeconds: number = DEFAULT_KEY_PACKAGE_LIFETIME_S): Promise<MlsKeyPackage> {
    if (!Number.isSafeInteger(lifetimeSeconds) || lifetimeSeconds <= 0) {
      throw new RangeError(`key package lifetime must be a positive integer of seconds, got ${lifetimeSeconds}`);
    }
    const cs = await suite();
    const now = BigInt(Math.floor(Date.now() / 1000));
    const { publicPackage, privatePackage } = await generateKeyPackageWithKey(
      { credentialType: 'basic', identity: utf8Encoder.encode(this.identity) },
      basicCapabilities(),
      { notBefore: now - BigInt(KEY_PACKAGE_CLOCK_SKEW_S), notAfter: now + BigInt(lifetimeSeconds) },
      [],
      { signKey: this.#signKey, publicKey: this.#publicKey },
      cs,
    );
    const handle: MlsKeyPackage = Object.freeze({
      bytes: encodeMlsMessage({ version: 'mls10', wireformat: 'mls_key_package', keyPackage: publicPackage }),
    });
    offered.set(handle, { owner: this, publicPackage, privatePackage });
    return handle;
  }
}

export interface MlsMember {
  identity: string;
  leafIndex: number;
}

export interface CommitEffect {
  /** The group's epoch after the commit (when removedMe, our own state stays one below). */
  epoch: bigint;
  added: string[];
  removed: string[];
  committer: string;
  removedMe: boolean;
}

function leafIdentity(tree: RatchetTree, leafIndex: number): string | undefined {
  const node = tree[leafIndex * 2];
  if (node?.nodeType !== 'leaf') return undefined;
  return credentialProblem(node.leaf.credential) === undefined ? identityOf(node.leaf.credential) : undefined;
}

function membersOf(tree: RatchetTree): MlsMember[] {
  const members: MlsMember[] = [];
  for (let nodeIndex = 0; nodeIndex < tree.length; nodeIndex += 2) {
    const identity = leafIdentity(tree, nodeIndex / 2);
    if (identity !== undefined) members.push({ identity, leafIndex: nodeIndex / 2 });
  }
  return members;
}

async function joinWith(entry: OfferedKeyPackage, welcome: Uint8Array, cs: CiphersuiteImpl): Promise<ClientState> {
  const message = decodeMessage(welcome, 'welcome');
  if (message.wireformat !== 'mls_welcome') {
    throw new MlsRefused('malformed', `expected an MLS welcome, got ${message.wireformat}`);
  }
  const w: Welcome = message.welcome;
  if (w.cipherSuite !== MLS_CIPHERSUITE) throw new MlsRefused('malformed', `welcome cipher suite ${w.cipherSuite}`);
  // Checked up front because ts-mls reports it only as a generic ValidationError.
  const ref = await makeKeyPackageRef(entry.publicPackage, cs.hash);
  if (!w.secrets.some((s) => bytesEqual(s.newMember, ref))) {
    throw new MlsRefused('wrong-key-package', `welcome carries no secrets for ${entry.owner.identity}'s offered key package`);
  }
  try {
    return await joinGroup(w, entry.publicPackage, entry.privatePackage, emptyPskIndex, cs, undefined, undefined, clientConfig);
  } catch (err) {
    throw refusalFromMls(err, 'welcome');
  }
}

export class MlsGroup {
  readonly groupId: Uint8Array;
  readonly #me: MlsIdentity;
  readonly #cs: CiphersuiteImpl;
  #state: ClientState;
  // ts-mls returns a new state from every operation, including decrypt (ratchet advance). Two
  // overlapping operations would both start from the same state and one update would be lost (a
  // reused generation, a forgotten commit), so every operation runs after the previous one settles.
  #tail: Promise<unknown> = Promise.resolve();

  private constructor(me: MlsIdentity, cs: CiphersuiteImpl, state: ClientState) {
    this.#me = me;
    this.#cs = cs;
    this.#state = state;
    this.groupId = state.groupContext.groupId.slice();
  }

  /** A new group with `me` as its only member (the creator / moderator). */
  static async create(me: MlsIdentity, groupId: Uint8Array): Promise<MlsGroup> {
    const cs = await suite();
    const kp = await me.newKeyPackage();
    const entry = takeOffered(kp, me);
    // Copied so the caller reusing its buffer cannot change our group id under us.
    const state = await createGroup(groupId.slice(), entry.publicPackage, entry.privatePackage, [], cs, clientConfig);
    // A creator never receives a welcome, so its init key has no use at all.
    retireOffered(entry);
    return new MlsGroup(me, cs, state);
  }

  /**
   * Joins from an encoded Welcome (which must carry the ratchet tree, see add()); `kp` is the key
   * package we offered. Throws MlsRefused('wrong-key-package') when the welcome has no secrets for kp,
   * 'malformed' on bad bytes, 'tampered' when it does not decrypt or verify, 'bad-credential' when a
   * member's credential is unacceptable. A refused welcome leaves kp usable.
   */
  static async join(me: MlsIdentity, kp: MlsKeyPackage, welcome: Uint8Array): Promise<MlsGroup> {
    const cs = await suite();
    const entry = takeOffered(kp, me);
    let state: ClientState;
    try {
      state = await joinWith(entry, welcome, cs);
    } catch (err) {
      releaseOffered(kp, entry);
      throw err;
    }
    retireOffered(entry);
    return new MlsGroup(me, cs, state);
  }

  get epoch(): bigint {
    return this.#state.groupContext.epoch;
  }

  get myIdentity(): string {
    return this.#me.identity;
  }

  /** False once a processed commit removed us: we can still decrypt older epochs but not send. */
  get active(): boolean {
    return this.#state.groupActiveState.kind === 'active';
  }

  members(): MlsMember[] {
    return membersOf(this.#state.ratchetTree);
  }

  #serialize<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(op);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  #requireActive(action: string): void {
    if (!this.active) throw new Error(`cannot ${action}: ${this.#me.identity} is no longer a member of this group`);
  }

  /** Applies a commit we created and hands out its encoding; the old epoch's secrets go. */
  #adoptOwnCommit(result: Awaited<ReturnType<typeof createCommit>>): Uint8Array {
    this.#state = result.newState;
    zeroAll(result.consumed);
    return encodeMlsMessage(result.commit);
  }

  /**
   * Adds members from their encoded key packages: commit (for the existing members, may be
   * empty-audience when the group only had me) and welcome (for the new ones, with the ratchet tree
   * included so joiners need nothing else). Applies the commit to this group's state. Each key
   * package is validated as keyPackageIdentity() does (throws MlsRefused) before anything changes.
   */
  add(keyPackages: Uint8Array[]): Promise<{ commit: Uint8Array; welcome: Uint8Array }> {
    return this.#serialize(async () => {
      this.#requireActive('add members');
      if (keyPackages.length === 0) throw new Error('add() needs at least one key package');
      const proposals: Proposal[] = [];
      for (const bytes of keyPackages) {
        const keyPackage = decodeKeyPackage(bytes);
        await validateKeyPackage(keyPackage, this.#cs);
        proposals.push({ proposalType: 'add', add: { keyPackage } });
      }
      let result: Awaited<ReturnType<typeof createCommit>>;
      try {
        result = await createCommit(
          { state: this.#state, cipherSuite: this.#cs },
          { extraProposals: proposals, ratchetTreeExtension: true },
        );
      } catch (err) {
        throw err instanceof MlsRefused ? err : new Error(`add failed: ${errorText(err)}`, { cause: err });
      }
      if (result.welcome === undefined) throw new Error('add produced no welcome');
      const welcome = encodeMlsMessage({ version: 'mls10', wireformat: 'mls_welcome', welcome: result.welcome });
      return { commit: this.#adoptOwnCommit(result), welcome };
    });
  }

  /**
   * Removes the members with these credential identities (every leaf carrying one, should an identity
   * be in the group twice); applies it here; returns the commit for the remaining members. Unknown
   * identity → Error naming it. We cannot remove ourselves this way (MLS forbids a committer removing
   * its own leaf).
   */
  remove(identities: string[]): Promise<{ commit: Uint8Array }> {
    return this.#serialize(async () => {
      this.#requireActive('remove members');
      if (identities.length === 0) throw new Error('remove() needs at least one identity');
      const myLeaf = this.#state.privatePath.leafIndex;
      const members = this.members();
      const leaves = new Set<number>();
      for (const identity of new Set(identities)) {
        const matching = members.filter((m) => m.identity === identity && m.leafIndex !== myLeaf);
        if (matching.length === 0) {
          throw new Error(
            identity === this.#me.identity
              ? `cannot remove ourselves (${identity}) from the group`
              : `cannot remove ${identity}: not a member of this group`,
          );
        }
        for (const m of matching) leaves.add(m.leafIndex);
      }
      const proposals: Proposal[] = [...leaves].map((removed) => ({ proposalType: 'remove', remove: { removed } }));
      let result: Awaited<ReturnType<typeof createCommit>>;
      try {
        result = await createCommit({ state: this.#state, cipherSuite: this.#cs }, { extraProposals: proposals });
      } catch (err) {
        throw new Error(`remove failed: ${errorText(err)}`, { cause: err });
      }
      return { commit: this.#adoptOwnCommit(result) };
    });
  }

  /**
   * An empty commit: fresh leaf and path keys for us and fresh epoch secrets for everyone, so a key
   * leaked before it protects nothing after (post-compromise security). Members apply it with
   * processCommit like any other commit.
   */
  update(): Promise<{ commit: Uint8Array }> {
    return this.#serialize(async () => {
      this.#requireActive('update keys');
      let result: Awaited<ReturnType<typeof createCommit>>;
      try {
        result = await createCommit({ state: this.#state, cipherSuite: this.#cs });
      } catch (err) {
        throw new Error(`update failed: ${errorText(err)}`, { cause: err });
      }
      return { commit: this.#adoptOwnCommit(result) };
    });
  }

  /**
   * Applies a commit from another member. `allowedCommitters` (identities), when given, refuses
   * commits from anyone else ('not-member'). Returns what changed; removedMe=true when it removed us
   * (our state then stays at the old epoch and can no longer decrypt the group's new messages).
   *
   * Refusals: 'wrong-group'; 'wrong-epoch' for a commit of an earlier epoch (including our own commit
   * echoed back); 'epoch-ahead' for a later one; 'not-member' for a non-member sender type or a
   * committer outside allowedCommitters; 'tampered' when it does not decrypt/verify, which is also
   * what a commit made by an outsider (who lacks the epoch's keys) produces; 'malformed' otherwise.
   * A refused commit leaves the state unchanged.
   */
  processCommit(commit: Uint8Array, opts?: { allowedCommitters?: string[] }): Promise<CommitEffect> {
    return this.#serialize(async () => {
      const message = decodeMessage(commit, 'commit');
      let framing: { groupId: Uint8Array; epoch: bigint; contentType: string };
      if (message.wireformat === 'mls_private_message') {
        framing = message.privateMessage;
      } else if (message.wireformat === 'mls_public_message') {
        const { content } = message.publicMessage;
        // Only members commit in our sessions: no external joins, no external senders.
        if (content.sender.senderType !== 'member') {
          throw new MlsRefused('not-member', `commit from a ${content.sender.senderType} sender`);
        }
        framing = content;
      } else {
        throw new MlsRefused('malformed', `expected an MLS commit, got ${message.wireformat}`);
      }
      if (framing.contentType !== 'commit') throw new MlsRefused('malformed', `expected a commit, got ${framing.contentType}`);
      this.#checkGroupAndEpoch(framing, 'commit', false);

      const before = this.#state;
      const allowed = opts?.allowedCommitters === undefined ? undefined : new Set(opts.allowedCommitters);
      let committer: string | undefined;
      let refusal: MlsRefused | undefined;
      const added: string[] = [];
      const removed: string[] = [];
      // ts-mls names the committer only here, before anything is applied, which is where a commit
      // from the wrong member has to be stopped.
      const inspect: IncomingMessageCallback = (incoming) => {
        if (incoming.kind !== 'commit') {
          refusal = new MlsRefused('malformed', 'a standalone proposal, not a commit');
          return 'reject';
        }
        committer = incoming.senderLeafIndex === undefined ? undefined : leafIdentity(before.ratchetTree, incoming.senderLeafIndex);
        if (committer === undefined) {
          refusal = new MlsRefused('not-member', 'commit sender is not a member of the group');
          return 'reject';
        }
        if (allowed !== undefined && !allowed.has(committer)) {
          refusal = new MlsRefused('not-member', `${committer} is not allowed to commit to this group`);
          return 'reject';
        }
        for (const { proposal } of incoming.proposals) {
          if (proposal.proposalType === 'add') added.push(identityOf(proposal.add.keyPackage.leafNode.credential));
          else if (proposal.proposalType === 'remove') {
            removed.push(leafIdentity(before.ratchetTree, proposal.remove.removed) ?? `leaf ${proposal.remove.removed}`);
          }
        }
        return 'accept';
      };

      let result: { newState: ClientState; consumed: Uint8Array[] };
      try {
        result =
          message.wireformat === 'mls_private_message'
            ? await processPrivateMessage(before, message.privateMessage, emptyPskIndex, this.#cs, inspect)
            : await processPublicMessage(before, message.publicMessage, emptyPskIndex, this.#cs, inspect);
      } catch (err) {
        throw refusalFromMls(err, 'commit');
      }
      // On reject ts-mls still returns a state (its handshake ratchet advanced); keeping `before`
      // instead means a refused commit changes nothing. Its `consumed` belong to `before`, so they
      // must not be zeroed either.
      if (refusal !== undefined) throw refusal;
      if (committer === undefined) throw new MlsRefused('malformed', 'commit was not presented for inspection');
      this.#state = result.newState;
      zeroAll(result.consumed);
      return {
        epoch: framing.epoch + 1n,
        added,
        removed,
        committer,
        removedMe: result.newState.groupActiveState.kind === 'removedFromGroup',
      };
    });
  }

  /** Encrypts an application message; `aad` is authenticated (not encrypted) and returned by decrypt. */
  encrypt(plaintext: Uint8Array, aad: Uint8Array = new Uint8Array()): Promise<Uint8Array> {
    return this.#serialize(async () => {
      this.#requireActive('encrypt');
      const result = await createApplicationMessage(this.#state, plaintext, this.#cs, aad);
      this.#state = result.newState;
      zeroAll(result.consumed);
      return encodeMlsMessage({ version: 'mls10', wireformat: 'mls_private_message', privateMessage: result.privateMessage });
    });
  }

  /**
   * Decrypts an application message; `sender` is the credential identity of the sending member.
   * Throws MlsRefused with the best-fitting reason. A failed decrypt leaves the state unchanged (a
   * later genuine message still decrypts).
   *
   * Refusals: 'malformed' (not an application PrivateMessage, e.g. a commit — use processCommit);
   * 'wrong-group'; 'epoch-ahead' (newer epoch; retry after processCommit); 'wrong-epoch' (older than the
   * 4 retained epochs, a newer epoch once we have been removed, or more than 1024 generations ahead);
   * 'replay' (that generation's key is gone: already used, or evicted because it is more than 1024
   * generations behind the newest seen); 'tampered' (AEAD or signature check failed).
   */
  decrypt(ciphertext: Uint8Array): Promise<{ plaintext: Uint8Array; aad: Uint8Array; sender: string; epoch: bigint }> {
    return this.#serialize(async () => {
      const message = decodeMessage(ciphertext, 'application message');
      if (message.wireformat !== 'mls_private_message') {
        throw new MlsRefused('malformed', `expected an MLS private message, got ${message.wireformat}`);
      }
      const pm: PrivateMessage = message.privateMessage;
      if (pm.contentType !== 'application') {
        throw new MlsRefused('malformed', `a ${pm.contentType}, not an application message; use processCommit`);
      }
      this.#checkGroupAndEpoch(pm, 'message', true);

      const state = this.#state;
      const past = pm.epoch < state.groupContext.epoch ? state.historicalReceiverData.get(pm.epoch) : undefined;
      if (pm.epoch < state.groupContext.epoch && past === undefined) {
        throw new MlsRefused('wrong-epoch', `no keys retained for epoch ${pm.epoch}, we are at epoch ${state.groupContext.epoch}`);
      }
      const keys = past ?? {
        senderDataSecret: state.keySchedule.senderDataSecret,
        secretTree: state.secretTree,
        ratchetTree: state.ratchetTree,
        groupContext: state.groupContext,
      };

      let unprotected: Awaited<ReturnType<typeof unprotectPrivateMessage>>;
      try {
        unprotected = await unprotectPrivateMessage(
          keys.senderDataSecret,
          pm,
          keys.secretTree,
          keys.ratchetTree,
          keys.groupContext,
          state.clientConfig.keyRetentionConfig,
          this.#cs,
        );
      } catch (err) {
        throw refusalFromMls(err, `message of epoch ${pm.epoch}`);
      }
      const { content } = unprotected;
      if (content.content.contentType !== 'application' || content.content.sender.senderType !== 'member') {
        throw new MlsRefused('malformed', 'decrypted content is not a member application message');
      }
      const sender = leafIdentity(keys.ratchetTree, content.content.sender.leafIndex);
      if (sender === undefined) throw new MlsRefused('not-member', `sender leaf ${content.content.sender.leafIndex} is empty`);

      // Only now, with everything verified, does the ratchet advance; the used key and any evicted
      // ones are then wiped.
      if (past === undefined) {
        this.#state = { ...state, secretTree: unprotected.tree };
      } else {
        const historical = new Map(state.historicalReceiverData);
        historical.set(pm.epoch, { ...past, secretTree: unprotected.tree });
        this.#state = { ...state, historicalReceiverData: historical };
      }
      zeroAll(unprotected.consumed);
      return {
        plaintext: content.content.applicationData,
        aad: pm.authenticatedData.slice(),
        sender,
        epoch: pm.epoch,
      };
    });
  }

  #checkGroupAndEpoch(framing: { groupId: Uint8Array; epoch: bigint }, what: string, pastEpochsOk: boolean): void {
    // Against the state's own copy: `groupId` is handed out and its bytes could be changed by a caller.
    if (!bytesEqual(framing.groupId, this.#state.groupContext.groupId)) throw new MlsRefused('wrong-group', `${what} for another group id`);
    const ours = this.#state.groupContext.epoch;
    if (framing.epoch > ours) {
      // A removed member never catches up, so retrying would be pointless.
      if (!this.active) throw new MlsRefused('wrong-epoch', `${what} of epoch ${framing.epoch}; we were removed at epoch ${ours}`);
      throw new MlsRefused('epoch-ahead', `${what} of epoch ${framing.epoch}, we are at epoch ${ours}`);
    }
    if (framing.epoch < ours && !pastEpochsOk) {
      throw new MlsRefused('wrong-epoch', `${what} of epoch ${framing.epoch}, we are at epoch ${ours}`);
    }
  }
}
