// One SPIFFE Workload API endpoint: a grpc-js server on one unix socket, serving one workload's
// identity. A SPIRE agent attests the caller (pid → selectors → entry); here the socket a
// workload is given is its attestation, so each socket gets its own server and handlers that
// close over exactly one identity.

import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../../common/logger.js';
import {
  WORKLOAD_HEADER,
  toStruct,
  workloadServiceDefinition,
  type JwtBundlesResponseMsg,
  type JwtSvidRequestMsg,
  type JwtSvidResponseMsg,
  type ValidateJwtSvidRequestMsg,
  type ValidateJwtSvidResponseMsg,
  type X509BundlesResponseMsg,
  type X509SvidResponseMsg,
} from '../../proto/workload.js';
import type { SpiffeId } from '../spiffe-id.js';
import { JwtSvidError, type ValidatedJwtSvid } from './jwt.js';

/** What SPIRE answers when the header is absent; clients and tests match on it. */
export const SECURITY_HEADER_MISSING = 'security header missing from request';

/** The identity a socket serves; the dev issuer keeps it current across rotations. */
export interface ServedIdentity {
  readonly spiffeId: SpiffeId;
  /** The X.509-SVID response of the moment (newest SVID, own bundle, federated bundles). */
  x509Response(): X509SvidResponseMsg;
  /** Own and federated X.509 bundles keyed by trust domain SPIFFE ID. */
  x509Bundles(): Record<string, Buffer>;
  /** Own and federated JWKS documents keyed by trust domain SPIFFE ID. */
  jwtBundles(): Record<string, Buffer>;
  signJwtSvid(audience: readonly string[]): string;
  /** Throws JwtSvidError with the reason when the token is not acceptable. */
  validateJwtSvid(token: string, audience: string): ValidatedJwtSvid;
}

export type WorkloadMethod = 'FetchX509SVID' | 'FetchX509Bundles' | 'FetchJWTSVID' | 'FetchJWTBundles' | 'ValidateJWTSVID';

/** Counters the metrics endpoint publishes; shared by all sockets of one issuer. */
export class IssuerStats {
  x509SvidsMinted = 0;
  jwtSvidsIssued = 0;
  readonly refused = new Map<string, number>();
  openStreams = 0;

  refuse(method: WorkloadMethod, code: grpc.status): void {
    const key = `${method}:${grpc.status[code]}`;
    this.refused.set(key, (this.refused.get(key) ?? 0) + 1);
  }
}

class RefusedError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

type Stream<T> = grpc.ServerWritableStream<unknown, T>;

/** Ends a server stream with a status; grpc-js turns an 'error' event into the trailers. */
function failStream(call: Stream<unknown>, code: grpc.status, details: string): void {
  call.emit('error', Object.assign(new Error(details), { code, details }));
}

function socketInUse(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * A leftover socket from a killed issuer would make bind fail with EADDRINUSE, so it is removed;
 * a live one (another issuer running) or a non-socket file is somebody else's, and is kept.
 */
async function clearStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket; remove it or configure another socket path`);
  if (await socketInUse(path)) throw new Error(`${path} is in use by another process (another dev issuer?); stop it or configure another socket path`);
  unlinkSync(path);
}

export class WorkloadServer {
  private readonly server = new grpc.Server();
  private readonly x509Streams = new Set<Stream<X509SvidResponseMsg>>();
  private readonly otherStreams = new Set<Stream<unknown>>();
  private bound = false;
  private stopping = false;

  constructor(
    readonly identity: ServedIdentity,
    readonly socketPath: string,
    private readonly log: Logger,
    private readonly stats: IssuerStats,
  ) {
    this.server.addService(workloadServiceDefinition(), {
      FetchX509SVID: (call: Stream<X509SvidResponseMsg>) => this.fetchX509Svid(call),
      FetchX509Bundles: (call: Stream<X509BundlesResponseMsg>) => this.openStream(call, 'FetchX509Bundles', () => ({ crl: [], bundles: this.identity.x509Bundles() })),
      FetchJWTBundles: (call: Stream<JwtBundlesResponseMsg>) => this.openStream(call, 'FetchJWTBundles', () => ({ bundles: this.identity.jwtBundles() })),
      FetchJWTSVID: (call: grpc.ServerUnaryCall<JwtSvidRequestMsg, JwtSvidResponseMsg>, cb: grpc.sendUnaryData<JwtSvidResponseMsg>) =>
        this.unary(call, cb, 'FetchJWTSVID', (req) => this.fetchJwtSvid(req)),
      ValidateJWTSVID: (
        call: grpc.ServerUnaryCall<ValidateJwtSvidRequestMsg, ValidateJwtSvidResponseMsg>,
        cb: grpc.sendUnaryData<ValidateJwtSvidResponseMsg>,
      ) => this.unary(call, cb, 'ValidateJWTSVID', (req) => this.validateJwtSvid(req)),
    });
  }

  get openStreamCount(): number {
    return this.x509Streams.size + this.otherStreams.size;
  }

  async start(): Promise<void> {
    mkdirSync(dirname(this.socketPath), { recursive: true });
    await clearStaleSocket(this.socketPath);
    await new Promise<void>((resolve, reject) => {
      this.server.bindAsync(`unix:${this.socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => {
        if (err) reject(new Error(`cannot listen on unix socket ${this.socketPath}: ${err.message}`));
        else resolve();
      });
    });
    this.bound = true;
    // Like a SPIRE agent's public socket: any local user may ask; the socket decides who they are.
    chmodSync(this.socketPath, 0o777);
  }

  /** Sends the identity's current X.509 response to every open FetchX509SVID stream. */
  pushX509(): number {
    const msg = this.identity.x509Response();
    for (const call of this.x509Streams) call.write(msg);
    return this.x509Streams.size;
  }

  /** Ends open streams with UNAVAILABLE (clients reconnect, as after an agent restart) and unbinds. */
  async stop(graceMs = 2000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const call of [...this.x509Streams, ...this.otherStreams]) failStream(call, grpc.status.UNAVAILABLE, 'dev issuer is stopping');
    this.x509Streams.clear();
    this.otherStreams.clear();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (this.bound) {
      try {
        unlinkSync(this.socketPath);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  }

  /** Undefined when the call carries the Workload API header, else the refusal. */
  private checkHeader(call: { metadata: grpc.Metadata }): RefusedError | undefined {
    const values = call.metadata.get(WORKLOAD_HEADER);
    if (values.length === 1 && values[0] === 'true') return undefined;
    return new RefusedError(grpc.status.INVALID_ARGUMENT, SECURITY_HEADER_MISSING);
  }

  private refused(method: WorkloadMethod, err: RefusedError): void {
    this.stats.refuse(method, err.code);
    this.log.warn({ method, socket: this.socketPath, spiffe_id: this.identity.spiffeId.id, code: grpc.status[err.code], reason: err.message }, 'refused Workload API call');
  }

  private track<T>(call: Stream<T>, set: Set<Stream<T>>): void {
    set.add(call);
    this.stats.openStreams++;
    let done = false;
    const forget = (): void => {
      if (done) return;
      done = true;
      set.delete(call);
      this.stats.openStreams--;
    };
    call.on('cancelled', forget);
    call.on('close', forget);
    call.on('finish', forget);
  }

  private fetchX509Svid(call: Stream<X509SvidResponseMsg>): void {
    const refusal = this.checkHeader(call);
    if (refusal) {
      this.refused('FetchX509SVID', refusal);
      failStream(call, refusal.code, refusal.message);
      return;
    }
    if (this.stopping) return failStream(call, grpc.status.UNAVAILABLE, 'dev issuer is stopping');
    this.track(call, this.x509Streams);
    this.log.debug({ socket: this.socketPath, spiffe_id: this.identity.spiffeId.id }, 'FetchX509SVID stream opened');
    call.write(this.identity.x509Response());
  }

  /** Bundles do not change in this issuer: one message, then the stream stays open as SPIRE's does. */
  private openStream<T>(call: Stream<T>, method: WorkloadMethod, first: () => T): void {
    const refusal = this.checkHeader(call);
    if (refusal) {
      this.refused(method, refusal);
      failStream(call, refusal.code, refusal.message);
      return;
    }
    if (this.stopping) return failStream(call, grpc.status.UNAVAILABLE, 'dev issuer is stopping');
    this.track(call as Stream<unknown>, this.otherStreams);
    call.write(first());
  }

  private unary<Req, Res>(
    call: grpc.ServerUnaryCall<Req, Res>,
    cb: grpc.sendUnaryData<Res>,
    method: WorkloadMethod,
    handle: (req: Req) => Res,
  ): void {
    try {
      const refusal = this.checkHeader(call);
      if (refusal) throw refusal;
      cb(null, handle(call.request));
    } catch (err) {
      const refusal =
        err instanceof RefusedError
          ? err
          : err instanceof JwtSvidError
            ? new RefusedError(grpc.status.INVALID_ARGUMENT, err.message)
            : new RefusedError(grpc.status.INTERNAL, `dev issuer failed: ${(err as Error).message}`);
      this.refused(method, refusal);
      cb({ code: refusal.code, details: refusal.message });
    }
  }

  private fetchJwtSvid(req: JwtSvidRequestMsg): JwtSvidResponseMsg {
    const audience = req.audience.filter((a) => a !== '');
    if (audience.length === 0) throw new RefusedError(grpc.status.INVALID_ARGUMENT, 'audience must be specified');
    const own = this.identity.spiffeId.id;
    if (req.spiffe_id !== '' && req.spiffe_id !== own) {
      throw new RefusedError(grpc.status.PERMISSION_DENIED, `no identity issued for ${req.spiffe_id} on this socket (it serves ${own})`);
    }
    const svid = this.identity.signJwtSvid(audience);
    this.stats.jwtSvidsIssued++;
    this.log.debug({ spiffe_id: own, audience }, 'issued JWT-SVID');
    return { svids: [{ spiffe_id: own, svid, hint: '' }] };
  }

  private validateJwtSvid(req: ValidateJwtSvidRequestMsg): ValidateJwtSvidResponseMsg {
    if (req.audience === '') throw new RefusedError(grpc.status.INVALID_ARGUMENT, 'audience must be specified');
    if (req.svid === '') throw new RefusedError(grpc.status.INVALID_ARGUMENT, 'svid must be specified');
    const { spiffeId, claims } = this.identity.validateJwtSvid(req.svid, req.audience);
    return { spiffe_id: spiffeId, claims: toStruct(claims) };
  }
}
