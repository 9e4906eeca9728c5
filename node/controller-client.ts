// The node's side of the control channel (DESIGN §4): one ControllerService.OpenControlChannel
// bidi stream per configured controller (services.<id>.controller.clients[]).
//
// The node registers (id, group, endpoints, local subscriptions, the connections and routes it
// holds), then applies the controller's commands strictly in arrival order, acknowledging each,
// reports its local subscriptions and its controlled connections' states as they change, and
// heartbeats. It reconnects forever with backoff; while no controller is reachable it keeps
// every connection and route and keeps forwarding: nothing is cleaned up on controller loss.
//
// This module brings @grpc/grpc-js. SlimNode imports it dynamically, only when controller
// clients are configured: grpc-js in every node process raised the RTT p99 (heap growth).

import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { Backoff } from '../common/backoff.js';
import { joinHostPort } from '../common/config-file.js';
import type { ConnectionTls } from '../identity/connection-tls.js';
import { grpcChannelCredentials } from '../identity/grpc-tls.js';
import { MAX_CONTROL_MESSAGE, controllerClientConstructor, type CommandAckMsg, type CommandMsg, type ControllerMessage, type NodeMessage, type RegisterMsg } from '../proto/controller.js';
import type { ClientSettings } from './config.js';
import type { AckResult, ControlledState } from './controlled-connections.js';
import type { NodeStats } from './metrics.js';

const DEFAULT_HEARTBEAT_MS = 10_000;
/** Without any message for this many heartbeat intervals, the channel is taken for dead. */
const SILENCE_INTERVALS = 3;

/** What the control plane needs from the node (SlimNode implements it). */
export interface ControlHost {
  readonly controlled: ControlledState;
  readonly stats: NodeStats;
  /** Everything Register carries but the version. */
  registration(): Omit<RegisterMsg, 'version'>;
}

export interface ControllerEndpoint {
  settings: ClientSettings;
  /** TLS for https endpoints (created by SlimNode.start, so a bad setup fails start). */
  tls: ConnectionTls | undefined;
}

export type CommandAction = 'create_connection' | 'delete_connection' | 'set_route' | 'delete_route';

type ControlCall = grpc.ClientDuplexStream<NodeMessage, ControllerMessage>;

let packageVersion: string | undefined;

/** This build's version (package.json), or "slim-ts". */
export function nodeVersion(): string {
  if (packageVersion !== undefined) return packageVersion;
  packageVersion = 'slim-ts';
  // Source (vitest, tsx) sits one level below the root; the build two (dist/node/).
  for (const rel of ['../package.json', '../../package.json']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (!existsSync(p)) continue;
    try {
      const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'slim-ts' && pkg.version) {
        packageVersion = pkg.version;
        break;
      }
    } catch {
      // keep the fallback
    }
  }
  return packageVersion;
}

export function actionOf(cmd: CommandMsg): CommandAction | undefined {
  if (cmd.action) return cmd.action;
  if (cmd.create_connection) return 'create_connection';
  if (cmd.set_route) return 'set_route';
  if (cmd.delete_route) return 'delete_route';
  if (cmd.delete_connection !== undefined) return 'delete_connection';
  return undefined;
}

/** Every controller client of a node, and what they share: batched updates, the command target. */
export class ControlPlane {
  readonly clients: ControllerClient[];
  private readonly added = new Set<string>();
  private readonly removed = new Set<string>();
  private readonly changedStates = new Set<string>();
  private flushScheduled = false;

  constructor(
    private readonly host: ControlHost,
    controllers: ControllerEndpoint[],
    private readonly log: Logger,
  ) {
    this.clients = controllers.map((c) => new ControllerClient(this, host, c, log));
  }

  start(): void {
    this.host.controlled.onStatesChanged = (ids) => this.statesChanged(ids);
    for (const c of this.clients) c.start();
  }

  stop(): void {
    this.host.controlled.onStatesChanged = undefined;
    for (const c of this.clients) c.stop();
  }

  /** A name's first local subscriber appeared (added) or its last one left. Batched per turn. */
  interestChanged(name: string, added: boolean): void {
    // Interest in a name alternates, so an opposite change in the same turn cancels out.
    const [mine, opposite] = added ? [this.added, this.removed] : [this.removed, this.added];
    if (opposite.has(name)) opposite.delete(name);
    else mine.add(name);
    this.schedule();
  }

  statesChanged(ids: string[]): void {
    for (const id of ids) this.changedStates.add(id);
    this.schedule();
  }

  private schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  /**
   * Sends what changed to every controller whose channel is open. Also called before a
   * registration snapshot is taken, so that a new channel starts from the current state and
   * the open ones got every change before it.
   */
  flush(): void {
    this.flushScheduled = false;
    const msgs: NodeMessage[] = [];
    if (this.added.size + this.removed.size > 0) {
      msgs.push({ subscriptions: { added: [...this.added], removed: [...this.removed] } });
      this.added.clear();
      this.removed.clear();
    }
    if (this.changedStates.size > 0) {
      const states = this.host.controlled.states(this.changedStates);
      this.changedStates.clear();
      if (states.length > 0) msgs.push({ connection_status: { states } });
    }
    if (msgs.length === 0) return;
    for (const c of this.clients) for (const m of msgs) c.send(m);
  }

  /** Per controller: its URL and whether it accepted this node's registration. */
  status(): { controller: string; connected: boolean }[] {
    return this.clients.map((c) => ({ controller: c.url, connected: c.isRegistered }));
  }

  /** Applies one command to the node's controlled state. */
  async apply(cmd: CommandMsg): Promise<AckResult> {
    const controlled = this.host.controlled;
    switch (actionOf(cmd)) {
      case 'create_connection':
        return controlled.createConnection(cmd.create_connection!);
      case 'delete_connection':
        return controlled.deleteConnection(cmd.delete_connection ?? '');
      case 'set_route':
        return controlled.setRoute(cmd.set_route!.name, cmd.set_route!.connection_id);
      case 'delete_route':
        return controlled.deleteRoute(cmd.delete_route!.name, cmd.delete_route!.connection_id);
      default:
        return { success: false, error: 'unknown command (no action set)' };
    }
  }

  registration(): RegisterMsg {
    this.flush();
    return { ...this.host.registration(), version: nodeVersion() };
  }
}

/** One controller: connects, registers, applies commands, heartbeats, reconnects. */
export class ControllerClient {
  readonly url: string;
  private readonly target: string;
  private client: grpc.Client | undefined;
  private call: ControlCall | undefined;
  private registered = false;
  private refused = false;
  private stopped = false;
  private lastHeard = 0;
  private failures = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private registerTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly unreachable = new Backoff({ initialMs: 100, maxMs: 5_000, factor: 2 });
  private readonly refusals = new Backoff({ initialMs: 1_000, maxMs: 30_000, factor: 2 });
  private acks: CommandAckMsg[] = [];
  private acksScheduled = false;
  private readonly queue: { call: ControlCall; cmd: CommandMsg }[] = [];
  private processing = false;

  constructor(
    private readonly plane: ControlPlane,
    private readonly host: ControlHost,
    private readonly endpoint: ControllerEndpoint,
    private readonly log: Logger,
  ) {
    const s = endpoint.settings;
    this.url = s.url;
    this.target = joinHostPort(s.host, s.port);
  }

  get isRegistered(): boolean {
    return this.registered;
  }

  start(): void {
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    const call = this.call;
    this.teardown();
    call?.cancel();
  }

  /** Writes on the open channel (registered or waiting for the reply); false when there is none. */
  send(m: NodeMessage): boolean {
    const call = this.call;
    if (!call) return false;
    try {
      call.write(m);
      return true;
    } catch {
      return false;
    }
  }

  private connect(): void {
    this.reconnectTimer = undefined;
    if (this.stopped) return;
    const Client = controllerClientConstructor();
    const credentials = this.endpoint.tls ? grpcChannelCredentials(this.endpoint.tls) : grpc.credentials.createInsecure();
    // A full diff for a node of a large network can pass grpc-js's 4 MiB default.
    const client = new Client(this.target, credentials, { 'grpc.max_receive_message_length': MAX_CONTROL_MESSAGE, 'grpc.max_send_message_length': MAX_CONTROL_MESSAGE });
    this.client = client;
    // The snapshot first: taking it flushes batched updates to every open channel, and this one
    // must see nothing before its registration.
    const registration = this.plane.registration();
    const call = (client as unknown as { OpenControlChannel(): ControlCall }).OpenControlChannel();
    this.call = call;
    this.refused = false;
    this.lastHeard = Date.now();
    let reason = '';
    call.on('data', (m: ControllerMessage) => this.onMessage(call, m));
    call.on('error', (err: grpc.ServiceError) => {
      // grpc-js appends an empty "Resolution note" to connection failures.
      reason = (err.details || err.message).replace(/\.? Resolution note: ?$/, '');
      this.ended(call, reason);
    });
    call.on('status', (st: grpc.StatusObject) => this.ended(call, reason || st.details || `status ${st.code}`));
    call.on('end', () => this.ended(call, reason || 'the controller closed the control channel'));
    // A controller that accepts the call but never answers the registration.
    const timeoutMs = this.endpoint.settings.connectTimeoutMs;
    this.registerTimer = setTimeout(() => this.abandon(call, `no registration reply within ${timeoutMs} ms`), timeoutMs);
    this.send({ register: registration });
  }

  private onMessage(call: ControlCall, m: ControllerMessage): void {
    if (call !== this.call) return;
    this.lastHeard = Date.now();
    if (m.register_reply) {
      clearTimeout(this.registerTimer);
      const r = m.register_reply;
      if (!r.accepted) {
        this.refused = true;
        this.log.warn({ controller: this.url, reason: r.reason }, 'controller refused registration');
        this.abandon(call, `registration refused: ${r.reason}`);
        return;
      }
      const interval = r.heartbeat_interval_ms > 0 ? r.heartbeat_interval_ms : DEFAULT_HEARTBEAT_MS;
      this.registered = true;
      this.failures = 0;
      this.unreachable.reset();
      this.refusals.reset();
      this.log.info({ controller: this.url, heartbeat_interval_ms: interval }, 'registered with controller');
      this.heartbeatTimer = setInterval(() => this.heartbeat(call, interval), interval);
      return;
    }
    if (m.command || m.commands) {
      if (m.command) this.queue.push({ call, cmd: m.command });
      else for (const cmd of m.commands!.commands) this.queue.push({ call, cmd });
      if (!this.processing) void this.process();
    }
    // Heartbeats only prove the controller is alive (lastHeard).
  }

  private heartbeat(call: ControlCall, interval: number): void {
    if (call !== this.call) return;
    const silent = Date.now() - this.lastHeard;
    if (silent > SILENCE_INTERVALS * interval) {
      this.log.warn({ controller: this.url, silent_ms: silent }, `no message from the controller for ${SILENCE_INTERVALS} heartbeat intervals; reconnecting`);
      this.abandon(call, `no message for ${silent} ms`);
      return;
    }
    this.send({ heartbeat: { sent_at_ms: Date.now() } });
  }

  /**
   * Commands applied in arrival order, each acknowledged on the channel it came on (a
   * create_connection's ack may come after later commands' acks: see below).
   */
  private async process(): Promise<void> {
    this.processing = true;
    try {
      while (this.queue.length > 0) {
        const { call, cmd } = this.queue.shift()!;
        // A command queued on a channel that has since closed is not applied: the controller
        // took it as failed and reconciles against the node's next registration.
        if (call !== this.call) continue;
        const action = actionOf(cmd) ?? 'unknown';
        const done = (result: AckResult): void => {
          this.host.stats.countIn(this.host.stats.controllerCommands, `${action}/${result.success ? 'success' : 'failure'}`);
          if (result.success) this.log.debug({ controller: this.url, id: cmd.id, action }, 'applied a controller command');
          else this.log.warn({ controller: this.url, id: cmd.id, action, error: result.error }, 'controller command failed');
          if (call === this.call) this.ack(call, { id: cmd.id, success: result.success, error: result.error });
        };
        const failed = (err: unknown): AckResult => ({ success: false, error: `${action}: ${(err as Error).message}` });
        let pending: Promise<AckResult>;
        try {
          pending = Promise.resolve(this.plane.apply(cmd));
        } catch (err) {
          pending = Promise.resolve(failed(err));
        }
        if (action === 'create_connection') {
          // Applied now (the connection exists and dials; routes on it can be set next), but
          // acknowledged when its link is up or its first dial failed, which can take the
          // connect timeout: the commands behind it must not wait for that.
          void pending.then(done, (err: unknown) => done(failed(err)));
          continue;
        }
        done(await pending.catch(failed));
      }
    } finally {
      this.processing = false;
    }
  }

  /**
   * Acknowledgements of the commands applied in one event-loop turn go back as one message, in
   * order (most commands apply at once, so a batch of commands gets a batch of acks).
   */
  private ack(call: ControlCall, a: CommandAckMsg): void {
    this.acks.push(a);
    if (this.acksScheduled) return;
    this.acksScheduled = true;
    setImmediate(() => {
      this.acksScheduled = false;
      const batch = this.acks;
      this.acks = [];
      if (call !== this.call || batch.length === 0) return;
      this.send(batch.length === 1 ? { ack: batch[0]! } : { acks: { acks: batch } });
    });
  }

  /** Gives up on a channel from our side. */
  private abandon(call: ControlCall, reason: string): void {
    this.ended(call, reason);
    call.cancel();
  }

  private teardown(): void {
    clearTimeout(this.registerTimer);
    clearInterval(this.heartbeatTimer);
    this.call = undefined;
    this.registered = false;
    this.client?.close();
    this.client = undefined;
  }

  private ended(call: ControlCall, reason: string): void {
    if (call !== this.call) return;
    const wasRegistered = this.registered;
    this.teardown();
    if (this.stopped) return;
    let delay: number;
    if (this.refused) delay = this.refusals.next();
    else {
      delay = this.unreachable.next();
      if (wasRegistered) {
        this.log.warn({ controller: this.url, reason }, 'lost the controller; keeping every connection and route, will reconnect');
      } else {
        this.failures++;
        const level = this.failures === 1 || this.failures % 10 === 0 ? 'warn' : 'debug';
        this.log[level]({ controller: this.url, attempt: this.failures, reason }, 'controller unreachable; will retry');
      }
    }
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }
}
