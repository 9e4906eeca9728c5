// Connections and routes installed by the controller (DESIGN §4): what the node holds on the
// controller's behalf, independent of any controller being connected right now. Nothing here
// speaks gRPC: the controller client (controller-client.ts, loaded only when one is
// configured) turns commands into these calls, and reports what they say.
//
// A connection keeps a link to an endpoint up (a PeerDialer); a route "name → connection" puts
// exactly one subscription count for the name on the one link the connection resolves to:
// - node target X: the node link whose peer is X, whoever dialled it;
// - group target G: this connection's own dialled link while it is up, else the first node link
//   with a node of G.
// One link per route, so a multicast through a group route never goes out twice. Every node link
// up or down re-resolves the routes of the connections that target that link's node or group.
// The subscription table is shared with interest learned from peers, so a route adds and removes
// exactly one count; when a link goes down the table has already dropped everything for it.

import type { Logger } from 'pino';
import { joinHostPort, splitHostPort } from '../common/config-file.js';
import type { ConnectionTls } from '../identity/connection-tls.js';
import { connectionTarget, routeKey, type ConnectionSpecMsg, type ConnectionStateMsg, type ConnectionStateName, type RouteMsg } from '../proto/controller.js';
import { LinkKind, formatName, parseName, type Name } from '../proto/dataplane.js';
import type { SessionPool } from '../transport/session-pool.js';
import type { Link } from './link.js';
import type { SlimNode } from './node.js';
import { PeerDialer, type DialSettings } from './peer-dialer.js';

/** What a command's acknowledgement says. */
export interface AckResult {
  success: boolean;
  error: string;
}

/** Where a controlled connection leads. */
export type ConnectionTarget = { kind: 'node'; nodeId: string } | { kind: 'group'; group: string };

/** Defaults of dataplane.clients (node/config.ts). */
const CONNECT_TIMEOUT_MS = 10_000;
const KEEPALIVE_INTERVAL_MS = 10_000;
const KEEPALIVE_TIMEOUT_MS = 5_000;

interface Waiter {
  resolve(r: AckResult): void;
  timer: NodeJS.Timeout;
}

interface Route {
  name: Name;
  /** formatName(name): the canonical text. */
  text: string;
  connectionId: string;
  /** The link holding this route's one subscription count, when resolved. */
  link: Link | undefined;
}

interface Connection {
  spec: ConnectionSpecMsg;
  target: ConnectionTarget;
  dialer: PeerDialer;
  routes: Set<Route>;
  /** The last state reported to the listener (JSON), to report changes only. */
  reported: string;
  /** create_connection acknowledgements waiting for the link (or its failure). */
  waiters: Set<Waiter>;
}

/** A controlled connection as the ops endpoint shows it. */
export interface ControlledConnectionJson {
  id: string;
  endpoint: string;
  tls: boolean;
  target: { node_id: string } | { group: string };
  state: ConnectionStateName;
  error: string;
  peer_node_id: string;
  remote_address: string;
}

export interface RouteJson {
  name: string;
  connection_id: string;
  target: { node_id: string } | { group: string };
  link_peer_node_id: string | null;
}

const ok: AckResult = { success: true, error: '' };
const fail = (error: string): AckResult => ({ success: false, error });

function targetOf(spec: ConnectionSpecMsg): ConnectionTarget | undefined {
  const kind = spec.target ?? (spec.node_id ? 'node_id' : spec.group ? 'group' : undefined);
  if (kind === 'node_id' && spec.node_id) return { kind: 'node', nodeId: spec.node_id };
  if (kind === 'group' && spec.group) return { kind: 'group', group: spec.group };
  return undefined;
}

function targetText(t: ConnectionTarget): string {
  return connectionTarget(targetJson(t));
}

function targetJson(t: ConnectionTarget): { node_id: string } | { group: string } {
  return t.kind === 'node' ? { node_id: t.nodeId } : { group: t.group };
}

/** The spec as reported back (registration, admin): one target field, nothing undefined. */
function normalizedSpec(id: string, endpoint: string, tls: boolean, t: ConnectionTarget): ConnectionSpecMsg {
  return t.kind === 'node' ? { id, endpoint, tls, node_id: t.nodeId } : { id, endpoint, tls, group: t.group };
}

export class ControlledState {
  private readonly conns = new Map<string, Connection>();
  private readonly routeMap = new Map<string, Route>();
  private stopped = false;
  private kickScheduled = false;
  private readonly toKick = new Set<Connection>();
  /** Told the ids of connections whose state changed (up / connecting / failing, peer, error). */
  onStatesChanged: ((ids: string[]) => void) | undefined;

  constructor(
    private readonly node: SlimNode,
    private readonly pool: SessionPool,
    private readonly log: Logger,
  ) {}

  // -- commands ---------------------------------------------------------------------------------

  /**
   * Creates (or replaces, when its endpoint, TLS or target changed) the connection `spec.id`.
   * Resolves once the connection leads to a link (success), or with the first failed dial or
   * when the connect timeout passes (failure); the dialer keeps retrying either way.
   */
  createConnection(spec: ConnectionSpecMsg): Promise<AckResult> {
    if (this.stopped) return Promise.resolve(fail('the node is shutting down'));
    const id = spec.id ?? '';
    if (!id) return Promise.resolve(fail('create_connection: the connection id is empty'));
    const hp = splitHostPort(spec.endpoint ?? '');
    if (!hp) return Promise.resolve(fail(`connection ${id}: endpoint "${spec.endpoint ?? ''}" is not host:port`));
    const target = targetOf(spec);
    if (!target) return Promise.resolve(fail(`connection ${id}: no target (node_id or group)`));
    const tlsOn = Boolean(spec.tls);
    const existing = this.conns.get(id);
    if (existing && existing.spec.endpoint === spec.endpoint && existing.spec.tls === tlsOn && targetText(existing.target) === targetText(target)) {
      return this.awaitUp(existing, true);
    }
    let tls: ConnectionTls | undefined;
    if (tlsOn) {
      tls = this.node.dialTls();
      if (!tls) {
        return Promise.resolve(
          fail(
            `connection ${id}: TLS to ${spec.endpoint} needs this node's identity, but services.${this.node.cfg.serviceId}.dataplane.servers[0].tls is not TLS (insecure or no server)`,
          ),
        );
      }
    }
    const settings: DialSettings = {
      url: `${tlsOn ? 'https' : 'http'}://${joinHostPort(hp.host, hp.port)}`,
      host: hp.host,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
      keepaliveIntervalMs: KEEPALIVE_INTERVAL_MS,
      keepaliveTimeoutMs: KEEPALIVE_TIMEOUT_MS,
    };
    const normalized = normalizedSpec(id, spec.endpoint, tlsOn, target);
    let conn: Connection;
    if (existing) {
      const old = existing.dialer;
      existing.spec = normalized;
      existing.target = target;
      existing.dialer = this.dialer(existing, settings, tls);
      this.stopDialer(old, 'controlled connection replaced');
      conn = existing;
      this.log.info({ connection: id, endpoint: spec.endpoint, tls: tlsOn, target: targetText(target) }, 'controlled connection changed');
    } else {
      conn = { spec: normalized, target, dialer: undefined as unknown as PeerDialer, routes: new Set(), reported: '', waiters: new Set() };
      conn.dialer = this.dialer(conn, settings, tls);
      this.conns.set(id, conn);
      this.log.info({ connection: id, endpoint: spec.endpoint, tls: tlsOn, target: targetText(target) }, 'controlled connection created');
    }
    this.reresolve(conn);
    conn.dialer.start();
    const result = this.awaitUp(conn, false);
    this.evaluate(conn);
    return result;
  }

  /** Stops the connection and drops its routes (the link it dialled stays: see stopDialer). */
  deleteConnection(id: string): AckResult {
    const conn = this.conns.get(id);
    if (!conn) return ok;
    this.conns.delete(id);
    for (const r of conn.routes) {
      this.attach(r, undefined);
      this.routeMap.delete(routeKey(r.text, r.connectionId));
    }
    conn.routes.clear();
    this.stopDialer(conn.dialer, 'controlled connection deleted');
    this.settle(conn, fail(`connection ${id} was deleted before it came up`));
    this.log.info({ connection: id }, 'controlled connection deleted');
    return ok;
  }

  /** Routes `name` over connection `connectionId` (idempotent); attaches when the link is up. */
  setRoute(name: string, connectionId: string): AckResult {
    if (this.stopped) return fail('the node is shutting down');
    let parsed: Name;
    try {
      parsed = parseName(name);
    } catch (err) {
      return fail(`invalid route name: ${(err as Error).message}`);
    }
    const conn = this.conns.get(connectionId);
    if (!conn) return fail(`no connection ${connectionId}`);
    const text = formatName(parsed);
    const key = routeKey(text, connectionId);
    if (this.routeMap.has(key)) return ok;
    const r: Route = { name: parsed, text, connectionId, link: undefined };
    this.routeMap.set(key, r);
    conn.routes.add(r);
    this.attach(r, this.resolve(conn));
    this.log.debug({ name: text, connection: connectionId, link: r.link?.label }, 'route set');
    return ok;
  }

  /** Removes a route (idempotent). */
  deleteRoute(name: string, connectionId: string): AckResult {
    let parsed: Name;
    try {
      parsed = parseName(name);
    } catch (err) {
      return fail(`invalid route name: ${(err as Error).message}`);
    }
    const key = routeKey(formatName(parsed), connectionId);
    const r = this.routeMap.get(key);
    if (!r) return ok;
    this.routeMap.delete(key);
    this.conns.get(connectionId)?.routes.delete(r);
    this.attach(r, undefined);
    this.log.debug({ name: r.text, connection: connectionId }, 'route deleted');
    return ok;
  }

  // -- links --------------------------------------------------------------------------------------

  /** A node link came up (SlimNode.linkUp): routes towards its node or group may attach to it. */
  linkUp(link: Link): void {
    if (link.kind === LinkKind.App) return;
    for (const conn of this.conns.values()) {
      if (this.targets(conn, link) || conn.dialer.link === link) this.reresolve(conn);
    }
    this.evaluateAll();
  }

  /** A node link went down (SlimNode.linkDown, after the table dropped its subscriptions). */
  linkDown(link: Link): void {
    if (link.kind === LinkKind.App) return;
    for (const r of this.routeMap.values()) if (r.link === link) r.link = undefined; // already gone from the table
    for (const conn of this.conns.values()) {
      if (!this.targets(conn, link)) continue;
      this.reresolve(conn);
      if (!this.resolve(conn)) this.kickLater(conn);
    }
    this.evaluateAll();
  }

  private targets(conn: Connection, link: Link): boolean {
    // A node target is a node of this node's own group (node ids repeat across groups).
    return conn.target.kind === 'node' ? link.peerNodeId === conn.target.nodeId && link.peerGroup === this.node.cfg.group : link.peerGroup === conn.target.group;
  }

  /** The one link a connection's routes use, or undefined while there is none. */
  private resolve(conn: Connection): Link | undefined {
    const live = (l: Link | undefined): l is Link => l !== undefined && !l.channel.isClosed && this.node.links.has(l);
    if (conn.target.kind === 'node') {
      const l = this.node.nodeLink(conn.target.nodeId);
      return live(l) ? l : undefined;
    }
    const group = conn.target.group;
    const own = conn.dialer.link;
    if (live(own) && own.peerGroup === group) return own;
    for (const l of this.node.nodeLinkList()) if (l.peerGroup === group && live(l)) return l;
    return undefined;
  }

  private reresolve(conn: Connection): void {
    const link = this.resolve(conn);
    for (const r of conn.routes) this.attach(r, link);
  }

  /** Moves a route's one subscription count to `link` (or removes it). */
  private attach(r: Route, link: Link | undefined): void {
    if (r.link === link) return;
    if (r.link && this.node.links.has(r.link)) this.node.table.remove(r.name, r.link);
    r.link = link;
    if (link) this.node.table.add(r.name, link);
  }

  /** Redials after the current turn (a replacing link announces itself first), if still needed. */
  private kickLater(conn: Connection): void {
    this.toKick.add(conn);
    if (this.kickScheduled) return;
    this.kickScheduled = true;
    setImmediate(() => {
      this.kickScheduled = false;
      const conns = [...this.toKick];
      this.toKick.clear();
      for (const c of conns) if (!this.stopped && this.conns.get(c.spec.id) === c && !this.resolve(c)) c.dialer.kick();
    });
  }

  /**
   * Stops dialling; an established link stays. The peer may route over it too (its own
   * connection to this node counts the link we dialled as its own), and from here we cannot see
   * that: closing it dropped the peer's traffic until it redialled. At most one link per peer
   * node stays; either side's keepalive or shutdown ends it.
   */
  private stopDialer(dialer: PeerDialer, reason: string): void {
    dialer.stop(reason, dialer.link !== undefined);
  }

  private dialer(conn: Connection, settings: DialSettings, tls: ConnectionTls | undefined): PeerDialer {
    const d: PeerDialer = new PeerDialer(this.node, settings, tls, this.pool, this.log, {
      logFields: { connection: conn.spec.id },
      // Another link already leads there (the peer dialled us, or a static client did): use it
      // rather than open a second one, which the two nodes would refuse or replace.
      shouldDial: () => conn.dialer === d && !this.resolve(conn),
      onFailure: (_status, reason) => {
        if (conn.dialer !== d) return;
        this.evaluate(conn);
        if (!this.resolve(conn)) this.settle(conn, fail(`connection ${conn.spec.id}: cannot reach ${conn.spec.endpoint}: ${reason}`));
      },
      onLinkDown: () => {
        if (conn.dialer === d) this.evaluate(conn);
      },
    });
    return d;
  }

  // -- acknowledgements and states ----------------------------------------------------------------

  private awaitUp(conn: Connection, existing: boolean): Promise<AckResult> {
    const st = this.stateOf(conn);
    if (st.state === 'up') return Promise.resolve(ok);
    if (existing && st.state === 'failing') return Promise.resolve(fail(`connection ${conn.spec.id}: ${st.error}`));
    return new Promise((resolve) => {
      const w: Waiter = {
        resolve,
        timer: setTimeout(() => {
          conn.waiters.delete(w);
          resolve(fail(`connection ${conn.spec.id}: no link to ${conn.spec.endpoint} within ${CONNECT_TIMEOUT_MS} ms`));
        }, CONNECT_TIMEOUT_MS),
      };
      w.timer.unref();
      conn.waiters.add(w);
    });
  }

  private settle(conn: Connection, r: AckResult): void {
    for (const w of conn.waiters) {
      clearTimeout(w.timer);
      w.resolve(r);
    }
    conn.waiters.clear();
  }

  private stateOf(conn: Connection): ConnectionStateMsg {
    const id = conn.spec.id;
    const link = this.resolve(conn);
    if (link) return { id, state: 'up', error: '', peer_node_id: link.peerNodeId, remote_address: link.channel.remoteAddress };
    const own = conn.dialer.link;
    if (own && !own.channel.isClosed) {
      const where = `${conn.spec.endpoint} leads to node ${own.peerNodeId} of group ${own.peerGroup}, not ${targetText(conn.target)}`;
      return { id, state: 'failing', error: where, peer_node_id: own.peerNodeId, remote_address: own.channel.remoteAddress };
    }
    if (conn.dialer.state === 'failing') return { id, state: 'failing', error: `cannot reach ${conn.spec.endpoint}: ${conn.dialer.lastError}`, peer_node_id: '', remote_address: '' };
    return { id, state: 'connecting', error: '', peer_node_id: '', remote_address: '' };
  }

  /** Settles waiting acks and reports a changed state. */
  private evaluate(conn: Connection): void {
    const st = this.stateOf(conn);
    if (st.state === 'up') this.settle(conn, ok);
    else if (st.state === 'failing' && conn.dialer.link) this.settle(conn, fail(`connection ${conn.spec.id}: ${st.error}`));
    const text = JSON.stringify(st);
    if (text === conn.reported) return;
    const first = conn.reported === '';
    conn.reported = text;
    // A new connection starts out connecting: nothing to tell until that changes.
    if (first && st.state === 'connecting') return;
    this.log[st.state === 'failing' ? 'warn' : 'info'](
      { connection: st.id, state: st.state, error: st.error || undefined, peer_node_id: st.peer_node_id || undefined },
      'controlled connection state',
    );
    this.onStatesChanged?.([st.id]);
  }

  private evaluateAll(): void {
    for (const conn of this.conns.values()) this.evaluate(conn);
  }

  // -- snapshots ----------------------------------------------------------------------------------

  /** The connections as the controller created them (for registration). */
  connections(): ConnectionSpecMsg[] {
    return [...this.conns.values()].map((c) => ({ ...c.spec }));
  }

  routes(): RouteMsg[] {
    return [...this.routeMap.values()].map((r) => ({ name: r.text, connection_id: r.connectionId }));
  }

  /** Current states, of every connection or of `ids` (unknown ids are skipped). */
  states(ids?: Iterable<string>): ConnectionStateMsg[] {
    if (!ids) return [...this.conns.values()].map((c) => this.stateOf(c));
    const out: ConnectionStateMsg[] = [];
    for (const id of ids) {
      const c = this.conns.get(id);
      if (c) out.push(this.stateOf(c));
    }
    return out;
  }

  connectionsJson(): ControlledConnectionJson[] {
    return [...this.conns.values()].map((c) => {
      const st = this.stateOf(c);
      return {
        id: c.spec.id,
        endpoint: c.spec.endpoint,
        tls: c.spec.tls,
        target: targetJson(c.target),
        state: st.state as ConnectionStateName,
        error: st.error,
        peer_node_id: st.peer_node_id,
        remote_address: st.remote_address,
      };
    });
  }

  routesJson(): RouteJson[] {
    return [...this.routeMap.values()].map((r) => {
      const conn = this.conns.get(r.connectionId);
      return {
        name: r.text,
        connection_id: r.connectionId,
        target: conn ? targetJson(conn.target) : { node_id: '' },
        link_peer_node_id: r.link ? r.link.peerNodeId : null,
      };
    });
  }

  /** Connections by state, for metrics. */
  stateCounts(): Record<ConnectionStateName, number> {
    const out: Record<ConnectionStateName, number> = { up: 0, connecting: 0, failing: 0 };
    for (const c of this.conns.values()) out[this.stateOf(c).state as ConnectionStateName]++;
    return out;
  }

  get routeCount(): number {
    return this.routeMap.size;
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  /** Node shutdown: stop every dialer (the node closes the links) and answer waiting acks. */
  stop(): void {
    this.stopped = true;
    for (const conn of this.conns.values()) {
      conn.dialer.stop();
      this.settle(conn, fail('the node is shutting down'));
    }
  }
}
