// slim-node: data-plane servers, links to apps and other nodes, and what ties them together
// (negotiation, interest propagation between nodes, cleanup when a link goes), plus the
// connections and routes the controller installs (controlled-connections.ts) and, when
// controller.clients are configured, the control channel (controller-client.ts).

import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { OpsServer } from '../common/ops-server.js';
import { joinHostPort } from '../common/config-file.js';
import { LinkKind, PROTOCOL_VERSION, decodeMessage, formatName, nodeKey, type Link as LinkMsg, type Name } from '../proto/dataplane.js';
import type { Channel, ChannelHandler, ChannelLimits } from '../transport/channel.js';
import { Status, type StatusInfo, statusName } from '../transport/grpc-status.js';
import { DataPlaneServer } from '../transport/server.js';
import { SessionPool } from '../transport/session-pool.js';
import { ConnectionTls, type RefusalEvent } from '../identity/connection-tls.js';
import { parseSpiffeId, type SpiffeId } from '../identity/spiffe-id.js';
import { compilePathPatterns, matchesAny, type PathPattern } from '../identity/spiffe-path-pattern.js';
import type { TlsSettings } from '../common/tls-config.js';
// Types only: the module (and grpc-js with it) is imported in start() when a controller is configured.
import type { ControlPlane } from './controller-client.js';
import type { ConnectionSpecMsg, EndpointMsg, RegisterMsg } from '../proto/controller.js';
import type { NodeConfig } from './config.js';
import { ControlledState, type ControlledConnectionJson, type RouteJson } from './controlled-connections.js';
import { Forwarder } from './forwarder.js';
import { Link } from './link.js';
import { NodeStats, createNodeRegistry, type SvidStatus } from './metrics.js';
import { PeerDialer } from './peer-dialer.js';
import { peerIdentity } from './peer-identity.js';
import { SubscriptionTable, nameKey } from './subscription-table.js';

const NEGOTIATION_TIMEOUT_MS = 10_000;

/** A refusal at negotiation: the gRPC status sent to the peer and a metrics label. */
export interface Refusal {
  code: Status;
  reason: string;
  label: string;
}

/** A link as GET /connections shows it. */
export interface LinkJson {
  kind: 'app' | 'peer_in_group' | 'remote_group';
  peer_node_id: string;
  peer_group: string;
  remote_address: string;
  dialled: boolean;
  identity: string;
  /** The name an app announced (apps only). */
  app?: string;
}

/** A dataplane.clients entry as GET /connections shows it. */
export interface StaticConnectionJson {
  id: string;
  endpoint: string;
  tls: boolean;
  /** up, connecting, failing, or standby (the peer's own link with this node carries the traffic). */
  state: string;
  error: string;
  peer_node_id: string;
  remote_address: string;
}

export interface ConnectionsJson {
  controlled: ControlledConnectionJson[];
  static: StaticConnectionJson[];
  links: LinkJson[];
}

const LINK_KINDS = { [LinkKind.App]: 'app', [LinkKind.PeerInGroup]: 'peer_in_group', [LinkKind.RemoteGroup]: 'remote_group' } as const;

function linkKindName(kind: LinkKind): LinkJson['kind'] {
  return (LINK_KINDS as Record<number, LinkJson['kind']>)[kind] ?? 'remote_group';
}

export class SlimNode {
  readonly stats = new NodeStats();
  readonly table = new SubscriptionTable();
  readonly links = new Set<Link>();
  readonly registry: Registry;
  readonly limits: ChannelLimits;
  /** Node links by nodeKey(group, node id): node ids are unique within a group only (pod names). */
  private readonly nodeLinks = new Map<string, Link>();
  private readonly localInterest = new Map<string, { name: Name; links: number }>();
  private readonly forwarder: Forwarder;
  private readonly servers: DataPlaneServer[] = [];
  private readonly pool = new SessionPool();
  private readonly dialers: PeerDialer[] = [];
  /** Connections and routes installed by the controller. */
  readonly controlled: ControlledState;
  private control: ControlPlane | undefined;
  private ops: OpsServer | undefined;
  private readonly tls: ConnectionTls[] = [];
  /** TLS of each data-plane server (undefined: plaintext), in config order. */
  private serverTls: (ConnectionTls | undefined)[] = [];
  private listening = false;
  private stopping = false;
  /** Bound addresses of the data-plane servers, in config order. */
  readonly addresses: { host: string; port: number }[] = [];

  constructor(
    readonly cfg: NodeConfig,
    readonly log: Logger,
  ) {
    this.limits = { maxMessageSize: cfg.maxMessageSize, queueLimit: cfg.queueLimit };
    this.forwarder = new Forwarder(
      this.table,
      this.stats,
      {
        defaultTtl: cfg.defaultTtl,
        hardQueueLimit: cfg.queueLimit * 4,
        maxSubscriptionsPerLink: cfg.maxSubscriptionsPerLink,
        remoteGroupInterest: cfg.controllerClients.length === 0,
      },
      { interestChanged: (link, name, added) => this.interestChanged(link, name, added) },
      log,
    );
    this.controlled = new ControlledState(this, this.pool, log);
    this.registry = createNodeRegistry(
      this.stats,
      {
        linksByKind: () => {
          const out: Record<string, number> = { app: 0, peer_in_group: 0, remote_group: 0 };
          for (const l of this.links) out[l.kind === LinkKind.App ? 'app' : l.kind === LinkKind.PeerInGroup ? 'peer_in_group' : 'remote_group']!++;
          return out;
        },
        subscriptions: () => this.table.size,
        svids: () => {
          const seen = new Map<string, SvidStatus>();
          for (const t of this.tls) {
            const st = t.svidStatus();
            if (st && !seen.has(st.spiffeId)) seen.set(st.spiffeId, st);
          }
          return [...seen.values()];
        },
        queueBytes: () => this.sumChannels((c) => c.backlog),
        pausedLinks: () => [...this.links].filter((l) => l.channel.isPaused).length,
        bytesIn: () => this.stats.bytesInClosed + this.sumChannels((c) => c.bytesIn),
        bytesOut: () => this.stats.bytesOutClosed + this.sumChannels((c) => c.bytesOut),
        controllers: () => this.control?.status() ?? this.cfg.controllerClients.map((c) => ({ controller: c.url, connected: false })),
        controlledConnections: () => this.controlled.stateCounts(),
        controlledRoutes: () => this.controlled.routeCount,
      },
      { node_id: cfg.nodeId, group: cfg.group },
    );
  }

  private sumChannels(f: (c: Channel) => number): number {
    let n = 0;
    for (const l of this.links) n += f(l.channel);
    return n;
  }

  /** TLS for one configured connection; counts its refused peers in this node's metrics. */
  async connectionTls(settings: TlsSettings, where: string): Promise<ConnectionTls | undefined> {
    const tls = await ConnectionTls.create(settings, where, {
      logger: this.log,
      onRefusal: (e: RefusalEvent) => this.stats.countIn(this.stats.tlsRefusals, `${e.direction}/${e.reason}`),
    });
    if (tls) this.tls.push(tls);
    return tls;
  }

  /** Opens every listener (failing before any traffic if one cannot), then dials peers. */
  async start(): Promise<void> {
    // TLS material first (files read, first SVID fetched), so a bad path or an absent SPIRE
    // agent fails before any port opens.
    // allSettled: when one fails, the others must have finished (and be closed) before we return.
    const at = `services.${this.cfg.serviceId}`;
    const settled = await Promise.allSettled([
      ...this.cfg.servers.map((s, i) => this.connectionTls(s.tls, `${at}.dataplane.servers[${i}].tls`)),
      ...this.cfg.clients.map((c, i) => (c.url.startsWith('https:') ? this.connectionTls(c.tls, `${at}.dataplane.clients[${i}].tls`) : Promise.resolve(undefined))),
      ...this.cfg.controllerClients.map((c, i) =>
        c.url.startsWith('https:') ? this.connectionTls(c.tls, `${at}.controller.clients[${i}].tls`) : Promise.resolve(undefined),
      ),
    ]);
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) {
      for (const t of this.tls) t.close();
      throw failed.reason;
    }
    const all = settled.map((r) => (r as PromiseFulfilledResult<ConnectionTls | undefined>).value);
    const serverTls = all.slice(0, this.cfg.servers.length);
    const clientTls = all.slice(this.cfg.servers.length, this.cfg.servers.length + this.cfg.clients.length);
    const controllerTls = all.slice(this.cfg.servers.length + this.cfg.clients.length);
    this.serverTls = serverTls;
    this.cfg.servers.forEach((s, i) => {
      this.servers.push(
        new DataPlaneServer({
          host: s.endpoint.host,
          port: s.endpoint.port,
          tls: serverTls[i],
          limits: this.limits,
          accept: (ch) => this.accept(ch),
          onReject: (reason, remote) => {
            this.stats.countIn(this.stats.refusals, reason.startsWith('TLS') ? 'tls_handshake' : 'bad_request');
            this.log.warn({ remote, reason }, 'refused a connection');
          },
        }),
      );
    });
    this.cfg.clients.forEach((c, i) => {
      this.dialers.push(new PeerDialer(this, c, clientTls[i], this.pool, this.log));
    });
    for (const [i, server] of this.servers.entries()) {
      const s = this.cfg.servers[i]!;
      try {
        const addr = await server.listen();
        this.addresses.push({ host: addr.address, port: addr.port });
        this.log.info({ endpoint: `${addr.address}:${addr.port}`, tls: !s.tls.insecure, local_endpoint: s.localEndpoint, external_endpoint: s.externalEndpoint }, 'data-plane server listening');
      } catch (err) {
        await this.stop();
        throw new Error(`cannot listen on ${s.endpoint.host}:${s.endpoint.port} (services.${this.cfg.serviceId}.dataplane.servers[${i}].endpoint): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    if (this.cfg.ops) {
      this.ops = new OpsServer({
        ...this.cfg.ops,
        registry: this.registry,
        notReadyReason: () => this.notReadyReason(),
        json: { '/connections': () => this.connectionsJson(), '/routes': () => this.routesJson() },
      });
      try {
        const addr = await this.ops.listen();
        this.log.info({ endpoint: `${addr.address}:${addr.port}` }, 'metrics and health endpoint listening');
      } catch (err) {
        await this.stop();
        throw new Error(`cannot listen on ${this.cfg.ops.host}:${this.cfg.ops.port} (observability.endpoint): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    this.listening = true;
    for (const d of this.dialers) d.start();
    if (this.cfg.controllerClients.length > 0) {
      try {
        // Loaded only here: grpc-js in every node process measurably raised the RTT tail.
        const { ControlPlane } = await import('./controller-client.js');
        if (this.stopping) return;
        this.control = new ControlPlane(
          this,
          this.cfg.controllerClients.map((settings, i) => ({ settings, tls: controllerTls[i] })),
          this.log,
        );
        this.control.start();
      } catch (err) {
        await this.stop();
        throw new Error(`cannot start the controller client (services.${this.cfg.serviceId}.controller.clients): ${(err as Error).message}`);
      }
    }
  }

  notReadyReason(): string | undefined {
    if (this.stopping) return 'draining';
    if (!this.listening) return 'data-plane servers not listening yet';
    return undefined;
  }

  // -- for controlled connections and the controller ----------------------------------------------

  /**
   * TLS for dialling controlled connections: this node's first data-plane server's (its own
   * SVID and accepted trust domains), undefined when that server is plaintext.
   */
  dialTls(): ConnectionTls | undefined {
    return this.serverTls[0];
  }

  /** The link with node `nodeId` of `group` (default: this node's group), if any. */
  nodeLink(nodeId: string, group = this.cfg.group): Link | undefined {
    return this.nodeLinks.get(nodeKey(group, nodeId));
  }

  /** Every node link, oldest first. */
  nodeLinkList(): Iterable<Link> {
    return this.nodeLinks.values();
  }

  /** Names local apps subscribe to. */
  localSubscriptions(): string[] {
    return [...this.localInterest.values()].map((e) => formatName(e.name));
  }

  private endpoints(): EndpointMsg[] {
    return this.cfg.servers.map((s, i) => {
      let local = s.localEndpoint;
      const bound = this.addresses[i];
      if (!local && bound && bound.host !== '0.0.0.0' && bound.host !== '::') local = joinHostPort(bound.host, bound.port);
      return { local_endpoint: local ?? '', external_endpoint: s.externalEndpoint ?? '', tls: !s.tls.insecure };
    });
  }

  private staticConnections(): ConnectionSpecMsg[] {
    return this.cfg.clients.map((c, i) => ({ id: `static/${i}`, endpoint: joinHostPort(c.host, c.port), tls: c.url.startsWith('https:') }));
  }

  /** What a registration with the controller carries (the controller client adds the version). */
  registration(): Omit<RegisterMsg, 'version'> {
    return {
      node_id: this.cfg.nodeId,
      group: this.cfg.group,
      endpoints: this.endpoints(),
      subscriptions: this.localSubscriptions(),
      connections: this.controlled.connections(),
      routes: this.controlled.routes(),
      static_connections: this.staticConnections(),
      connection_states: this.controlled.states(),
    };
  }

  /** GET /connections: the node's own view of its connections and links. */
  connectionsJson(): ConnectionsJson {
    return {
      controlled: this.controlled.connectionsJson(),
      static: this.staticConnections().map((spec, i) => {
        const d = this.dialers[i];
        const link = d?.link;
        return {
          id: spec.id,
          endpoint: spec.endpoint,
          tls: spec.tls,
          state: d?.state ?? 'connecting',
          error: d?.lastError ?? '',
          peer_node_id: link?.peerNodeId ?? '',
          remote_address: link?.channel.remoteAddress ?? '',
        };
      }),
      links: [...this.links].map((l) => ({
        kind: linkKindName(l.kind),
        peer_node_id: l.peerNodeId,
        peer_group: l.peerGroup,
        remote_address: l.channel.remoteAddress,
        dialled: l.dialled,
        identity: l.identity,
        ...(l.isApp ? { app: l.appName } : {}),
      })),
    };
  }

  /** GET /routes: the controller's routes and the link each one uses now. */
  routesJson(): RouteJson[] {
    return this.controlled.routesJson();
  }

  /** The Link message this node sends when negotiating. */
  linkMessage(): LinkMsg {
    return {
      linkId: randomUUID(),
      nodeId: this.cfg.nodeId,
      group: this.cfg.group,
      kind: LinkKind.PeerInGroup,
      protocolVersion: PROTOCOL_VERSION,
    };
  }

  // -- negotiation ---------------------------------------------------------------------------

  /** Handler for a channel accepted by one of our servers: the first message must be a Link. */
  private accept(channel: Channel): ChannelHandler {
    let link: Link | undefined;
    let refused = false;
    const timer = setTimeout(() => {
      if (link || channel.isClosed) return;
      this.refuse(channel, { code: Status.DEADLINE_EXCEEDED, reason: `no link negotiation within ${NEGOTIATION_TIMEOUT_MS} ms`, label: 'negotiation_timeout' });
    }, NEGOTIATION_TIMEOUT_MS);
    timer.unref();
    return {
      onMessage: (buf, start, end) => {
        if (link) {
          this.forwarder.handle(link, buf, start, end);
          return;
        }
        if (refused) return; // the rest of a read that arrived with the refused negotiation
        clearTimeout(timer);
        const m = decodeMessage(buf, start, end);
        if (m.kind !== 'link') {
          refused = true;
          this.refuse(channel, { code: Status.INVALID_ARGUMENT, reason: 'the first message on a channel must be a link negotiation', label: 'no_negotiation' });
          return;
        }
        const result = this.establish(channel, m.link, false);
        if (!(result instanceof Link)) {
          refused = true;
          this.refuse(channel, result);
          return;
        }
        link = result;
        channel.send({ kind: 'link', link: { ...this.linkMessage(), linkId: m.link.linkId } });
        this.linkUp(link);
      },
      onClose: (status) => {
        clearTimeout(timer);
        this.channelClosed(channel, link, status);
      },
    };
  }

  private refuse(channel: Channel, r: Refusal): void {
    this.stats.countIn(this.stats.refusals, r.label);
    // Two nodes that both list each other refuse one another's spare link all the time.
    const level = r.label === 'duplicate_link' ? 'debug' : 'warn';
    this.log[level]({ remote: channel.remoteAddress, reason: r.reason }, 'refused a link');
    channel.close(r.code, r.reason);
  }

  /**
   * Turns a negotiated channel into a Link, or says why not. Used for both accepted and dialled
   * channels, so the two ends of a node-to-node link apply the same rules.
   */
  establish(channel: Channel, peer: LinkMsg, dialled: boolean): Link | Refusal {
    const identity = peerIdentity(channel);
    if (peer.kind === LinkKind.App) {
      const app = peer.app ? formatName(peer.app) : '';
      return new Link(channel, LinkKind.App, '', '', identity, dialled, peer.linkId, app);
    }
    if (peer.kind !== LinkKind.PeerInGroup && peer.kind !== LinkKind.RemoteGroup) {
      return { code: Status.INVALID_ARGUMENT, reason: `link kind ${peer.kind} is not app or node`, label: 'bad_kind' };
    }
    if (!peer.nodeId) return { code: Status.INVALID_ARGUMENT, reason: 'a node link needs a node id', label: 'no_node_id' };
    // Node ids are unique within a group: every cluster's StatefulSet has a slim-0.
    if (peer.nodeId === this.cfg.nodeId && peer.group === this.cfg.group) {
      return { code: Status.FAILED_PRECONDITION, reason: `peer has this node's own node id "${peer.nodeId}" in group ${peer.group} (a node dialling itself, or two nodes sharing an id)`, label: 'same_node_id' };
    }
    const proven = this.nodeIdentityProblem(identity, peer.group);
    if (proven) return { code: Status.PERMISSION_DENIED, reason: `node ${peer.nodeId}: ${proven}`, label: 'not_a_node_identity' };
    const kind = peer.group === this.cfg.group ? LinkKind.PeerInGroup : LinkKind.RemoteGroup;
    const peerKey = nodeKey(peer.group, peer.nodeId);
    const existing = this.nodeLinks.get(peerKey);
    if (existing && !existing.channel.isClosed) {
      // A second link with a node whose link we hold must be that node: once a link proved an
      // identity, only the same identity may replace it.
      if (existing.authenticated && existing.identity !== identity) {
        return {
          code: Status.PERMISSION_DENIED,
          reason: `node id ${peer.nodeId} is linked with identity ${existing.identity}, not ${identity || 'an unauthenticated peer'}`,
          label: 'node_id_taken',
        };
      }
      if (existing.dialled === dialled) {
        // Same direction: the dialler gave up on the old link (its keepalive noticed a dead
        // network before ours did), so the newer link is the live one.
        existing.channel.close(Status.ABORTED, `replaced by a newer link from the same node`);
        this.linkDown(existing, { code: Status.ABORTED, details: 'replaced by a newer link' });
      } else {
        // Both nodes dial each other: keep one link, the one dialled by the lower node id, so
        // every message crosses once. Both ends apply the same rule and agree.
        const preferDialler = nodeKey(this.cfg.group, this.cfg.nodeId) < peerKey ? 'self' : 'peer';
        if ((dialled ? 'self' : 'peer') !== preferDialler) {
          return { code: Status.ABORTED, reason: `already linked with node ${peer.nodeId}`, label: 'duplicate_link' };
        }
        existing.channel.close(Status.ABORTED, `replaced by another link with node ${this.cfg.nodeId}`);
        this.linkDown(existing, { code: Status.ABORTED, details: 'replaced by a duplicate link' });
      }
    }
    return new Link(channel, kind, peer.nodeId, peer.group, identity, dialled, peer.linkId, '', this.controlManaged);
  }

  /**
   * A certificate that passed TLS proves membership of an accepted trust domain, which every
   * workload there has; a node link is trusted to carry other workloads' identity stamps, so it
   * needs more: its SPIFFE ID must be a node's (`dataplane.node_spiffe_paths`, by default the
   * path of this node's own SVID: the chart runs every node under one service account) and its
   * trust domain must be the group it claims (DESIGN §4). Plaintext links prove nothing and
   * carry no stamps either way.
   */
  private nodeIdentityProblem(identity: string, group: string): string | undefined {
    if (!identity) return undefined;
    let id: SpiffeId;
    try {
      id = parseSpiffeId(identity);
    } catch {
      return `its certificate's identity ${identity} is not a SPIFFE ID`;
    }
    const patterns = this.nodePathPatterns();
    if (patterns.length === 0) {
      return `it presents ${identity}, but this node has no SPIFFE ID (nor dataplane.node_spiffe_paths) to recognise node identities by`;
    }
    if (!matchesAny(patterns, id.path)) {
      return `${identity} is not a node identity (nodes run as ${patterns.map((p) => p.text).join(' or ')})`;
    }
    if (id.trustDomain !== group) return `it claims group ${group || '(none)'} but its identity ${identity} is in trust domain ${id.trustDomain}`;
    return undefined;
  }

  private nodePathPatterns(): PathPattern[] {
    let texts = this.cfg.nodeSpiffePaths;
    if (!texts) {
      const own = new Set<string>();
      for (const t of this.tls) {
        const mine = t.localId();
        if (mine) own.add(parseSpiffeId(mine).path);
      }
      texts = [...own];
    }
    return compilePathPatterns(texts);
  }

  linkUp(link: Link): void {
    this.links.add(link);
    if (!link.isApp) {
      this.nodeLinks.set(nodeKey(link.peerGroup, link.peerNodeId), link);
      // Replay local interest so the peer can route to our apps (also after a reconnect).
      if (this.sharesInterestWith(link)) {
        for (const { name } of this.localInterest.values()) link.channel.send({ kind: 'subscribe', subscribe: { name, subscriptionId: 0 } });
      }
    }
    this.log.info({ link: link.label, link_id: link.linkId, dialled: link.dialled, identity: link.identity || undefined }, 'link up');
    if (!link.isApp) this.controlled.linkUp(link);
  }

  /** Handler for established links: every later message goes to the forwarder. */
  forwardTo(link: Link): (buf: Buffer, start: number, end: number) => void {
    return (buf, start, end) => this.forwarder.handle(link, buf, start, end);
  }

  channelClosed(channel: Channel, link: Link | undefined, status: StatusInfo): void {
    this.stats.bytesInClosed += channel.bytesIn;
    this.stats.bytesOutClosed += channel.bytesOut;
    if (status.code === Status.INVALID_ARGUMENT || status.code === Status.RESOURCE_EXHAUSTED || status.code === Status.UNIMPLEMENTED) {
      this.stats.countIn(this.stats.streamErrors, statusName(status.code));
      this.log.warn({ link: link?.label ?? channel.remoteAddress, status: statusName(status.code), reason: status.details }, 'closed a channel over what the peer sent');
    }
    if (link) this.linkDown(link, status);
  }

  private linkDown(link: Link, status: StatusInfo): void {
    if (!this.links.delete(link)) return;
    const key = nodeKey(link.peerGroup, link.peerNodeId);
    if (!link.isApp && this.nodeLinks.get(key) === link) this.nodeLinks.delete(key);
    const names = this.table.removeLink(link);
    if (link.isApp) for (const n of names) this.interestChanged(link, n, false);
    const level = this.stopping || status.code === Status.OK || status.code === Status.CANCELLED ? 'info' : 'warn';
    this.log[level]({ link: link.label, link_id: link.linkId, status: statusName(status.code), reason: status.details || undefined, subscriptions_removed: names.length }, 'link down');
    // After the table dropped the link's subscriptions: controlled routes on it re-resolve.
    if (!link.isApp) this.controlled.linkDown(link);
  }

  // -- interest between nodes -------------------------------------------------------------------

  /**
   * Local apps' interest goes to every linked node and to the controller, once per name. A
   * linked node routes to our apps with it; our nodes do not pass it on (see
   * Link.maxTargetClass): routes further than one hop are the controller's.
   */
  private interestChanged(link: Link, name: Name, added: boolean): void {
    if (!link.isApp) return;
    const key = nameKey(name);
    const entry = this.localInterest.get(key);
    if (added) {
      if (entry) {
        entry.links++;
        return;
      }
      this.localInterest.set(key, { name, links: 1 });
      this.broadcastToNodes('subscribe', name);
      this.control?.interestChanged(formatName(name), true);
    } else if (entry) {
      if (--entry.links > 0) return;
      this.localInterest.delete(key);
      this.broadcastToNodes('unsubscribe', name);
      this.control?.interestChanged(formatName(name), false);
    }
  }

  /**
   * With a controller, nodes of other groups learn our names from its routes only. A node can
   * hold links to two nodes of one remote group (one it dialled through their load balancer,
   * one that dialled ours); interest from both would make a multicast reach the group twice,
   * once per link, and the group's nodes would deliver both copies.
   */
  private sharesInterestWith(link: Link): boolean {
    return !(this.controlManaged && link.kind === LinkKind.RemoteGroup);
  }

  private get controlManaged(): boolean {
    return this.cfg.controllerClients.length > 0;
  }

  private broadcastToNodes(kind: 'subscribe' | 'unsubscribe', name: Name): void {
    for (const l of this.nodeLinks.values()) {
      if (!this.sharesInterestWith(l)) continue;
      if (kind === 'subscribe') l.channel.send({ kind, subscribe: { name, subscriptionId: 0 } });
      else l.channel.send({ kind, unsubscribe: { name, subscriptionId: 0 } });
    }
  }

  // -- shutdown -------------------------------------------------------------------------------

  /** Stops accepting, tells every peer, waits up to drainTimeout for queues to flush. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.control?.stop();
    this.controlled.stop();
    for (const d of this.dialers) d.stop();
    const deadline = Date.now() + this.cfg.drainTimeoutMs;
    while (this.sumChannels((c) => c.backlog) > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await Promise.all(this.servers.map((s) => s.close(Status.UNAVAILABLE, `node ${this.cfg.nodeId} is shutting down`, 1000)));
    for (const l of [...this.links]) l.channel.close(Status.UNAVAILABLE, `node ${this.cfg.nodeId} is shutting down`);
    this.pool.close();
    for (const t of this.tls) t.close();
    await this.ops?.close();
  }
}
