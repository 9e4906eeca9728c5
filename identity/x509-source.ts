// The workload's X.509-SVID and trust bundles, kept current from the SPIFFE Workload API. TLS
// settings read svid() and bundles() at every handshake and rebuild on 'update', so rotation and
// federation changes apply to new connections without a restart.

import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { BackoffOptions } from '../common/backoff.js';
import { parseSpiffeId } from './spiffe-id.js';
import type { BundleSet, BundleSource, X509Bundle } from './x509-bundle.js';
import {
  WorkloadApiClient,
  WorkloadApiError,
  resolveWorkloadSocket,
  type WatchHandle,
  type X509Context,
  type X509Svid,
} from './workload-api-client.js';

export interface X509SourceOptions {
  /** As configured (unix:/path, unix:///path, /path); SPIFFE_ENDPOINT_SOCKET when absent. */
  socket?: string;
  /** SPIFFE ID of the SVID to use when the agent issues several; the first one by default. */
  pick?: string;
  logger?: Logger;
  backoff?: BackoffOptions;
}

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

/** Emits `update` (X509Context) whenever the selected SVID or any bundle changes. */
export class X509Source extends EventEmitter implements BundleSource {
  /** The grpc-js target of the Workload API socket. */
  readonly target: string;
  /** How many changes of SVID or bundles have been emitted. */
  updates = 0;
  /** Workload API failures seen (each retried failure counts). */
  errors = 0;
  /** The last error the watch reported; cleared by the next good update. */
  lastError: WorkloadApiError | undefined;
  private readonly client: WorkloadApiClient;
  private readonly pick: string | undefined;
  private readonly log: Logger | undefined;
  private readonly watch: WatchHandle;
  private ctx: X509Context | undefined;
  private current: X509Svid | undefined;
  private fatal: WorkloadApiError | undefined;
  private waiters = new Set<Waiter>();
  private closed = false;
  private lastWarned = '';

  constructor(opts: X509SourceOptions = {}) {
    super();
    // One listener per connection sharing this stream; a node with many links has many.
    this.setMaxListeners(0);
    if (opts.pick !== undefined) parseSpiffeId(opts.pick);
    this.pick = opts.pick;
    this.log = opts.logger;
    this.client = new WorkloadApiClient(opts.socket, { logger: opts.logger, backoff: opts.backoff });
    this.target = this.client.target;
    this.watch = this.client.watchX509Context({
      onUpdate: (ctx) => this.onUpdate(ctx),
      onError: (err) => this.onError(err),
    });
  }

  /** The selected X.509-SVID; throws until the first update. */
  svid(): X509Svid {
    if (!this.current) throw this.notReady();
    return this.current;
  }

  /** Every trust bundle (own and federated); throws until the first update. */
  bundles(): BundleSet {
    if (!this.ctx) throw this.notReady();
    return this.ctx.bundles;
  }

  /** Undefined while not ready, so that a verifier refuses rather than trusting nothing-yet. */
  bundleFor(trustDomain: string): X509Bundle | undefined {
    return this.ctx?.bundles.bundleFor(trustDomain);
  }

  /** The latest complete context (all SVIDs), or undefined before the first update. */
  context(): X509Context | undefined {
    return this.ctx;
  }

  isReady(): boolean {
    return this.current !== undefined;
  }

  /** Resolves at the first SVID; rejects on a fatal error, on close, or after timeoutMs. */
  ready(timeoutMs = 10_000): Promise<void> {
    if (this.closed) return Promise.reject(new WorkloadApiError(this.target, 'the X.509 source is closed'));
    if (this.current) return Promise.resolve();
    if (this.fatal) return Promise.reject(this.fatal);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(this.timeoutError(timeoutMs));
      }, timeoutMs);
      const waiter: Waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.waiters.add(waiter);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watch.cancel();
    this.client.close();
    forgetShared(this);
    this.settle(new WorkloadApiError(this.target, 'the X.509 source was closed before the first SVID'));
  }

  private onUpdate(ctx: X509Context): void {
    if (this.closed) return;
    const picked = this.pick === undefined ? ctx.svids[0] : ctx.svids.find((s) => s.id.id === this.pick);
    if (!picked) {
      const err = new WorkloadApiError(
        this.target,
        `no X.509-SVID for ${this.pick} (the agent issued ${ctx.svids.map((s) => s.id.id).join(', ')})`,
      );
      err.retrying = true;
      this.onError(err);
      return;
    }
    const prev = this.current;
    const svidChanged = !prev || !sameChain(prev, picked) || !prev.keyDer.equals(picked.keyDer);
    const bundlesChanged = !this.ctx || !this.ctx.bundles.equals(ctx.bundles);
    this.lastError = undefined;
    this.lastWarned = '';
    if (!svidChanged && !bundlesChanged) {
      this.log?.debug({ socket: this.target }, 'Workload API update without change');
      return;
    }
    this.ctx = ctx;
    this.current = picked;
    this.updates++;
    if (svidChanged) {
      const msg = prev ? 'SVID rotated' : 'SVID received';
      this.log?.info(
        { socket: this.target, spiffeId: picked.id.id, expires: picked.notAfter.toISOString() },
        `${msg} ${picked.id.id} expires ${picked.notAfter.toISOString()}`,
      );
    }
    if (bundlesChanged) {
      this.log?.debug({ socket: this.target, trustDomains: ctx.bundles.trustDomains() }, 'trust bundles updated');
    }
    this.settle();
    this.emit('update', ctx);
  }

  private onError(err: WorkloadApiError): void {
    if (this.closed) return;
    this.lastError = err;
    this.errors++;
    // A retry loop repeats the same failure every few seconds; say it once until it changes.
    if (err.message !== this.lastWarned) {
      this.lastWarned = err.message;
      this.log?.warn({ socket: this.target, retrying: err.retrying === true }, err.message);
    } else {
      this.log?.debug({ socket: this.target }, err.message);
    }
    if (!err.retrying) {
      this.fatal = err;
      this.settle(err);
    }
  }

  private settle(err?: Error): void {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) {
      if (err) w.reject(err);
      else w.resolve();
    }
  }

  private notReady(): WorkloadApiError {
    const why = this.fatal ?? this.lastError;
    return new WorkloadApiError(
      this.target,
      `no X.509-SVID yet${why ? `: ${why.reason}` : ' (await ready() first)'}`,
      why?.code,
    );
  }

  private timeoutError(timeoutMs: number): WorkloadApiError {
    const s = `${timeoutMs / 1000} s`;
    const last = this.lastError;
    if (!last) {
      return new WorkloadApiError(
        this.target,
        `answered nothing within ${s} (the socket accepts connections but sent no X.509-SVID; is it a SPIRE agent's?)`,
      );
    }
    return new WorkloadApiError(this.target, `no X.509-SVID within ${s}: ${last.reason}`, last.code);
  }
}

function sameChain(a: X509Svid, b: X509Svid): boolean {
  return a.chainDer.length === b.chainDer.length && a.chainDer.every((c, i) => c.equals(b.chainDer[i]!));
}

// One stream per agent socket: a node config names the same socket in the source and ca_source
// of many connections, and each would otherwise hold its own stream and its own copy of the state.
const shared = new Map<string, X509Source>();

function sharedKey(target: string, pick: string | undefined): string {
  return `${target}\n${pick ?? ''}`;
}

function forgetShared(src: X509Source): void {
  for (const [k, v] of shared) if (v === src) shared.delete(k);
}

/**
 * The process-wide source for a socket (resolved, so `unix:/p` and `unix:///p` share one), kept
 * for the process lifetime. Sources picking different SPIFFE IDs are separate.
 */
export function sharedX509Source(socket: string | undefined, opts: Omit<X509SourceOptions, 'socket'> = {}): X509Source {
  const key = sharedKey(resolveWorkloadSocket(socket), opts.pick);
  let src = shared.get(key);
  if (!src) {
    src = new X509Source({ ...opts, socket });
    shared.set(key, src);
  }
  return src;
}

/** Closes every shared source (shutdown, tests). */
export function closeSharedSources(): void {
  for (const src of [...shared.values()]) src.close();
  shared.clear();
}
