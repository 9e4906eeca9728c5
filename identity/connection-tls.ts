// TLS for one configured connection (a data-plane server, a dialled peer, an app's link, later
// the controller channel and the admin API), built from its `tls` block: plaintext, PEM files
// (reloaded when they change) or a SPIFFE Workload API (SVIDs rotated by the agent).
//
// Who verifies the peer, and where:
// - SPIFFE peers are checked by our X.509-SVID verifier, against the bundle of the trust domain
//   named in the peer's own SPIFFE ID, then authorized as a member of the accepted trust domains
//   (the workload's own plus `ca_source.trust_domains`).
// - Servers ask for a client certificate but let every handshake finish (rejectUnauthorized:
//   false) and verify in the http2 'session' event, synchronously, before any frame is read.
//   Node's own server-side rejection happens at the same point but silently; doing it ourselves
//   lets the refusal carry a reason into the log and the metrics.
// - Clients verify inside Node's checkServerIdentity hook, which runs after OpenSSL accepted the
//   chain (against every bundle we hold) and before 'secureConnect', so nothing is ever written
//   to an unverified server.

import { EventEmitter } from 'node:events';
import { X509Certificate, constants as cryptoConstants } from 'node:crypto';
import { isIP } from 'node:net';
import type { SecureServerOptions } from 'node:http2';
import type { ConnectionOptions, DetailedPeerCertificate, PeerCertificate, TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { TlsSettings } from '../common/tls-config.js';
import { authorizeMemberOf } from './authorizer.js';
import { FileSource } from './file-source.js';
import { parseTrustDomain } from './spiffe-id.js';
import type { SvidVerdict, verifyX509Svid } from './svid-verifier.js';
import type { BundleSource, X509Bundle } from './x509-bundle.js';
import type { X509Source } from './x509-source.js';

export class TlsSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsSetupError';
  }
}

/** Thrown from checkServerIdentity: the refusal was already logged and counted. */
export class PeerRefusedError extends Error {
  readonly code = 'ERR_SLIM_PEER_REFUSED';
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'PeerRefusedError';
  }
}

export type PeerVerdict = { ok: true; id: string } | { ok: false; reason: string; message: string; id?: string };

export interface RefusalEvent {
  direction: 'inbound' | 'outbound';
  reason: string;
  message: string;
  peer: string;
  id?: string;
}

export interface ConnectionTlsOptions {
  logger?: Logger;
  /** Every refused peer, for metrics (already logged). */
  onRefusal?: (e: RefusalEvent) => void;
  /** How long to wait for the Workload API's first SVID. */
  readyTimeoutMs?: number;
}

type Verification = 'spiffe' | 'pki' | 'none';

const verifiedPeers = new WeakMap<object, string>();

/** The X.509-SVID verifier, loaded with the first `spire` source (see ConnectionTls.create). */
let verifier: typeof verifyX509Svid | undefined;

/**
 * Connections sharing a Workload API stream (the seed names one socket in every tls block);
 * the stream closes with the last of them, so a program that closes its connections can exit.
 */
const sourceUsers = new Map<X509Source, number>();

function acquire(src: X509Source): X509Source {
  sourceUsers.set(src, (sourceUsers.get(src) ?? 0) + 1);
  return src;
}

function release(src: X509Source | undefined): void {
  if (!src) return;
  const n = (sourceUsers.get(src) ?? 1) - 1;
  if (n > 0) sourceUsers.set(src, n);
  else {
    sourceUsers.delete(src);
    src.close();
  }
}

/** The SPIFFE ID a TLS socket's peer proved, as recorded when it was verified. */
export function verifiedPeerId(socket: TLSSocket | undefined): string {
  if (!socket) return '';
  const recorded = verifiedPeers.get(socket);
  if (recorded !== undefined) return recorded;
  // Dialled sockets: authorized means our checkServerIdentity (or OpenSSL, for file CAs) passed.
  if (socket.authorized) return spiffeUriSan(socket.getPeerCertificate()) ?? '';
  return '';
}

/** The certificate's single `spiffe://` URI SAN, unverified; undefined if it has not exactly one. */
export function spiffeUriSan(cert: PeerCertificate | undefined): string | undefined {
  if (!cert?.subjectaltname) return undefined;
  const uris = cert.subjectaltname.split(', ').filter((p) => p.startsWith('URI:'));
  return uris.length === 1 && uris[0]!.startsWith('URI:spiffe://') ? uris[0]!.slice(4) : undefined;
}

/** Leaf first, then whatever the peer presented that links up by issuer. */
export function peerChain(cert: DetailedPeerCertificate | PeerCertificate | undefined): Buffer[] {
  const out: Buffer[] = [];
  const seen = new Set<string>();
  let c = cert as DetailedPeerCertificate | undefined;
  while (c?.raw && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256);
    out.push(c.raw);
    c = c.issuerCertificate;
  }
  return out;
}

/** Names Node/OpenSSL verification errors in the verifier's vocabulary, for metrics. */
export function tlsErrorReason(err: unknown): string | undefined {
  const code = (err as { code?: string } | undefined)?.code;
  switch (code) {
    case 'CERT_HAS_EXPIRED':
      return 'expired';
    case 'CERT_NOT_YET_VALID':
      return 'not_yet_valid';
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'CERT_SIGNATURE_FAILURE':
    case 'CERT_UNTRUSTED':
      return 'untrusted_chain';
    case 'INVALID_CA':
      return 'ca_key_usage';
    case 'INVALID_PURPOSE':
      return 'leaf_key_usage';
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return 'hostname_mismatch';
    default:
      return undefined;
  }
}

export class ConnectionTls extends EventEmitter {
  readonly verification: Verification;
  private readonly accepted: ReadonlySet<string>;
  private readonly log: Logger | undefined;
  private readonly onRefusal: ((e: RefusalEvent) => void) | undefined;
  private readonly unsubscribe: (() => void)[] = [];
  private closed = false;
  /** A peer retrying a bad certificate in a loop must not flood the log (metrics count all). */
  private readonly logBudget = new LogBudget(20, 10_000, (n) =>
    this.log?.warn({ tls: this.where, suppressed: n }, `refused ${n} more peers in the last 10 s without logging each (see slim_tls_refusals_total)`),
  );

  private constructor(
    private readonly settings: TlsSettings,
    private readonly where: string,
    private readonly certFiles: FileSource | undefined,
    private readonly caFiles: FileSource | undefined,
    private readonly certSvid: X509Source | undefined,
    private readonly trust: X509Source | undefined,
    trustDomains: string[],
    opts: ConnectionTlsOptions,
  ) {
    super();
    this.log = opts.logger;
    this.onRefusal = opts.onRefusal;
    this.verification = settings.skipVerify ? 'none' : settings.ca?.type === 'spire' ? 'spiffe' : 'pki';
    const own = trust?.svid().id.trustDomain;
    this.accepted = new Set([...(own ? [own] : []), ...trustDomains]);
    const changed = (): void => {
      this.emit('update');
    };
    for (const src of new Set<EventEmitter | undefined>([certFiles, caFiles, certSvid, trust])) {
      if (!src) continue;
      src.on('update', changed);
      this.unsubscribe.push(() => src.off('update', changed));
    }
  }

  /**
   * TLS for a connection, or undefined for plaintext (`insecure: true`). Waits for the Workload
   * API's first SVID when a source is `spire`. Errors name the config key at `where`.
   */
  static async create(settings: TlsSettings, where: string, opts: ConnectionTlsOptions = {}): Promise<ConnectionTls | undefined> {
    if (settings.insecure) return undefined;
    let certFiles: FileSource | undefined;
    let caFiles: FileSource | undefined;
    let certSvid: X509Source | undefined;
    let trust: X509Source | undefined;
    const fail = (key: string, err: unknown): never => {
      throw new TlsSetupError(`${where}.${key}: ${(err as Error).message}`);
    };
    const spire = async (socketPath: string | undefined, key: string, pick?: string): Promise<X509Source> => {
      // Loaded on first use: the Workload API client brings grpc-js, the verifier
      // @peculiar/x509, together ~10 MB of heap that plaintext and file-TLS processes (and
      // their GC pauses, which set the latency tail) do without.
      const { sharedX509Source } = await import('./x509-source.js');
      verifier ??= (await import('./svid-verifier.js')).verifyX509Svid;
      let src: X509Source;
      try {
        src = acquire(sharedX509Source(socketPath, { logger: opts.logger, ...(pick ? { pick } : {}) }));
      } catch (err) {
        return fail(key, err);
      }
      try {
        await src.ready(opts.readyTimeoutMs ?? 10_000);
      } catch (err) {
        release(src);
        return fail(key, err);
      }
      return src;
    };
    const trustDomains: string[] = [];
    try {
      const c = settings.cert;
      if (c?.type === 'file') {
        const k = c.flat ? { cert: 'cert_file', key: 'key_file' } : { cert: 'source.cert', key: 'source.key' };
        certFiles = new FileSource(
          { cert: { path: c.cert, key: `${where}.${k.cert}`, what: 'certificate' }, key: { path: c.key, key: `${where}.${k.key}`, what: 'key' } },
          opts.logger,
        );
      } else if (c?.type === 'spire') {
        certSvid = await spire(c.socketPath, 'source.socket_path', c.spiffeId);
      }
      const a = settings.ca;
      if (a?.type === 'file') {
        caFiles = new FileSource({ ca: { path: a.path, key: `${where}.${a.flat ? 'ca_file' : 'ca_source.path'}`, what: 'CA bundle' } }, opts.logger);
      } else if (a?.type === 'spire') {
        trust = await spire(a.socketPath, 'ca_source.socket_path');
        a.trustDomains.forEach((td, i) => {
          try {
            trustDomains.push(parseTrustDomain(td));
          } catch (err) {
            fail(`ca_source.trust_domains[${i}]`, err);
          }
        });
      }
    } catch (err) {
      certFiles?.close();
      caFiles?.close();
      release(certSvid);
      release(trust);
      if (err instanceof TlsSetupError) throw err;
      throw new TlsSetupError((err as Error).message);
    }
    return new ConnectionTls(settings, where, certFiles, caFiles, certSvid, trust, trustDomains, opts);
  }

  /** The SPIFFE ID this end presents (from its SVID or its certificate file), or ''. */
  localId(): string {
    if (this.certSvid) return this.certSvid.svid().id.id;
    const pem = this.certFiles?.current().cert;
    if (!pem) return '';
    try {
      return spiffeUriSan({ subjectaltname: new X509Certificate(pem).subjectAltName } as PeerCertificate) ?? '';
    } catch {
      return '';
    }
  }

  /** The Workload API stream behind this end's SVID, for metrics; undefined without one. */
  svidStatus(): { spiffeId: string; notAfter: Date; updates: number; errors: number } | undefined {
    const src = this.certSvid;
    if (!src?.isReady()) return undefined;
    const svid = src.svid();
    return { spiffeId: svid.id.id, notAfter: svid.notAfter, updates: src.updates, errors: src.errors };
  }

  /** True when peers must present a certificate this end verifies. */
  get verifiesPeers(): boolean {
    return Boolean(this.settings.ca) && this.verification !== 'none';
  }

  /** Trust domains whose members this end accepts (SPIFFE verification only). */
  acceptedTrustDomains(): string[] {
    return [...this.accepted].sort();
  }

  get hasCertificate(): boolean {
    return Boolean(this.certFiles || this.certSvid);
  }

  /** This end's current certificate chain and key (PEM), if it has one. */
  identity(): { cert: string | Buffer; key: string | Buffer } | undefined {
    if (this.certSvid) {
      const s = this.certSvid.svid();
      return { cert: s.certPem, key: s.keyPem };
    }
    const m = this.certFiles?.current();
    return m?.cert && m.key ? { cert: m.cert, key: m.key } : undefined;
  }

  /** The CAs a client hands OpenSSL: every bundle held (SPIFFE) or the CA file (PKI). */
  trustedCaPem(): string | Buffer | undefined {
    if (this.verification === 'spiffe') return this.trust?.bundles().pem();
    return this.caFiles?.current().ca;
  }

  private readonly bundles: BundleSource = {
    bundleFor: (td: string): X509Bundle | undefined => this.trust?.bundleFor(td),
  };

  /** Verifies a chain as a SPIFFE peer of this connection (validity at `at`, default now). */
  verifyChain(chain: Buffer[], at?: Date): SvidVerdict {
    if (!verifier) throw new Error('SPIFFE verification used before a spire source was set up');
    return verifier(chain, this.bundles, { authorizer: authorizeMemberOf(...this.accepted), ...(at ? { at } : {}) });
  }

  /** Logs (rate-limited) and counts a refused peer. */
  refuse(direction: RefusalEvent['direction'], peer: string, reason: string, message: string, id?: string): PeerVerdict {
    const e: RefusalEvent = { direction, reason, message, peer, ...(id ? { id } : {}) };
    if (this.logBudget.take()) this.log?.warn({ direction, peer, reason, peer_id: id, tls: this.where }, `refused peer: ${message}`);
    this.onRefusal?.(e);
    return { ok: false, reason, message, ...(id ? { id } : {}) };
  }

  // -- servers --------------------------------------------------------------------------------

  /** Options for http2.createSecureServer / setSecureContext with the current material. */
  serverOptions(): SecureServerOptions {
    const id = this.identity();
    if (!id) throw new TlsSetupError(`${this.where}: a TLS server needs tls.source (a certificate and key), or tls.insecure: true for plaintext`);
    const askClient = Boolean(this.settings.ca);
    return {
      cert: id.cert,
      key: id.key,
      // No session tickets: a resumed session shows the server only the peer's leaf (its
      // intermediates are gone) and would be judged on a certificate that may since have expired.
      ...(askClient ? { secureOptions: cryptoConstants.SSL_OP_NO_TICKET } : {}),
      requestCert: askClient,
      // Verified by verifyInbound, so that a refusal is logged and counted (see the top).
      rejectUnauthorized: false,
      ...(this.verification === 'pki' && this.caFiles ? { ca: this.caFiles.current().ca } : {}),
    };
  }

  /** Checks an accepted TLS socket's peer; records its SPIFFE ID on success. */
  verifyInbound(socket: TLSSocket): PeerVerdict {
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    let verdict: PeerVerdict;
    if (!this.settings.ca || this.verification === 'none') verdict = { ok: true, id: '' };
    else if (this.verification === 'pki') {
      const cert = socket.getPeerCertificate();
      if (!cert || !cert.raw) verdict = this.refuse('inbound', peer, 'no_certificate', 'the peer presented no certificate');
      else if (!socket.authorized) {
        const code = String(socket.authorizationError ?? 'not verified');
        verdict = this.refuse('inbound', peer, tlsErrorReason({ code }) ?? 'untrusted_chain', `certificate not trusted by ${this.where}: ${code}`, spiffeUriSan(cert));
      } else verdict = { ok: true, id: spiffeUriSan(cert) ?? '' };
    } else {
      const chain = peerChain(socket.getPeerCertificate(true));
      const v: SvidVerdict = chain.length === 0 ? { ok: false, reason: 'no_certificate', message: 'the peer presented no certificate' } : this.verifyChain(chain);
      verdict = v.ok ? { ok: true, id: v.id.id } : this.refuse('inbound', peer, v.reason, v.message, v.id);
    }
    if (verdict.ok) verifiedPeers.set(socket, verdict.id);
    return verdict;
  }

  // -- clients --------------------------------------------------------------------------------

  /** tls.connect / http2.connect options with the current material, for a server at `host`. */
  clientOptions(host: string): ConnectionOptions {
    const id = this.identity();
    const opts: ConnectionOptions = {
      ...(id ? { cert: id.cert, key: id.key } : {}),
      rejectUnauthorized: this.verification !== 'none',
    };
    if (!isIP(host)) opts.servername = host;
    const ca = this.trustedCaPem();
    if (ca) opts.ca = ca;
    if (this.verification === 'spiffe') opts.checkServerIdentity = (_host, cert) => this.checkServer(cert, host);
    return opts;
  }

  /** checkServerIdentity for SPIFFE trust: undefined to accept, else the (counted) refusal. */
  checkServer(cert: PeerCertificate, host: string): Error | undefined {
    const v = this.verifyChain(peerChain(cert));
    if (v.ok) return undefined;
    this.refuse('outbound', host, v.reason, v.message, v.id);
    return new PeerRefusedError(v.reason, v.message);
  }

  /**
   * For dialers: counts a failed dial whose cause was certificate verification by OpenSSL
   * (expired, unknown CA...). Our own refusals were counted when they happened.
   */
  noteDialFailure(err: unknown, peer: string): void {
    if (err instanceof PeerRefusedError) return;
    const reason = tlsErrorReason(err);
    if (reason) this.refuse('outbound', peer, reason, `${peer}: ${(err as Error).message}`);
  }

  /** Distinguishes pooled sessions made with different identities. */
  poolKey(): string {
    return `${this.localId()}|${this.verification}|${[...this.accepted].join(',')}`;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const u of this.unsubscribe) u();
    this.certFiles?.close();
    this.caFiles?.close();
    release(this.certSvid);
    release(this.trust);
    this.removeAllListeners();
  }
}

/** At most `max` lines per window; reports how many were suppressed when the window ends. */
class LogBudget {
  private used = 0;
  private suppressed = 0;
  private windowEnd = 0;

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly report: (suppressed: number) => void,
  ) {}

  take(): boolean {
    const now = Date.now();
    if (now >= this.windowEnd) {
      if (this.suppressed > 0) this.report(this.suppressed);
      this.windowEnd = now + this.windowMs;
      this.used = 0;
      this.suppressed = 0;
    }
    if (this.used < this.max) {
      this.used++;
      return true;
    }
    this.suppressed++;
    return false;
  }
}
