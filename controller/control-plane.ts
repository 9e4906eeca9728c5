// The controller's state and behaviour, without the gRPC plumbing: the registry of nodes (built
// from their registrations alone, so a restarted controller needs no database), the route
// planner, and reconciliation by diff — each node is told only where what it holds differs from
// what the planner wants.

import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { nodeKey, parseName } from '../proto/dataplane.js';
import {
  connectionTarget,
  routeKey,
  type ConnectionSpecMsg,
  type ConnectionStateMsg,
  type EndpointMsg,
  type NodeMessage,
  type RegisterMsg,
} from '../proto/controller.js';
import type { AdminEvent, Rejection } from '../proto/admin.js';
import { parseSpiffeId, type SpiffeId } from '../identity/spiffe-id.js';
import { compilePathPatterns, matchesAny, type PathPattern } from '../identity/spiffe-path-pattern.js';
import { RoutePlanner } from './route-planner.js';
import { NodeSession, type CommandAction, type CommandResult, type ControlStream } from './node-session.js';
import type { ControllerMetrics } from './metrics.js';

export interface HeldConnection {
  spec: ConnectionSpecMsg;
  /** pending (sent, not acknowledged), then as the node reports: up, connecting, failing. */
  state: string;
  error: string;
  peerNodeId: string;
  remoteAddress: string;
}

export interface HeldRoute {
  name: string;
  connectionId: string;
  /** pending, installed or failed. */
  state: string;
  error: string;
}

/** One node as the controller knows it. */
export class NodeRecord {
  status: 'up' | 'down' = 'up';
  session: NodeSession | undefined;
  endpoints: EndpointMsg[] = [];
  registeredAtMs = Date.now();
  lastError = '';
  /** Where its control channel comes from. */
  peer = '';
  graceTimer: NodeJS.Timeout | undefined;
  /** What the node holds, from its registration, then from the commands it acknowledged. */
  readonly connections = new Map<string, HeldConnection>();
  readonly routes = new Map<string, HeldRoute>();
  staticConnections: HeldConnection[] = [];
  /** The names the node last reported its apps subscribe to: what the planner converges to. */
  readonly reported = new Set<string>();
  /** Bumped on every registration: work started for an older one stops when it sees a newer. */
  generation = 0;
  /** The grace period ran out and the node is being removed (until it registers again). */
  expired = false;

  /** nodeKey(group, id): node ids repeat across groups (every cluster has a slim-0). */
  readonly key: string;

  constructor(
    readonly id: string,
    readonly group: string,
    readonly identity: string,
  ) {
    this.key = nodeKey(group, id);
  }

  get lastHeartbeatMs(): number {
    return this.session?.lastHeartbeatMs ?? 0;
  }
}

export interface ControlPlaneOptions {
  heartbeatIntervalMs: number;
  nodeGracePeriodMs: number;
  commandTimeoutMs: number;
  startupGraceMs: number;
  /** Node SPIFFE ID path patterns; [] accepts any path. */
  nodeSpiffePaths: string[];
  /** The southbound verifies client certificates: every registration must carry an identity. */
  requireIdentity: boolean;
}

export type Registration = { ok: true; record: NodeRecord } | { ok: false; reason: string };

const MAX_ID = 253;
/** Refused registrations kept for the admin API. */
const MAX_REJECTIONS = 100;

export class ControlPlane extends EventEmitter {
  readonly planner = new RoutePlanner();
  readonly records = new Map<string, NodeRecord>();
  /** Per (node, name): subscription changes run one after another, in arrival order. */
  private readonly chains = new Map<string, Promise<void>>();
  private readonly nodePaths: PathPattern[];
  private deletionsAllowed = false;
  private readonly startupTimer: NodeJS.Timeout;
  private stopped = false;
  /** Recent refused registrations, by node id + identity + reason, oldest first. */
  readonly rejections = new Map<string, Rejection>();
  /** Set by the program; the bench and unit tests run without. */
  metrics: ControllerMetrics | undefined;

  constructor(
    private readonly opts: ControlPlaneOptions,
    private readonly log: Logger,
  ) {
    super();
    // One listener per admin Watch stream.
    this.setMaxListeners(0);
    this.nodePaths = compilePathPatterns(opts.nodeSpiffePaths);
    // Right after a (re)start most nodes have not re-registered yet, so the planner does not
    // know what their routes lead to. Removing what it does not know about would tear down
    // working routes; additions go out at once, deletions wait for the nodes to come back.
    this.startupTimer = setTimeout(() => {
      this.deletionsAllowed = true;
      this.log.info({ nodes: this.records.size }, 'startup grace over: reconciling deletions');
      void this.syncAll(new Set(this.records.keys()), true);
    }, opts.startupGraceMs);
    this.startupTimer.unref();
    if (opts.startupGraceMs === 0) this.deletionsAllowed = true;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.startupTimer);
    for (const r of this.records.values()) {
      clearTimeout(r.graceTimer);
      r.session?.close('controller shutting down');
    }
  }

  private event(type: string, nodeId: string, group: string, detail: string): void {
    const e: AdminEvent = { at_ms: Date.now(), type, node_id: nodeId, group, detail };
    this.emit('event', e);
  }

  // -- registration ---------------------------------------------------------------------------

  /** Why this registration must be refused, or undefined. */
  private registrationProblem(m: RegisterMsg, identity: string, peer: string): string | undefined {
    if (!m.node_id) return 'node_id is empty';
    if (m.node_id.length > MAX_ID || !/^[A-Za-z0-9._:@-]+$/.test(m.node_id)) return `node_id "${m.node_id.slice(0, 80)}" must be 1-${MAX_ID} of [A-Za-z0-9._:@-]`;
    if (!m.group) return 'group is empty';
    if (identity) {
      let id: SpiffeId;
      try {
        id = parseSpiffeId(identity);
      } catch (err) {
        return `the node's certificate identity ${identity} is not a SPIFFE ID: ${(err as Error).message}`;
      }
      if (id.trustDomain !== m.group) {
        return `group ${m.group} is not the trust domain of the node's identity ${identity} (${id.trustDomain}); a node's group must equal its SPIFFE trust domain`;
      }
      if (this.nodePaths.length > 0 && !matchesAny(this.nodePaths, id.path)) {
        return `${identity} is not a node identity (config.southbound.nodeSpiffePaths: ${this.opts.nodeSpiffePaths.join(', ')})`;
      }
    } else if (this.opts.requireIdentity) {
      return "the node's certificate carries no SPIFFE ID; registration needs one whose trust domain is the node's group";
    }
    const existing = this.records.get(nodeKey(m.group, m.node_id));
    if (existing && existing.identity !== identity) {
      return `node id ${m.node_id} is registered by ${existing.identity || 'an unauthenticated node'}, not ${identity || 'an unauthenticated node'}`;
    }
    // Same identity (nodes of a group share one service account), channel still open, other
    // endpoints: a second node with the same id, not the same node reconnecting. Taking turns
    // would move every route toward it back and forth.
    const live = existing?.session && !existing.session.isClosed;
    if (live && endpointsText(existing.endpoints) !== endpointsText(m.endpoints)) {
      return `node id ${m.node_id} is connected from ${existing.peer} with endpoint(s) ${endpointsText(existing.endpoints) || '(none)'}; this registration from ${peer} names ${endpointsText(m.endpoints) || '(none)'}: two nodes share this id`;
    }
    return undefined;
  }

  /** A node's first message. Accepted nodes get a session; the diff goes out after the reply. */
  register(m: RegisterMsg, identity: string, stream: ControlStream, peer: string): Registration {
    const problem = this.registrationProblem(m, identity, peer);
    if (problem) {
      this.metrics?.registrations.inc({ result: 'rejected' });
      this.log.warn({ node_id: m.node_id, group: m.group, identity: identity || undefined, peer, reason: problem }, 'rejected a node registration');
      this.event('registration_rejected', m.node_id, m.group, problem);
      const key = `${m.node_id}\u0000${identity}\u0000${problem}`;
      const prev = this.rejections.get(key);
      this.rejections.delete(key);
      this.rejections.set(key, { node_id: m.node_id, group: m.group, identity, peer, reason: problem, last_at_ms: Date.now(), count: (prev?.count ?? 0) + 1 });
      if (this.rejections.size > MAX_REJECTIONS) this.rejections.delete(this.rejections.keys().next().value!);
      return { ok: false, reason: problem };
    }
    this.metrics?.registrations.inc({ result: 'accepted' });
    let record = this.records.get(nodeKey(m.group, m.node_id));
    const returning = Boolean(record);
    if (!record) {
      record = new NodeRecord(m.node_id, m.group, identity);
      this.records.set(record.key, record);
    }
    const old = record.session;
    record.session = undefined;
    old?.close('replaced by a new registration of the same node');
    clearTimeout(record.graceTimer);
    record.graceTimer = undefined;
    record.generation++;
    record.expired = false;
    record.status = 'up';
    record.registeredAtMs = Date.now();
    record.endpoints = m.endpoints;
    record.peer = peer;
    // What the node holds is what it says it holds: the diff is against that.
    record.connections.clear();
    record.routes.clear();
    const states = new Map(m.connection_states.map((s) => [s.id, s]));
    for (const c of m.connections) record.connections.set(c.id, held(c, states.get(c.id)));
    for (const r of m.routes) record.routes.set(routeKey(r.name, r.connection_id), { name: r.name, connectionId: r.connection_id, state: 'installed', error: '' });
    record.staticConnections = m.static_connections.map((c) => held(c, states.get(c.id)));

    const session = new NodeSession(stream, {
      heartbeatIntervalMs: this.opts.heartbeatIntervalMs,
      commandTimeoutMs: this.opts.commandTimeoutMs,
      onMessage: (msg) => this.onNodeMessage(record, session, msg),
      onClose: (reason) => this.onSessionClosed(record, session, reason),
      onCommandDone: (action, result, seconds) => this.commandDone(action, result, seconds),
    });
    record.session = session;
    const ep = m.endpoints[0];
    this.log.info(
      {
        node_id: m.node_id,
        group: m.group,
        identity: identity || undefined,
        peer,
        local_endpoint: ep?.local_endpoint || undefined,
        external_endpoint: ep?.external_endpoint || undefined,
        subscriptions: m.subscriptions.length,
        connections: m.connections.length,
        routes: m.routes.length,
        returning,
      },
      `Registering node with ID ${m.node_id}`,
    );
    if (!ep?.local_endpoint) {
      this.log.warn({ node_id: m.node_id }, 'the node advertises no local endpoint: nodes of its group cannot be sent its subscriptions');
    }
    if (!ep?.external_endpoint && !this.planner.externalEndpointOf(m.group)) {
      this.log.warn({ node_id: m.node_id, group: m.group }, 'no node of this group advertises an external endpoint yet: nodes of other groups cannot reach its subscribers');
    }
    this.event('node_up', m.node_id, m.group, returning ? 'registered again' : 'registered');
    return { ok: true, record };
  }

  /** After the reply went out: bring the node's connections and routes to the wanted state. */
  afterRegistration(record: NodeRecord, subscriptions: string[]): void {
    const ep = record.endpoints[0];
    const { changed, respec, externalChanged } = this.planner.upsertNode({
      id: record.key,
      nodeId: record.id,
      group: record.group,
      localEndpoint: ep?.local_endpoint ?? '',
      externalEndpoint: ep?.external_endpoint ?? '',
      tls: ep?.tls ?? false,
    });
    const full = new Set([record.key]);
    for (const connId of respec) {
      // "node/X" is held by X's group mates only; "group/G" by nodes of every other group.
      const holders = connId.startsWith('node/') ? [...this.records.values()].filter((r) => r.group === record.group) : this.records.values();
      for (const r of holders) if (this.planner.wantedFor(r.key)?.connections.has(connId)) full.add(r.key);
    }
    for (const id of full) changed.delete(id);
    void this.syncAll(full, true);
    void this.syncAll(changed);
    // What the node holds now is what counts; every name it reported, had, or has work queued
    // for is brought there (work still running for an older state re-checks when its turn comes).
    const before = new Set([...record.reported, ...this.planner.subscriptionsOf(record.key), ...this.queuedNames(record.key)]);
    record.reported.clear();
    for (const text of subscriptions) {
      const name = this.validName(record, text);
      if (name) record.reported.add(name);
    }
    for (const name of new Set([...before, ...record.reported])) void this.reconcileName(record.key, name);
    // The group may just have got (or changed) its external endpoint: names of the group that
    // could not be exposed to other groups before may be now.
    if (externalChanged) this.reconcileGroup(record.group, record.key);
  }

  /** Re-checks every subscription of `group`'s nodes (after its external endpoint changed). */
  private reconcileGroup(group: string, except?: string): void {
    for (const id of this.planner.membersOf(group)) {
      if (id === except) continue;
      for (const name of this.planner.subscriptionsOf(id)) void this.reconcileName(id, name);
    }
  }

  private queuedNames(node: string): string[] {
    const prefix = `${node}\u0000`;
    return [...this.chains.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
  }

  private validName(record: NodeRecord, text: string): string | undefined {
    try {
      parseName(text);
      return text;
    } catch (err) {
      this.log.warn({ node_id: record.id, reason: (err as Error).message }, 'ignored a malformed subscription name from a node');
      return undefined;
    }
  }

  private onNodeMessage(record: NodeRecord, session: NodeSession, m: NodeMessage): void {
    if (record.session !== session) return;
    if (m.subscriptions) {
      for (const text of m.subscriptions.added) {
        const name = this.validName(record, text);
        if (name) {
          record.reported.add(name);
          void this.reconcileName(record.key, name);
        }
      }
      for (const text of m.subscriptions.removed) {
        const name = this.validName(record, text);
        if (name) {
          record.reported.delete(name);
          void this.reconcileName(record.key, name);
        }
      }
    } else if (m.connection_status) {
      for (const s of m.connection_status.states) this.connectionState(record, s);
    } else if (m.register) {
      this.log.warn({ node_id: record.id }, 'ignored a second registration on an open control channel');
    }
  }

  private connectionState(record: NodeRecord, s: ConnectionStateMsg): void {
    const c = record.connections.get(s.id) ?? record.staticConnections.find((x) => x.spec.id === s.id);
    if (!c) return;
    const was = c.state;
    c.state = s.state;
    c.error = s.error;
    c.peerNodeId = s.peer_node_id;
    c.remoteAddress = s.remote_address;
    if (was !== s.state && s.state === 'failing') {
      record.lastError = `connection ${s.id} (${c.spec.endpoint}): ${s.error}`;
      this.log.warn({ node_id: record.id, connection: s.id, endpoint: c.spec.endpoint, reason: s.error }, 'a node cannot reach a connection endpoint');
      this.event('connection_failing', record.id, record.group, `${s.id} → ${c.spec.endpoint}: ${s.error}`);
    } else if (was !== s.state && s.state === 'up') {
      this.event('connection_up', record.id, record.group, `${s.id} → ${c.spec.endpoint}${s.peer_node_id ? ` (node ${s.peer_node_id})` : ''}`);
    }
  }

  private onSessionClosed(record: NodeRecord, session: NodeSession, reason: string): void {
    if (record.session !== session) return; // replaced by a newer registration
    record.session = undefined;
    if (this.stopped) return;
    record.status = 'down';
    this.log.warn({ node_id: record.id, group: record.group, reason, grace_ms: this.opts.nodeGracePeriodMs }, 'node disconnected; its routes stay for the grace period');
    this.event('node_down', record.id, record.group, reason);
    record.graceTimer = setTimeout(() => void this.removeNode(record), this.opts.nodeGracePeriodMs);
    record.graceTimer.unref();
  }

  /** The grace period ran out: everything toward the node goes, in reverse order of install. */
  private async removeNode(record: NodeRecord): Promise<void> {
    if (this.records.get(record.key) !== record || record.status !== 'down') return;
    const generation = record.generation;
    record.expired = true;
    this.log.info({ node_id: record.id, group: record.group }, 'node did not come back: removing its routes from the other nodes');
    const names = new Set([...this.planner.subscriptionsOf(record.key), ...this.queuedNames(record.key)]);
    await Promise.all([...names].map((n) => this.reconcileName(record.key, n)));
    // Registered again meanwhile (and maybe gone again, with a grace period of its own).
    if (this.records.get(record.key) !== record || record.generation !== generation) return;
    this.forget(record, 'grace period over');
  }

  private forget(record: NodeRecord, why: string): void {
    clearTimeout(record.graceTimer);
    this.planner.removeNode(record.key);
    this.records.delete(record.key);
    this.reconcileGroup(record.group);
    record.session?.close(why);
    this.event('node_removed', record.id, record.group, why);
    // Its endpoint may have been its group's external endpoint: connections to the group may
    // need the new one.
    void this.syncAll(
      [...this.records.keys()].filter((id) => id !== record.key),
      true,
    );
  }

  // -- subscriptions --------------------------------------------------------------------------

  private chain(node: string, name: string, work: () => Promise<void>): Promise<void> {
    const key = `${node}\u0000${name}`;
    const prev = this.chains.get(key) ?? Promise.resolve();
    const next = prev.then(work).catch((err: unknown) => {
      this.log.error({ node, name, err: (err as Error).message }, 'route planning failed');
    });
    this.chains.set(key, next);
    void next.then(() => {
      if (this.chains.get(key) === next) this.chains.delete(key);
    });
    return next;
  }

  /**
   * Brings the planner's view of (node, name) to what the node last reported, whatever was
   * asked in between: one job per (node, name) at a time, each deciding when its turn comes, so
   * a registration racing an unsubscribe (or a removal racing a return) cannot leave routes
   * that lead nowhere or lose ones that are needed. Subscribing is step 1, acknowledged, then
   * step 2; unsubscribing undoes step 2 first.
   */
  reconcileName(node: string, name: string): Promise<void> {
    const seen = performance.now();
    return this.chain(node, name, async () => {
      const record = this.records.get(node);
      const wanted = record !== undefined && !record.expired && record.reported.has(name);
      if (wanted) {
        if (!this.planner.isSubscribed(node, name)) await this.syncAll(this.planner.subscribe(node, name));
        if (this.planner.isExposed(node, name)) {
          // Its group lost its external endpoint (the last node advertising one left).
          if (!this.planner.externalEndpointOf(record.group)) await this.syncAll(this.planner.unexposeRemote(node, name));
          return;
        }
        if (!this.wantedStill(record, name)) return;
        const exposed = this.planner.exposeRemote(node, name);
        await this.syncAll(exposed);
        if (this.planner.isExposed(node, name)) this.metrics?.convergence.observe((performance.now() - seen) / 1000);
        return;
      }
      await this.syncAll(this.planner.unexposeRemote(node, name));
      await this.syncAll(this.planner.unsubscribe(node, name));
    });
  }

  private wantedStill(record: NodeRecord, name: string): boolean {
    return this.records.get(record.key) === record && !record.expired && record.reported.has(name);
  }

  // -- reconciliation by diff -----------------------------------------------------------------

  async syncAll(nodes: Iterable<string>, full = false): Promise<void> {
    const work: Promise<void>[] = [];
    for (const id of nodes) work.push(this.sync(id, full));
    await Promise.all(work);
  }

  /**
   * Sends one node the difference between what it holds and what the planner wants: missing
   * connections, then missing routes, then stale routes, then stale connections (deletions only
   * once the startup grace is over). `full` compares everything (registration, end of the
   * startup grace, endpoint changes); otherwise only what the planner marked as changed.
   * Resolves when the node acknowledged them all.
   */
  sync(node: string, full = false): Promise<void> {
    const dirty = this.planner.takeDirty(node);
    const record = this.records.get(node);
    const session = record?.session;
    const wanted = this.planner.wantedFor(node);
    // A node without a channel gets a full diff when it registers again.
    if (!record || !session || session.isClosed || !wanted) return Promise.resolve();
    if (!full && !dirty) return Promise.resolve();
    const connIds = full ? new Set([...wanted.connections.keys(), ...record.connections.keys()]) : dirty!.connections;
    const routeKeys = full ? new Set([...wanted.routes.keys(), ...record.routes.keys()]) : dirty!.routes;
    const acks: Promise<unknown>[] = [];
    for (const connId of connIds) {
      if (!wanted.connections.has(connId)) continue;
      const spec = this.planner.connectionSpec(connId, record.group);
      if (!spec) continue;
      const have = record.connections.get(connId);
      if (have && sameSpec(have.spec, spec)) continue;
      const h = held(spec);
      record.connections.set(connId, h);
      acks.push(this.command(record, session, { create_connection: spec }, (r) => this.connectionAcked(record, h, r)));
    }
    for (const key of routeKeys) {
      const route = wanted.routes.get(key);
      if (!route) continue;
      const have = record.routes.get(key);
      if (have && have.state !== 'failed') continue;
      if (!record.connections.has(route.connectionId)) continue; // its connection could not be built
      const h: HeldRoute = { name: route.name, connectionId: route.connectionId, state: 'pending', error: '' };
      record.routes.set(key, h);
      acks.push(this.command(record, session, { set_route: { name: route.name, connection_id: route.connectionId } }, (r) => this.routeAcked(record, h, r, true)));
    }
    if (this.deletionsAllowed) {
      for (const key of routeKeys) {
        const h = record.routes.get(key);
        if (!h || wanted.routes.has(key)) continue;
        record.routes.delete(key);
        acks.push(this.command(record, session, { delete_route: { name: h.name, connection_id: h.connectionId } }, (r) => this.routeAcked(record, h, r, false)));
      }
      for (const id of connIds) {
        const c = record.connections.get(id);
        if (!c || wanted.connections.has(id)) continue;
        record.connections.delete(id);
        acks.push(
          this.command(record, session, { delete_connection: id }, (r) => {
            if (r.ok) this.event('connection_removed', record.id, record.group, `${id} → ${c.spec.endpoint}`);
          }),
        );
      }
    }
    return Promise.all(acks).then(() => undefined);
  }

  private command(
    record: NodeRecord,
    session: NodeSession,
    cmd: Parameters<NodeSession['send']>[0],
    done: (r: CommandResult) => void,
  ): Promise<void> {
    return session.send(cmd).then((r) => {
      if (!r.ok) {
        record.lastError = r.error;
        const what = describe(cmd);
        if (!r.error.startsWith('control channel closed')) {
          this.log.warn({ node_id: record.id, command: what, reason: r.error }, r.timedOut ? 'a node did not acknowledge a command in time' : 'a node could not apply a command');
          this.event('command_failed', record.id, record.group, `${what}: ${r.error}`);
        }
      }
      done(r);
    });
  }

  private connectionAcked(record: NodeRecord, h: HeldConnection, r: CommandResult): void {
    if (record.connections.get(h.spec.id) !== h) return;
    if (r.ok) {
      if (h.state === 'pending') h.state = 'up';
      this.event('connection_added', record.id, record.group, `${h.spec.id} → ${h.spec.endpoint} (${connectionTarget(h.spec)})`);
    } else if (r.timedOut || r.error.startsWith('control channel closed')) {
      // Unknown outcome: the node reports what it holds when it registers again.
    } else {
      // The node keeps dialling in the background and reports when the link comes up.
      h.state = 'failing';
      h.error = r.error;
    }
  }

  private routeAcked(record: NodeRecord, h: HeldRoute, r: CommandResult, added: boolean): void {
    if (added) {
      if (record.routes.get(routeKey(h.name, h.connectionId)) !== h) return;
      h.state = r.ok ? 'installed' : 'failed';
      h.error = r.ok ? '' : r.error;
      if (r.ok) this.event('route_added', record.id, record.group, `${h.name} → ${h.connectionId}`);
    } else if (r.ok) {
      this.event('route_removed', record.id, record.group, `${h.name} → ${h.connectionId}`);
    }
  }

  private commandDone(action: CommandAction, r: CommandResult, seconds: number): void {
    this.metrics?.commands.inc({ action, result: r.ok ? 'ok' : r.timedOut ? 'timeout' : 'failed' });
    if (r.ok) this.metrics?.commandLatency.observe({ action }, seconds);
  }

  pendingCommands(): number {
    let n = 0;
    for (const r of this.records.values()) n += r.session?.pendingCount ?? 0;
    return n;
  }
}

function endpointsText(eps: readonly EndpointMsg[]): string {
  return eps.map((e) => e.local_endpoint).join(', ');
}

function held(spec: ConnectionSpecMsg, state?: ConnectionStateMsg): HeldConnection {
  return {
    spec: { id: spec.id, endpoint: spec.endpoint, tls: spec.tls, ...(spec.node_id ? { node_id: spec.node_id } : {}), ...(spec.group ? { group: spec.group } : {}) },
    state: state?.state || 'pending',
    error: state?.error ?? '',
    peerNodeId: state?.peer_node_id ?? '',
    remoteAddress: state?.remote_address ?? '',
  };
}

function sameSpec(a: ConnectionSpecMsg, b: ConnectionSpecMsg): boolean {
  return a.endpoint === b.endpoint && a.tls === b.tls && (a.node_id ?? '') === (b.node_id ?? '') && (a.group ?? '') === (b.group ?? '');
}

function describe(cmd: Parameters<NodeSession['send']>[0]): string {
  if (cmd.create_connection) return `create connection ${cmd.create_connection.id} to ${cmd.create_connection.endpoint}`;
  if (cmd.delete_connection !== undefined) return `delete connection ${cmd.delete_connection}`;
  if (cmd.set_route) return `set route ${cmd.set_route.name} → ${cmd.set_route.connection_id}`;
  return `delete route ${cmd.delete_route!.name} → ${cmd.delete_route!.connection_id}`;
}
