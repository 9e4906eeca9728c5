// Node metrics. The hot path bumps plain numbers; prom-client reads them only when scraped,
// so counting costs an array store per message rather than a labelled-metric lookup.

import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { Kind } from '../proto/dataplane.js';

export const KIND_LABELS = ['none', 'subscribe', 'unsubscribe', 'publish', 'link', 'subscription_ack', 'error'] as const;

export type DropReason =
  | 'no_route'
  | 'ttl_expired'
  | 'no_destination'
  | 'invalid_name'
  | 'queue_full'
  | 'link_closed'
  | 'subscription_limit';

export class NodeStats {
  readonly received = new Float64Array(KIND_LABELS.length);
  readonly sent = new Float64Array(KIND_LABELS.length);
  readonly dropped = new Map<DropReason, number>();
  /** Streams closed because of what the peer sent (malformed frame, oversized message, ...). */
  readonly streamErrors = new Map<string, number>();
  /** Connections refused at negotiation, by reason. */
  readonly refusals = new Map<string, number>();
  /** Peers refused by certificate verification, by `direction/reason`. */
  readonly tlsRefusals = new Map<string, number>();
  /** Controller commands applied, by `action/result` (result: success or failure). */
  readonly controllerCommands = new Map<string, number>();
  bytesInClosed = 0;
  bytesOutClosed = 0;

  drop(reason: DropReason, n = 1): void {
    this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + n);
  }

  countIn(map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1);
  }

  sentKind(kind: Kind, n = 1): void {
    this.sent[kind] = this.sent[kind]! + n;
  }
}

export interface SvidStatus {
  spiffeId: string;
  notAfter: Date;
  updates: number;
  errors: number;
}

export interface NodeGauges {
  /** One entry per Workload API stream the node's TLS uses (shared streams appear once). */
  svids(): SvidStatus[];
  linksByKind(): Record<string, number>;
  subscriptions(): number;
  queueBytes(): number;
  pausedLinks(): number;
  bytesIn(): number;
  bytesOut(): number;
  /** Each configured controller and whether it accepted this node's registration. */
  controllers(): { controller: string; connected: boolean }[];
  /** Controlled connections by state (up, connecting, failing). */
  controlledConnections(): Record<string, number>;
  controlledRoutes(): number;
}

export function createNodeRegistry(stats: NodeStats, gauges: NodeGauges, labels: Record<string, string>): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  collectDefaultMetrics({ register: registry, prefix: 'slim_node_' });

  // Our stats are monotonic totals; each scrape republishes them as absolute values.
  const publish = (c: Counter<string>, label: string, values: Iterable<[string, number]>): void => {
    c.reset();
    for (const [k, n] of values) if (n > 0) c.inc({ [label]: k }, n);
  };
  const byKind = (arr: Float64Array): [string, number][] => KIND_LABELS.map((t, i) => [t, arr[i]!]);

  new Counter({
    name: 'slim_messages_received_total',
    help: 'Messages received on all links, by message type',
    labelNames: ['type'],
    registers: [registry],
    collect() {
      publish(this, 'type', byKind(stats.received));
    },
  });
  new Counter({
    name: 'slim_messages_sent_total',
    help: 'Messages sent on all links, by message type',
    labelNames: ['type'],
    registers: [registry],
    collect() {
      publish(this, 'type', byKind(stats.sent));
    },
  });
  new Counter({
    name: 'slim_messages_dropped_total',
    help: 'Messages dropped, by reason',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      publish(this, 'reason', stats.dropped);
    },
  });
  new Counter({
    name: 'slim_stream_errors_total',
    help: 'Channels closed because of what the peer sent, by gRPC status',
    labelNames: ['status'],
    registers: [registry],
    collect() {
      publish(this, 'status', stats.streamErrors);
    },
  });
  new Counter({
    name: 'slim_link_refusals_total',
    help: 'Connections refused at negotiation, by reason',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      publish(this, 'reason', stats.refusals);
    },
  });
  new Counter({
    name: 'slim_tls_refusals_total',
    help: 'Peers refused by certificate verification (expired, untrusted chain, trust domain not accepted...), by direction and reason',
    labelNames: ['direction', 'reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [k, n] of stats.tlsRefusals) {
        const [direction, reason] = k.split('/');
        this.inc({ direction, reason }, n);
      }
    },
  });
  new Counter({
    name: 'slim_bytes_received_total',
    help: 'Bytes received on data-plane channels',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(gauges.bytesIn());
    },
  });
  new Counter({
    name: 'slim_bytes_sent_total',
    help: 'Bytes sent on data-plane channels',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(gauges.bytesOut());
    },
  });
  new Gauge({
    name: 'slim_links',
    help: 'Established links, by kind (app, peer_in_group, remote_group)',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      for (const [kind, n] of Object.entries(gauges.linksByKind())) this.set({ kind }, n);
    },
  });
  new Gauge({
    name: 'slim_svid_expiry_timestamp_seconds',
    help: 'When the X.509-SVID this node presents expires (alert well before: the SPIRE agent rotates at half-life)',
    labelNames: ['spiffe_id'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of gauges.svids()) this.set({ spiffe_id: s.spiffeId }, Math.floor(s.notAfter.getTime() / 1000));
    },
  });
  new Counter({
    name: 'slim_workload_api_updates_total',
    help: 'X.509 updates (SVID rotations, bundle changes) received from the SPIFFE Workload API',
    labelNames: ['spiffe_id'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of gauges.svids()) this.inc({ spiffe_id: s.spiffeId }, s.updates);
    },
  });
  new Counter({
    name: 'slim_workload_api_errors_total',
    help: 'SPIFFE Workload API failures (each is retried with backoff; the node keeps its last SVID)',
    labelNames: ['spiffe_id'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of gauges.svids()) if (s.errors > 0) this.inc({ spiffe_id: s.spiffeId }, s.errors);
    },
  });
  new Gauge({
    name: 'slim_subscriptions',
    help: 'Subscriptions in force, counted per (name, link)',
    registers: [registry],
    collect() {
      this.set(gauges.subscriptions());
    },
  });
  new Gauge({
    name: 'slim_queue_bytes',
    help: 'Bytes queued for sending across all links',
    registers: [registry],
    collect() {
      this.set(gauges.queueBytes());
    },
  });
  new Gauge({
    name: 'slim_links_paused',
    help: 'Links whose reading is paused because a destination queue is full',
    registers: [registry],
    collect() {
      this.set(gauges.pausedLinks());
    },
  });
  new Gauge({
    name: 'slim_controller_connected',
    help: 'Whether the control channel to each configured controller is up and registered (1) or not (0)',
    labelNames: ['controller'],
    registers: [registry],
    collect() {
      this.reset();
      for (const c of gauges.controllers()) this.set({ controller: c.controller }, c.connected ? 1 : 0);
    },
  });
  new Counter({
    name: 'slim_controller_commands_total',
    help: 'Controller commands applied, by action and result (success or failure)',
    labelNames: ['action', 'result'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [k, n] of stats.controllerCommands) {
        const [action, result] = k.split('/');
        this.inc({ action, result }, n);
      }
    },
  });
  new Gauge({
    name: 'slim_controlled_connections',
    help: 'Connections installed by the controller, by state (up, connecting, failing)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      for (const [state, n] of Object.entries(gauges.controlledConnections())) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'slim_controlled_routes',
    help: 'Routes installed by the controller (name → connection)',
    registers: [registry],
    collect() {
      this.set(gauges.controlledRoutes());
    },
  });
  return registry;
}
