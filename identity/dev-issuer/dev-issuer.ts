// The dev issuer: a stand-in for a federation of SPIRE servers and agents on one machine. Every
// configured workload gets a Workload API socket serving its X.509-SVID (rotated at half its TTL,
// as SPIRE does), JWT-SVIDs, and the bundles of its own and federated trust domains, so tests
// and the demo exercise the same client code a SPIRE deployment would.

import { X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import { OpsServer } from '../../common/ops-server.js';
import type { X509SvidResponseMsg } from '../../proto/workload.js';
import type { SpiffeId } from '../spiffe-id.js';
import type { MintedSvid } from '../x509-mint.js';
import { Authority } from './authority.js';
import type { DevIssuerConfig, DevIssuerWorkload } from './config.js';
import type { ValidatedJwtSvid } from './jwt.js';
import { IssuerStats, WorkloadServer, type ServedIdentity } from './workload-server.js';

/** A failed mint is retried this soon rather than at the next half-TTL, when the SVID may be gone. */
const ROTATION_RETRY_MS = 1000;

class ServedWorkload implements ServedIdentity {
  readonly spiffeId: SpiffeId;
  /** Own trust domain first: validation and bundle maps consider exactly these. */
  private readonly trusted: ReadonlySet<string>;
  svid: MintedSvid;
  timer: NodeJS.Timeout | undefined;
  server!: WorkloadServer;

  constructor(
    readonly cfg: DevIssuerWorkload,
    private readonly authority: Authority,
    private readonly svidTtlMs: number,
    first: MintedSvid,
  ) {
    this.spiffeId = cfg.spiffeId;
    this.trusted = new Set([cfg.spiffeId.trustDomain, ...cfg.federatesWith]);
    this.svid = first;
  }

  x509Response(): X509SvidResponseMsg {
    const own = this.spiffeId.trustDomain;
    return {
      svids: [
        {
          spiffe_id: this.spiffeId.id,
          x509_svid: Buffer.concat(this.svid.chainDer),
          x509_svid_key: this.svid.keyDer,
          bundle: this.authority.of(own).ca.der,
          hint: '',
        },
      ],
      crl: [],
      federated_bundles: this.authority.x509Bundles(this.cfg.federatesWith),
    };
  }

  x509Bundles(): Record<string, Buffer> {
    return this.authority.x509Bundles(this.trusted);
  }

  jwtBundles(): Record<string, Buffer> {
    return this.authority.jwtBundles(this.trusted);
  }

  signJwtSvid(audience: readonly string[]): string {
    return this.authority.signJwtSvid(this.spiffeId, audience, this.svidTtlMs);
  }

  validateJwtSvid(token: string, audience: string): ValidatedJwtSvid {
    return this.authority.validateJwtSvid(token, audience, this.trusted);
  }
}

function serialOf(svid: MintedSvid): string {
  return new X509Certificate(svid.chainDer[0]!).serialNumber;
}

export class DevIssuer {
  private readonly workloads: ServedWorkload[] = [];
  private readonly stats = new IssuerStats();
  private ops: OpsServer | undefined;
  private stopping: Promise<void> | undefined;
  /** Where /metrics, /healthz and /readyz listen, when observability.endpoint is set. */
  opsAddress: AddressInfo | undefined;
  readonly registry: Registry;

  private constructor(
    readonly config: DevIssuerConfig,
    readonly authority: Authority,
    private readonly log: Logger,
  ) {
    this.registry = createIssuerRegistry(this.stats);
  }

  /**
   * Creates the trust domains' CAs and JWT keys, mints a first SVID per workload, listens on
   * every socket and logs "dev issuer ready". On any failure, whatever was started is stopped.
   */
  static async start(config: DevIssuerConfig, logger: Logger): Promise<DevIssuer> {
    const authority = await Authority.create(config.trustDomains, config.caTtlMs);
    const issuer = new DevIssuer(config, authority, logger);
    try {
      await issuer.run();
    } catch (err) {
      await issuer.stop();
      throw err;
    }
    return issuer;
  }

  private async run(): Promise<void> {
    const { config, log } = this;
    if (config.bundleDir) {
      const files = this.authority.writeBundles(config.bundleDir);
      log.info({ bundle_dir: config.bundleDir, files }, 'wrote trust bundles');
    }
    for (const w of config.workloads) {
      const first = await this.authority.mintX509Svid(w.spiffeId, config.svidTtlMs, w.dnsNames);
      this.stats.x509SvidsMinted++;
      const served = new ServedWorkload(w, this.authority, config.svidTtlMs, first);
      served.server = new WorkloadServer(served, w.socketPath, log, this.stats);
      this.workloads.push(served);
      await served.server.start();
      this.scheduleRotation(served);
      log.info({ spiffe_id: w.spiffeId.id, socket: w.socketPath, federates_with: w.federatesWith }, `serving ${w.spiffeId.id} on ${w.socketPath}`);
    }
    if (config.ops) {
      this.ops = new OpsServer({ ...config.ops, registry: this.registry, notReadyReason: () => (this.stopping ? 'stopping' : undefined) });
      try {
        this.opsAddress = await this.ops.listen();
      } catch (err) {
        this.ops = undefined;
        throw new Error(`cannot listen on ${config.ops.host}:${config.ops.port} (observability.endpoint): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      log.info({ endpoint: `${this.opsAddress.address}:${this.opsAddress.port}` }, 'metrics and health endpoint listening');
    }
    log.info(
      {
        trust_domains: config.trustDomains,
        workloads: this.sockets(),
        svid_ttl_ms: config.svidTtlMs,
        ...(config.bundleDir ? { bundle_dir: config.bundleDir } : {}),
      },
      'dev issuer ready',
    );
  }

  /** Each workload's SPIFFE ID and the socket path serving it. */
  sockets(): { spiffe_id: string; socket: string }[] {
    return this.workloads.map((w) => ({ spiffe_id: w.spiffeId.id, socket: w.cfg.socketPath }));
  }

  /** The socket serving `spiffeId`, for callers that configure clients from the issuer. */
  socketOf(spiffeId: string): string | undefined {
    return this.workloads.find((w) => w.spiffeId.id === spiffeId)?.cfg.socketPath;
  }

  /** At half the remaining lifetime of the SVID being served, as SPIRE agents rotate. */
  private scheduleRotation(w: ServedWorkload, delayMs = Math.max(0, (w.svid.notAfter.getTime() - Date.now()) / 2)): void {
    if (this.stopping) return;
    w.timer = setTimeout(() => void this.rotateOne(w), delayMs);
  }

  private async rotateOne(w: ServedWorkload): Promise<void> {
    clearTimeout(w.timer);
    w.timer = undefined;
    if (this.stopping) return;
    try {
      const svid = await this.authority.mintX509Svid(w.spiffeId, this.config.svidTtlMs, w.cfg.dnsNames);
      if (this.stopping) return;
      w.svid = svid;
      this.stats.x509SvidsMinted++;
      const streams = w.server.pushX509();
      this.log.debug({ spiffe_id: w.spiffeId.id, serial: serialOf(svid), not_after: svid.notAfter.toISOString(), streams }, 'rotated X.509-SVID');
      this.scheduleRotation(w);
    } catch (err) {
      this.log.error({ spiffe_id: w.spiffeId.id, err: (err as Error).message }, 'X.509-SVID rotation failed; retrying');
      this.scheduleRotation(w, ROTATION_RETRY_MS);
    }
  }

  /**
   * Mints and pushes new X.509-SVIDs now (all workloads, or the one with `spiffeId`), for tests
   * that rotate on demand instead of waiting for half a TTL. Returns how many were rotated.
   */
  async rotate(spiffeId?: string): Promise<number> {
    const targets = this.workloads.filter((w) => spiffeId === undefined || w.spiffeId.id === spiffeId);
    if (spiffeId !== undefined && targets.length === 0) throw new Error(`no workload with SPIFFE ID ${spiffeId} in this dev issuer`);
    await Promise.all(targets.map((w) => this.rotateOne(w)));
    return targets.length;
  }

  /** Stops rotation, ends open streams, closes every socket and removes its file. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const w of this.workloads) clearTimeout(w.timer);
      await Promise.all(this.workloads.map((w) => w.server.stop()));
      await this.ops?.close();
      this.log.info('dev issuer stopped');
    })();
    return this.stopping;
  }
}

function createIssuerRegistry(stats: IssuerStats): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'slim_dev_issuer_' });
  new Counter({
    name: 'slim_dev_issuer_x509_svids_minted_total',
    help: 'X.509-SVIDs minted (first issue and rotations)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(stats.x509SvidsMinted);
    },
  });
  new Counter({
    name: 'slim_dev_issuer_jwt_svids_issued_total',
    help: 'JWT-SVIDs issued',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(stats.jwtSvidsIssued);
    },
  });
  new Counter({
    name: 'slim_dev_issuer_refused_calls_total',
    help: 'Workload API calls refused, by method and gRPC status',
    labelNames: ['method', 'code'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [key, n] of stats.refused) {
        const [method, code] = key.split(':') as [string, string];
        this.inc({ method, code }, n);
      }
    },
  });
  new Gauge({
    name: 'slim_dev_issuer_open_streams',
    help: 'Open Workload API streams across all sockets',
    registers: [registry],
    collect() {
      this.set(stats.openStreams);
    },
  });
  return registry;
}
