// Client of the SPIFFE Workload API (a SPIRE agent, or the dev issuer) over its unix socket.
// Streams are watched forever: the agent restarts, rotates SVIDs and changes federation at any
// time, and a data plane node must follow without a restart. Every error names the socket and
// says what to check, because the usual causes (socket not mounted, no registration entry) are
// deployment mistakes an operator has to fix.

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { Backoff, DEFAULT_BACKOFF, type BackoffOptions } from '../common/backoff.js';
import {
  WORKLOAD_HEADER,
  fromStruct,
  workloadClientConstructor,
  type JwtBundlesResponseMsg,
  type JwtSvidResponseMsg,
  type ValidateJwtSvidResponseMsg,
  type X509BundlesResponseMsg,
  type X509SvidResponseMsg,
} from '../proto/workload.js';
import { parseSpiffeId, parseTrustDomain, type SpiffeId } from './spiffe-id.js';
import { BundleSet, X509Bundle } from './x509-bundle.js';
import { derToPem, splitDerCertificates } from './x509.js';

export const SPIFFE_ENDPOINT_SOCKET = 'SPIFFE_ENDPOINT_SOCKET';

export class WorkloadApiError extends Error {
  /** gRPC status of the failed call; absent for errors found in a response or in the config. */
  code?: grpc.status;
  /** Set on errors a watch reports while it keeps retrying; unset on fatal ones. */
  retrying?: boolean;
  /** The message without the `SPIFFE Workload API <socket>: ` prefix. */
  readonly reason: string;

  constructor(target: string | undefined, reason: string, code?: grpc.status) {
    super(target === undefined ? `SPIFFE Workload API: ${reason}` : `SPIFFE Workload API ${target}: ${reason}`);
    this.name = 'WorkloadApiError';
    this.reason = reason;
    if (code !== undefined) this.code = code;
  }
}

/**
 * The grpc-js target (`unix:/abs/path`) for a configured socket address, or for
 * SPIFFE_ENDPOINT_SOCKET when none is configured.
 */
export function resolveWorkloadSocket(configured?: string, env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env[SPIFFE_ENDPOINT_SOCKET];
  const value = configured !== undefined && configured !== '' ? configured : fromEnv;
  const what = configured !== undefined && configured !== '' ? 'socket' : SPIFFE_ENDPOINT_SOCKET;
  if (value === undefined || value === '') {
    throw new WorkloadApiError(
      undefined,
      `no socket configured and ${SPIFFE_ENDPOINT_SOCKET} is not set (set it, e.g. to unix:///run/spire/sockets/agent.sock)`,
    );
  }
  const bad = (why: string): WorkloadApiError =>
    new WorkloadApiError(undefined, `${what} ${JSON.stringify(value)}: ${why} (expected unix:/path, unix:///path or /path)`);
  let path: string;
  if (value.startsWith('/')) path = value;
  else if (value.startsWith('unix://')) {
    const rest = value.slice('unix://'.length);
    if (rest === '') throw bad('the socket path is missing');
    if (!rest.startsWith('/')) throw bad(`names a host ("${rest.split('/')[0]}"); a unix socket address has none`);
    path = rest;
  } else if (value.startsWith('unix:')) {
    path = value.slice('unix:'.length);
    if (!isAbsolute(path)) throw bad('the socket path is not absolute');
  } else if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(value)) {
    throw bad(`scheme "${value.slice(0, value.indexOf(':'))}" is not supported; the Workload API is served on a unix socket`);
  } else {
    throw bad('the socket path is not absolute');
  }
  if (path === '/' || path.endsWith('/')) throw bad('names a directory, not a socket');
  return `unix:${path}`;
}

/** The filesystem path of a target from resolveWorkloadSocket (or of any accepted socket form). */
export function socketFilePath(target: string): string {
  if (target.startsWith('unix://')) return target.slice('unix://'.length);
  if (target.startsWith('unix:')) return target.slice('unix:'.length);
  return target;
}

export interface X509Svid {
  id: SpiffeId;
  /** Leaf first, then intermediates. */
  chainDer: Buffer[];
  /** PKCS#8 DER. */
  keyDer: Buffer;
  /** The whole chain, leaf first. */
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
  notAfter: Date;
  hint: string;
}

export interface X509Context {
  svids: X509Svid[];
  /** The own trust domain(s) of the SVIDs and every federated trust domain. */
  bundles: BundleSet;
}

export interface JwtSvid {
  spiffeId: string;
  token: string;
  hint: string;
  expiresAt: Date;
}

/** A JWKS document as the Workload API serves it (a SPIFFE bundle: `{ keys: [...] }`). */
export interface Jwks {
  keys: Record<string, unknown>[];
  [member: string]: unknown;
}

export interface Watcher<T> {
  onUpdate(value: T): void;
  onError(err: WorkloadApiError): void;
}

export interface WatchHandle {
  cancel(): void;
}

export interface WorkloadApiClientOptions {
  logger?: Logger;
  backoff?: BackoffOptions;
  /** Deadline of unary calls and of one-shot fetches (default 30 s). */
  callTimeoutMs?: number;
}

type StreamMethod = (req: object, md: grpc.Metadata, opts?: grpc.CallOptions) => grpc.ClientReadableStream<unknown>;
type UnaryMethod = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: unknown) => void,
) => grpc.ClientUnaryCall;
type StreamName = 'FetchX509SVID' | 'FetchX509Bundles' | 'FetchJWTBundles';
type UnaryName = 'FetchJWTSVID' | 'ValidateJWTSVID';

// A watch restarts only on a status the agent may recover from. INVALID_ARGUMENT means this
// client sent something the agent will always refuse (missing header, bad request): retrying
// would spin forever on a bug.
const FATAL_CODES = new Set<grpc.status>([grpc.status.INVALID_ARGUMENT]);

export class WorkloadApiClient {
  /** The grpc-js target, e.g. `unix:/run/spire/sockets/agent.sock`. */
  readonly target: string;
  private readonly client: grpc.Client;
  private readonly log: Logger | undefined;
  private readonly backoffOpts: BackoffOptions;
  private readonly callTimeoutMs: number;
  private readonly handles = new Set<WatchHandle>();
  private closed = false;

  constructor(socket?: string, opts: WorkloadApiClientOptions = {}) {
    this.target = resolveWorkloadSocket(socket);
    this.log = opts.logger;
    this.backoffOpts = opts.backoff ?? DEFAULT_BACKOFF;
    this.callTimeoutMs = opts.callTimeoutMs ?? 30_000;
    const Ctor = workloadClientConstructor();
    // grpc-js fails calls fast while its channel sits in TRANSIENT_FAILURE; keeping its own
    // reconnect backoff no slower than ours lets a retry reach an agent that just came up.
    this.client = new Ctor(this.target, grpc.credentials.createInsecure(), {
      'grpc.initial_reconnect_backoff_ms': this.backoffOpts.initialMs,
      'grpc.max_reconnect_backoff_ms': this.backoffOpts.maxMs,
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
    });
  }

  /** Watches this workload's X.509-SVIDs and bundles; every update is the complete state. */
  watchX509Context(w: Watcher<X509Context>): WatchHandle {
    return this.watch<X509SvidResponseMsg, X509Context>('FetchX509SVID', (m) => this.parseX509Context(m), w);
  }

  /** Watches the X.509 bundles of every trust domain this workload trusts. */
  watchX509Bundles(w: Watcher<BundleSet>): WatchHandle {
    return this.watch<X509BundlesResponseMsg, BundleSet>('FetchX509Bundles', (m) => this.parseX509Bundles(m), w);
  }

  /** Watches the JWT bundles (JWKS), keyed by trust domain name. */
  watchJwtBundles(w: Watcher<Map<string, Jwks>>): WatchHandle {
    return this.watch<JwtBundlesResponseMsg, Map<string, Jwks>>('FetchJWTBundles', (m) => this.parseJwtBundles(m), w);
  }

  /** The current X.509 context: one response, no retry (a watch is what retries). */
  fetchX509Context(): Promise<X509Context> {
    return this.first<X509SvidResponseMsg, X509Context>('FetchX509SVID', (m) => this.parseX509Context(m));
  }

  fetchX509Bundles(): Promise<BundleSet> {
    return this.first<X509BundlesResponseMsg, BundleSet>('FetchX509Bundles', (m) => this.parseX509Bundles(m));
  }

  fetchJwtBundles(): Promise<Map<string, Jwks>> {
    return this.first<JwtBundlesResponseMsg, Map<string, Jwks>>('FetchJWTBundles', (m) => this.parseJwtBundles(m));
  }

  async fetchJwtSvid(req: { audience: string[]; spiffeId?: string }): Promise<JwtSvid[]> {
    if (req.audience.length === 0 || req.audience.some((a) => a === '')) {
      throw new WorkloadApiError(this.target, 'FetchJWTSVID needs at least one non-empty audience');
    }
    if (req.spiffeId !== undefined) this.checkId(req.spiffeId, 'requested SPIFFE ID');
    const res = (await this.unary('FetchJWTSVID', {
      audience: req.audience,
      spiffe_id: req.spiffeId ?? '',
    })) as JwtSvidResponseMsg;
    if (res.svids.length === 0) {
      throw new WorkloadApiError(this.target, 'FetchJWTSVID answered no JWT-SVID', grpc.status.PERMISSION_DENIED);
    }
    return res.svids.map((s, i) => {
      const id = this.checkId(s.spiffe_id, `JWT-SVID ${i + 1}`).id;
      return { spiffeId: id, token: s.svid, hint: s.hint, expiresAt: this.jwtExpiry(s.svid, id) };
    });
  }

  async validateJwtSvid(token: string, audience: string): Promise<{ spiffeId: string; claims: Record<string, unknown> }> {
    if (audience === '') throw new WorkloadApiError(this.target, 'ValidateJWTSVID needs an audience');
    const res = (await this.unary('ValidateJWTSVID', { audience, svid: token })) as ValidateJwtSvidResponseMsg;
    const id = this.checkId(res.spiffe_id, 'ValidateJWTSVID answer').id;
    return { spiffeId: id, claims: res.claims ? fromStruct(res.claims) : {} };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of [...this.handles]) h.cancel();
    this.client.close();
  }

  // ---- calls ----

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(WORKLOAD_HEADER, 'true');
    return md;
  }

  private method<F>(name: string): F {
    const fn = (this.client as unknown as Record<string, F>)[name];
    if (typeof fn !== 'function') throw new Error(`workload.proto: method ${name} missing`);
    return (fn as unknown as (...a: unknown[]) => unknown).bind(this.client) as F;
  }

  private deadline(): grpc.Deadline {
    return new Date(Date.now() + this.callTimeoutMs);
  }

  private unary(name: UnaryName, req: object): Promise<unknown> {
    if (this.closed) return Promise.reject(new WorkloadApiError(this.target, `${name}: the client is closed`));
    return new Promise((resolve, reject) => {
      this.method<UnaryMethod>(name)(req, this.metadata(), { deadline: this.deadline() }, (err, res) => {
        if (err) reject(this.statusError(err.code, err.details, name));
        else resolve(res);
      });
    });
  }

  private first<M, T>(name: StreamName, parse: (m: M) => T): Promise<T> {
    if (this.closed) return Promise.reject(new WorkloadApiError(this.target, `${name}: the client is closed`));
    return new Promise((resolve, reject) => {
      let settled = false;
      const call = this.method<StreamMethod>(name)({}, this.metadata(), { deadline: this.deadline() });
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        call.cancel();
        fn();
      };
      call.on('data', (m: M) => {
        settle(() => {
          try {
            resolve(parse(m));
          } catch (err) {
            reject(err);
          }
        });
      });
      call.on('error', (err: grpc.ServiceError) => settle(() => reject(this.statusError(err.code, err.details, name))));
      call.on('status', (s: grpc.StatusObject) => {
        if (s.code === grpc.status.OK) {
          settle(() => reject(new WorkloadApiError(this.target, `${name}: the stream ended before any response`)));
        }
      });
    });
  }

  private watch<M, T>(name: StreamName, parse: (m: M) => T, w: Watcher<T>): WatchHandle {
    const backoff = new Backoff(this.backoffOpts);
    let call: grpc.ClientReadableStream<unknown> | undefined;
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const handle: WatchHandle = {
      cancel: () => {
        if (stopped) return;
        stopped = true;
        this.handles.delete(handle);
        if (timer) clearTimeout(timer);
        call?.cancel();
      },
    };
    const report = (err: WorkloadApiError, retrying: boolean): void => {
      err.retrying = retrying;
      try {
        w.onError(err);
      } catch (cbErr) {
        this.log?.error({ err: cbErr }, `${name} watcher onError threw`);
      }
    };
    const start = (): void => {
      if (stopped) return;
      let ended = false;
      const current = this.method<StreamMethod>(name)({}, this.metadata());
      call = current;
      const end = (err: WorkloadApiError): void => {
        if (ended || stopped) return;
        ended = true;
        if (err.code !== undefined && FATAL_CODES.has(err.code)) {
          this.log?.warn({ err: err.message }, `${name}: fatal, not retrying`);
          handle.cancel();
          report(err, false);
          return;
        }
        const delay = backoff.next();
        this.log?.debug({ err: err.message, retryInMs: delay }, `${name}: retrying`);
        report(err, true);
        if (!stopped) timer = setTimeout(start, delay);
      };
      current.on('data', (m: M) => {
        if (ended || stopped) return;
        let value: T;
        try {
          value = parse(m);
        } catch (err) {
          // A bad response leaves the stream usable: the next update may be fine, and the
          // previous state stays in force meanwhile.
          report(err instanceof WorkloadApiError ? err : new WorkloadApiError(this.target, String(err)), true);
          return;
        }
        backoff.reset();
        try {
          w.onUpdate(value);
        } catch (cbErr) {
          this.log?.error({ err: cbErr }, `${name} watcher onUpdate threw`);
        }
      });
      current.on('error', (err: grpc.ServiceError) => end(this.statusError(err.code, err.details, name)));
      current.on('status', (s: grpc.StatusObject) => {
        if (s.code === grpc.status.OK) {
          end(new WorkloadApiError(this.target, `${name}: the agent ended the stream; reconnecting`));
        }
      });
    };
    if (this.closed) {
      stopped = true;
      queueMicrotask(() => report(new WorkloadApiError(this.target, `${name}: the client is closed`), false));
      return handle;
    }
    this.handles.add(handle);
    start();
    return handle;
  }

  /** A status turned into what an operator should check. */
  private statusError(code: grpc.status, details: string, what: string): WorkloadApiError {
    const name = grpc.status[code] ?? String(code);
    let reason: string;
    if (code === grpc.status.UNAVAILABLE) {
      reason = this.unavailableReason(details);
    } else if (code === grpc.status.PERMISSION_DENIED) {
      reason = `PERMISSION_DENIED: ${details || 'no identity issued'} (does a registration entry match this workload?)`;
    } else if (code === grpc.status.DEADLINE_EXCEEDED) {
      reason = `${what} answered nothing within ${this.callTimeoutMs / 1000} s`;
    } else if (code === grpc.status.UNIMPLEMENTED) {
      reason = `UNIMPLEMENTED: ${details} (is this socket a SPIFFE Workload API?)`;
    } else {
      reason = `${name}: ${details || 'no details'}`;
    }
    return new WorkloadApiError(this.target, reason, code);
  }

  private unavailableReason(details: string): string {
    const path = socketFilePath(this.target);
    if (!existsSync(path)) return 'no such socket (is the SPIRE agent running, and is the socket mounted?)';
    try {
      if (!statSync(path).isSocket()) return `${path} exists but is not a unix socket`;
    } catch {
      // Unreadable directory: the connect error below says more than stat can.
    }
    if (/EACCES|EPERM/.test(details)) return 'permission denied on the socket (run as a user that may open it)';
    if (/ECONNREFUSED/.test(details)) return 'connection refused: a stale socket (is the SPIRE agent running?)';
    return `UNAVAILABLE: ${details || 'cannot connect'} (is the SPIRE agent running?)`;
  }

  // ---- responses ----

  private malformed(what: string): WorkloadApiError {
    return new WorkloadApiError(this.target, `malformed response: ${what}`);
  }

  private checkId(id: string, what: string): SpiffeId {
    try {
      return parseSpiffeId(id);
    } catch (err) {
      throw this.malformed(`${what}: ${(err as Error).message}`);
    }
  }

  private certs(der: Buffer, what: string): Buffer[] {
    let certs: Buffer[];
    try {
      certs = splitDerCertificates(der);
    } catch (err) {
      throw this.malformed(`${what}: ${(err as Error).message}`);
    }
    if (certs.length === 0) throw this.malformed(`${what} is empty`);
    return certs;
  }

  private bundle(td: string, der: Buffer, what: string): X509Bundle {
    try {
      return new X509Bundle(td, this.certs(der, what));
    } catch (err) {
      if (err instanceof WorkloadApiError) throw err;
      throw this.malformed(`${what}: ${(err as Error).message}`);
    }
  }

  private parseX509Context(m: X509SvidResponseMsg): X509Context {
    if (m.svids.length === 0) {
      throw new WorkloadApiError(this.target, 'PERMISSION_DENIED: the agent answered no X.509-SVID (no identity issued)', grpc.status.PERMISSION_DENIED);
    }
    const own = new Map<string, X509Bundle>();
    const svids = m.svids.map((s, i) => {
      const what = `X.509-SVID ${i + 1} (${s.spiffe_id || 'no spiffe_id'})`;
      const id = this.checkId(s.spiffe_id, what);
      const chainDer = this.certs(s.x509_svid, `${what} certificate chain`);
      let leaf: X509Certificate;
      try {
        leaf = new X509Certificate(chainDer[0]!);
        for (const c of chainDer.slice(1)) new X509Certificate(c);
      } catch (err) {
        throw this.malformed(`${what}: certificate cannot be parsed: ${(err as Error).message}`);
      }
      const uris = (leaf.subjectAltName ?? '')
        .split(', ')
        .filter((n) => n.startsWith('URI:'))
        .map((n) => n.slice(4));
      if (uris.length !== 1 || uris[0] !== id.id) {
        throw this.malformed(`${what}: the leaf certificate's URI SAN is ${uris.length ? uris.join(', ') : 'missing'}, not ${id.id}`);
      }
      if (s.x509_svid_key.length === 0) throw this.malformed(`${what}: private key is empty`);
      try {
        const key = createPrivateKey({ key: s.x509_svid_key, format: 'der', type: 'pkcs8' });
        if (!leaf.checkPrivateKey(key)) throw new Error('it does not match the leaf certificate');
      } catch (err) {
        throw this.malformed(`${what}: private key: ${(err as Error).message}`);
      }
      if (s.bundle.length > 0 && !own.has(id.trustDomain)) {
        own.set(id.trustDomain, this.bundle(id.trustDomain, s.bundle, `${what} bundle`));
      }
      const keyDer = Buffer.from(s.x509_svid_key);
      return {
        id,
        chainDer,
        keyDer,
        certPem: chainDer.map((d) => derToPem(d)).join(''),
        keyPem: derToPem(keyDer, 'PRIVATE KEY'),
        notAfter: new Date(leaf.validTo),
        hint: s.hint,
      };
    });
    const bundles = this.federated(m.federated_bundles, 'federated bundle');
    // The agent's own trust-domain bundle wins over a federated entry claiming the same domain.
    for (const [td, b] of own) bundles.set(td, b);
    for (const s of svids) {
      if (!bundles.has(s.id.trustDomain)) throw this.malformed(`no bundle for ${s.id.id}'s own trust domain ${s.id.trustDomain}`);
    }
    return { svids, bundles: new BundleSet(bundles.values()) };
  }

  private federated(entries: Record<string, Buffer>, what: string): Map<string, X509Bundle> {
    const out = new Map<string, X509Bundle>();
    for (const [key, der] of Object.entries(entries ?? {})) {
      let td: string;
      try {
        td = parseTrustDomain(key);
      } catch (err) {
        throw this.malformed(`${what} key: ${(err as Error).message}`);
      }
      out.set(td, this.bundle(td, der, `${what} for ${td}`));
    }
    return out;
  }

  private parseX509Bundles(m: X509BundlesResponseMsg): BundleSet {
    const bundles = this.federated(m.bundles, 'bundle');
    if (bundles.size === 0) throw this.malformed('no X.509 bundle');
    return new BundleSet(bundles.values());
  }

  private parseJwtBundles(m: JwtBundlesResponseMsg): Map<string, Jwks> {
    const out = new Map<string, Jwks>();
    for (const [key, raw] of Object.entries(m.bundles ?? {})) {
      let td: string;
      try {
        td = parseTrustDomain(key);
      } catch (err) {
        throw this.malformed(`JWT bundle key: ${(err as Error).message}`);
      }
      let doc: unknown;
      try {
        doc = JSON.parse(Buffer.from(raw).toString('utf8'));
      } catch (err) {
        throw this.malformed(`JWT bundle for ${td} is not JSON: ${(err as Error).message}`);
      }
      if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys)) {
        throw this.malformed(`JWT bundle for ${td} is not a JWKS (no "keys" array)`);
      }
      out.set(td, doc as Jwks);
    }
    return out;
  }

  /** `exp` read without verifying: the agent already did, and callers only schedule refreshes on it. */
  private jwtExpiry(token: string, id: string): Date {
    const parts = token.split('.');
    let payload: unknown;
    try {
      if (parts.length !== 3) throw new Error(`${parts.length} dot-separated parts instead of 3`);
      payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    } catch (err) {
      throw this.malformed(`JWT-SVID for ${id} is not a JWT: ${(err as Error).message}`);
    }
    const exp = (payload as { exp?: unknown } | null)?.exp;
    if (typeof exp !== 'number' || !Number.isFinite(exp)) throw this.malformed(`JWT-SVID for ${id} has no numeric exp claim`);
    return new Date(exp * 1000);
  }
}
