// slim-controller: the southbound ControllerService for nodes, the northbound admin API for
// operators, and the operations endpoint, around one ControlPlane.

import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { OpsServer } from '../common/ops-server.js';
import { joinHostPort } from '../common/config-file.js';
import { authorizeMemberOf, authorizeOneOf, type Authorizer } from '../identity/authorizer.js';
import { ConnectionTls } from '../identity/connection-tls.js';
import { serveGrpc, type GrpcListener } from '../identity/grpc-tls.js';
import { parseSpiffeId } from '../identity/spiffe-id.js';
import { addAdminService, type AdminViews } from './admin-service.js';
import type { ControllerConfig, ListenerSettings } from './config.js';
import { ControlPlane } from './control-plane.js';
import { ControllerMetrics } from './metrics.js';
import { addControllerService } from './southbound.js';
import { MAX_CONTROL_MESSAGE } from '../proto/controller.js';

export class SlimController {
  plane!: ControlPlane;
  views!: AdminViews;
  metrics!: ControllerMetrics;
  private readonly listeners: GrpcListener[] = [];
  private readonly servers: grpc.Server[] = [];
  private readonly tls: ConnectionTls[] = [];
  private ops: OpsServer | undefined;
  /** Bound ports: southbound, northbound (0 when disabled), ops (0 when disabled). */
  readonly ports = { southbound: 0, northbound: 0, ops: 0 };
  private started = false;

  constructor(
    readonly cfg: ControllerConfig,
    readonly log: Logger,
  ) {}

  private async listen(server: grpc.Server, l: ListenerSettings, tls: ConnectionTls | undefined): Promise<number> {
    try {
      if (tls) {
        const listener = await serveGrpc(tls, server, l.host, l.port);
        this.listeners.push(listener);
        return listener.port;
      }
      return await new Promise<number>((resolve, reject) => {
        server.bindAsync(joinHostPort(l.host, l.port), grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
      });
    } catch (err) {
      throw new Error(`cannot listen on ${l.host}:${l.port} (${l.key}.httpHost/httpPort): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }

  private adminAuthorizer(tls: ConnectionTls | undefined): Authorizer {
    const nb = this.cfg.northbound!;
    if (nb.adminSpiffeIds?.length) return authorizeOneOf(...nb.adminSpiffeIds);
    const own = tls?.localId() ? parseSpiffeId(tls.localId()).trustDomain : undefined;
    const domains = nb.adminTrustDomains ?? (own ? [own] : []);
    if (domains.length === 0) {
      throw new Error('config.northbound.adminTrustDomains: the controller has no SPIFFE ID to take its trust domain from; name the admin trust domains or adminSpiffeIds');
    }
    return authorizeMemberOf(...domains);
  }

  async start(): Promise<void> {
    const cfg = this.cfg;
    const sbTls = await ConnectionTls.create(cfg.southbound.tls, cfg.southbound.key, { logger: this.log });
    if (sbTls) this.tls.push(sbTls);
    try {
      const nbTls = cfg.northbound ? (cfg.northbound.tls === cfg.southbound.tls ? sbTls : await ConnectionTls.create(cfg.northbound.tls, cfg.northbound.key, { logger: this.log })) : undefined;
      if (nbTls && nbTls !== sbTls) this.tls.push(nbTls);
      this.plane = new ControlPlane(
        {
          heartbeatIntervalMs: cfg.heartbeatIntervalMs,
          nodeGracePeriodMs: cfg.nodeGracePeriodMs,
          commandTimeoutMs: cfg.commandTimeoutMs,
          startupGraceMs: cfg.startupGraceMs,
          nodeSpiffePaths: cfg.southbound.nodeSpiffePaths,
          requireIdentity: Boolean(sbTls?.verifiesPeers),
        },
        this.log,
      );
      const plane = this.plane;
      this.metrics = new ControllerMetrics({
        nodesByStatus: () => {
          const by: Record<string, number> = {};
          for (const r of plane.records.values()) by[r.status] = (by[r.status] ?? 0) + 1;
          return by;
        },
        routes: () => plane.planner.totalRoutes,
        pendingCommands: () => plane.pendingCommands(),
      });
      plane.metrics = this.metrics;
      if (!sbTls) this.log.warn('southbound is plaintext (config.southbound.tls.insecure): any process can register as any node; development only');

      // A registration lists everything a node holds: room for large networks.
      const south = new grpc.Server({
        'grpc.keepalive_time_ms': 30_000,
        'grpc.keepalive_permit_without_calls': 1,
        'grpc.max_receive_message_length': MAX_CONTROL_MESSAGE,
        'grpc.max_send_message_length': MAX_CONTROL_MESSAGE,
      });
      this.servers.push(south);
      addControllerService(south, plane, sbTls, cfg.heartbeatIntervalMs, this.log);
      this.ports.southbound = await this.listen(south, cfg.southbound, sbTls);
      this.log.info({ endpoint: `${cfg.southbound.host}:${this.ports.southbound}`, tls: Boolean(sbTls), trusted_domains: sbTls?.acceptedTrustDomains() }, 'southbound (nodes) listening');

      if (cfg.northbound) {
        const north = new grpc.Server();
        this.servers.push(north);
        this.views = addAdminService(north, plane, nbTls, nbTls ? this.adminAuthorizer(nbTls) : () => undefined, this.log);
        this.ports.northbound = await this.listen(north, cfg.northbound, nbTls);
        this.log.info({ endpoint: `${cfg.northbound.host}:${this.ports.northbound}`, tls: Boolean(nbTls) }, 'northbound (admin API) listening');
      }
      if (cfg.ops) {
        this.ops = new OpsServer({ ...cfg.ops, registry: this.metrics.registry, notReadyReason: () => (this.started ? undefined : 'starting') });
        try {
          this.ports.ops = (await this.ops.listen()).port;
        } catch (err) {
          throw new Error(`cannot listen on ${cfg.ops.host}:${cfg.ops.port} (config.observability.endpoint): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
        }
        this.log.info({ endpoint: `${cfg.ops.host}:${this.ports.ops}` }, 'metrics and health endpoint listening');
      }
      this.started = true;
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async stop(): Promise<void> {
    this.plane?.stop();
    await Promise.all(this.listeners.map((l) => l.close()));
    for (const s of this.servers) s.forceShutdown();
    for (const t of this.tls) t.close();
    await this.ops?.close();
  }
}
