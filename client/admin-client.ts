// A typed client of slim-controller's northbound admin API (proto/admin.proto), for slimctl, tests
// and scripts (the demo prints what the controller installed with it). TLS comes from the same
// `TlsSettings` as every other connection (plaintext, PEM files or a SPIFFE Workload API, with the
// controller verified as a SPIFFE peer), through ConnectionTls and grpcChannelCredentials.
//
// Failed calls reject with an AdminApiError whose message is one readable line naming what went
// wrong (unreachable, identity refused, no answer in time...), and whose `kind` lets a program
// decide what to do (retry, give up) without parsing it.

import { isIP } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { TlsSettings } from '../common/tls-config.js';
import { ConnectionTls, type RefusalEvent } from '../identity/connection-tls.js';
import { grpcChannelCredentials } from '../identity/grpc-tls.js';
import {
  adminClientConstructor,
  type AdminEvent,
  type ConnectionInfo,
  type GroupInfo,
  type ListRequest,
  type NodeEndpointInfo,
  type NodeInfo,
  type RouteInfo,
  type SubscriptionInfo,
  type Rejection,
  type Topology,
} from '../proto/admin.js';

export type { AdminEvent, ConnectionInfo, GroupInfo, ListRequest, NodeInfo, Rejection, RouteInfo, SubscriptionInfo, Topology } from '../proto/admin.js';

export const DEFAULT_ADMIN_SERVER = '127.0.0.1:50051';
export const DEFAULT_ADMIN_TIMEOUT_MS = 10_000;

export interface AdminClientOptions {
  /** The controller's admin API, `host:port`. */
  server: string;
  /** `{ insecure: true, skipVerify: false }` for plaintext. */
  tls: TlsSettings;
  /** Deadline of each unary call, and how long to wait for the first SVID (default 10 s). */
  timeoutMs?: number;
  /** Key prefix in TLS setup errors (default `admin.tls`), e.g. `admin.tls.source.socket_path: ...`. */
  tlsWhere?: string;
  logger?: Logger;
}

/** Which rows to list: one node, one group, or (fields empty or absent) everything. */
export type AdminFilter = Partial<ListRequest>;

/**
 * - `unreachable`: no connection (UNAVAILABLE: refused, reset, TLS failure, server gone);
 * - `refused`: the controller does not accept this identity (PERMISSION_DENIED, UNAUTHENTICATED);
 * - `timeout`: no answer before the deadline;
 * - `unsupported`: the server does not implement the call (not the admin port?);
 * - `stream_ended`: the controller closed the event stream (Watch only);
 * - `failed`: anything else the server answered with.
 */
export type AdminErrorKind = 'unreachable' | 'refused' | 'timeout' | 'unsupported' | 'stream_ended' | 'failed';

export class AdminApiError extends Error {
  constructor(
    readonly kind: AdminErrorKind,
    message: string,
    /** gRPC status of the failed call, when there was one. */
    readonly code?: grpc.status,
    /** The server's (or grpc-js's) own words, cleaned up. */
    readonly details = '',
    /** When this client refused the server's certificate: why (verifier reason) and whom. */
    readonly refusal?: { reason: string; message: string; id?: string },
  ) {
    super(message);
    this.name = 'AdminApiError';
  }

  /** Worth retrying later (the watch reconnects on these). */
  get transient(): boolean {
    return this.kind === 'unreachable' || this.kind === 'timeout' || this.kind === 'stream_ended' || (this.kind === 'failed' && this.code !== grpc.status.INVALID_ARGUMENT);
  }
}

/** A running Watch; cancel() ends it without calling onError. */
export interface AdminWatch {
  cancel(): void;
}

type Unary = (req: ListRequest, meta: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => grpc.ClientUnaryCall;
type ServerStream = (req: object, meta: grpc.Metadata, opts: grpc.CallOptions) => grpc.ClientReadableStream<unknown>;

export class AdminClient {
  private closed = false;
  private readonly watches = new Set<grpc.ClientReadableStream<unknown>>();

  private constructor(
    readonly server: string,
    private readonly client: grpc.Client,
    private readonly tls: ConnectionTls | undefined,
    private readonly timeoutMs: number,
    /** The last server certificate this client refused, to explain the UNAVAILABLE that follows. */
    private readonly refusals: { last?: RefusalEvent },
  ) {}

  /**
   * A client of the admin API at `opts.server`. Sets up TLS (waiting for the first SVID when the
   * source is a Workload API; a TlsSetupError names the key at fault) but does not dial: the first
   * call does, and fails fast with `unreachable` when nothing answers.
   */
  static async connect(opts: AdminClientOptions): Promise<AdminClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_ADMIN_TIMEOUT_MS;
    const refusals: { last?: RefusalEvent } = {};
    const tls = await ConnectionTls.create(opts.tls, opts.tlsWhere ?? 'admin.tls', {
      readyTimeoutMs: timeoutMs,
      ...(opts.logger ? { logger: opts.logger } : {}),
      onRefusal: (e) => (refusals.last = e),
    });
    const channelOptions: grpc.ChannelOptions = {};
    const host = hostOf(opts.server);
    // With SPIFFE trust the controller is verified by its SVID, not by a host name; an IP as TLS
    // server name would only draw Node's RFC 6066 warning.
    if (tls?.verification === 'spiffe' && isIP(host)) channelOptions['grpc.ssl_target_name_override'] = 'slim-controller';
    const credentials = tls ? grpcChannelCredentials(tls) : grpc.credentials.createInsecure();
    const Ctor = adminClientConstructor();
    return new AdminClient(opts.server, new Ctor(opts.server, credentials, channelOptions), tls, timeoutMs, refusals);
  }

  /** The SPIFFE ID this client presents ('' for plaintext or a certificate without one). */
  get identity(): string {
    return this.tls?.localId() ?? '';
  }

  async nodes(filter: AdminFilter = {}): Promise<NodeInfo[]> {
    const res = (await this.unary('ListNodes', filter)) as { nodes?: unknown[] };
    return (res.nodes ?? []).map(nodeInfo);
  }

  async routes(filter: AdminFilter = {}): Promise<RouteInfo[]> {
    const res = (await this.unary('ListRoutes', filter)) as { routes?: unknown[] };
    return (res.routes ?? []).map(routeInfo);
  }

  async connections(filter: AdminFilter = {}): Promise<ConnectionInfo[]> {
    const res = (await this.unary('ListConnections', filter)) as { connections?: unknown[] };
    return (res.connections ?? []).map(connectionInfo);
  }

  async subscriptions(filter: AdminFilter = {}): Promise<SubscriptionInfo[]> {
    const res = (await this.unary('ListSubscriptions', filter)) as { subscriptions?: unknown[] };
    return (res.subscriptions ?? []).map(subscriptionInfo);
  }

  /** Registrations the controller refused recently, newest first. */
  async rejections(filter: AdminFilter = {}): Promise<Rejection[]> {
    const res = (await this.unary('ListRejections', filter)) as { rejections?: unknown[] };
    return (res.rejections ?? []).map(rejection);
  }

  async topology(filter: AdminFilter = {}): Promise<Topology> {
    const res = (await this.unary('GetTopology', filter)) as { groups?: unknown[] };
    return { groups: (res.groups ?? []).map(groupInfo) };
  }

  /**
   * Events from now on, in order. `onError` is called once when the stream fails or the
   * controller ends it (an AdminApiError; `transient` says whether reconnecting makes sense); no
   * call follows cancel() or close(). There is no deadline: the stream stays open.
   */
  watch(onEvent: (e: AdminEvent) => void, onError: (err: AdminApiError) => void): AdminWatch {
    if (this.closed) throw new Error('AdminClient is closed');
    const method = (this.client as unknown as Record<string, ServerStream>)['Watch']!.bind(this.client);
    const call = method({}, new grpc.Metadata(), {});
    this.watches.add(call);
    let done = false;
    const finish = (err: AdminApiError): void => {
      if (done) return;
      done = true;
      this.watches.delete(call);
      onError(err);
    };
    call.on('data', (raw: unknown) => {
      if (!done) onEvent(adminEvent(raw));
    });
    call.on('error', (err: grpc.ServiceError) => finish(this.describe('Watch', err)));
    call.on('end', () =>
      finish(new AdminApiError('stream_ended', `the controller admin API at ${this.server} ended the event stream`, grpc.status.OK)),
    );
    return {
      cancel: () => {
        if (done) return;
        done = true;
        this.watches.delete(call);
        call.cancel();
      },
    };
  }

  /** Ends open watches, the channel and the TLS sources (Workload API streams), so the process can exit. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watches) w.cancel();
    this.watches.clear();
    this.client.close();
    this.tls?.close();
  }

  private unary(method: string, filter: AdminFilter): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('AdminClient is closed'));
    const req: ListRequest = { node_id: filter.node_id ?? '', group: filter.group ?? '' };
    const fn = (this.client as unknown as Record<string, Unary>)[method]!.bind(this.client);
    return new Promise((resolve, reject) => {
      fn(req, new grpc.Metadata(), { deadline: Date.now() + this.timeoutMs }, (err, res) => {
        if (err) reject(this.describe(method, err));
        else resolve(res ?? {});
      });
    });
  }

  /** One readable line for a failed call. */
  private describe(method: string, err: grpc.ServiceError): AdminApiError {
    const details = cleanDetails(err.details || err.message);
    const at = `the controller admin API at ${this.server}`;
    switch (err.code) {
      case grpc.status.UNAVAILABLE: {
        const refusal = this.refusals.last;
        this.refusals.last = undefined;
        const why = refusal ? `this client refused its certificate: ${refusal.message}` : explainUnavailable(details, this.tls !== undefined);
        const seen = refusal ? { reason: refusal.reason, message: refusal.message, ...(refusal.id ? { id: refusal.id } : {}) } : undefined;
        return new AdminApiError('unreachable', `cannot reach ${at}: ${why}`, err.code, details, seen);
      }
      case grpc.status.PERMISSION_DENIED:
      case grpc.status.UNAUTHENTICATED:
        return new AdminApiError('refused', `the controller refused this identity${this.identity ? ` (${this.identity})` : ''}: ${details}`, err.code, details);
      case grpc.status.DEADLINE_EXCEEDED:
        return new AdminApiError('timeout', `${at} did not answer ${method} within ${this.timeoutMs / 1000} s`, err.code, details);
      case grpc.status.UNIMPLEMENTED:
        return new AdminApiError('unsupported', `${this.server} does not serve slim.admin.v1.AdminService/${method} (is it the controller's admin port?): ${details}`, err.code, details);
      default:
        return new AdminApiError('failed', `${at} failed ${method}: ${grpc.status[err.code] ?? err.code}: ${details}`, err.code, details);
    }
  }
}

function hostOf(server: string): string {
  const m = /^\[([^\]]+)\]:\d+$/.exec(server) ?? /^([^:]+):\d+$/.exec(server);
  return m ? m[1]! : server;
}

/** grpc-js decorates UNAVAILABLE details with a timestamp and boilerplate; keep the cause. */
function cleanDetails(details: string): string {
  return details
    .replace(/^No connection established\. Last error: /, '')
    .replace(/\s*\(\d{4}-\d{2}-\d{2}T[\d:.]+Z\)/g, '')
    .replace(/\. Resolution note: ?$/, '')
    .replace(/^Error: /, '')
    .trim();
}

function explainUnavailable(details: string, tls: boolean): string {
  if (/ECONNREFUSED/.test(details)) return `connection refused (${details}; is slim-controller running, and is this its admin port?)`;
  if (tls && /ECONNRESET|socket hang up|Connection dropped|closed|disconnected/i.test(details)) {
    return `${details} (the connection closed during or right after the TLS handshake: did the controller refuse this identity, or does it not speak TLS?)`;
  }
  if (/wrong version number|packet length too long|WRONG_VERSION/i.test(details)) {
    return `${details} (TLS to a plaintext server? use --insecure if the admin API is plaintext)`;
  }
  return details || 'unavailable';
}

// -- normalizing what proto-loader decoded (every field present, numbers as numbers) ----------

type Raw = Record<string, unknown>;
const str = (v: unknown): string => (typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v));
const num = (v: unknown): number => (typeof v === 'number' ? v : v === undefined || v === null || v === '' ? 0 : Number(v));
const bool = (v: unknown): boolean => v === true;
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

function endpointInfo(v: unknown): NodeEndpointInfo {
  const r = (v ?? {}) as Raw;
  return { local_endpoint: str(r['local_endpoint']), external_endpoint: str(r['external_endpoint']), tls: bool(r['tls']) };
}

export function nodeInfo(v: unknown): NodeInfo {
  const r = (v ?? {}) as Raw;
  return {
    node_id: str(r['node_id']),
    group: str(r['group']),
    identity: str(r['identity']),
    endpoints: list(r['endpoints']).map(endpointInfo),
    status: str(r['status']),
    last_heartbeat_ms: num(r['last_heartbeat_ms']),
    registered_at_ms: num(r['registered_at_ms']),
    subscriptions: num(r['subscriptions']),
    connections: num(r['connections']),
    routes: num(r['routes']),
    pending_commands: num(r['pending_commands']),
    last_error: str(r['last_error']),
  };
}

export function routeInfo(v: unknown): RouteInfo {
  const r = (v ?? {}) as Raw;
  return {
    node_id: str(r['node_id']),
    group: str(r['group']),
    name: str(r['name']),
    connection_id: str(r['connection_id']),
    target: str(r['target']),
    state: str(r['state']),
    error: str(r['error']),
  };
}

export function connectionInfo(v: unknown): ConnectionInfo {
  const r = (v ?? {}) as Raw;
  return {
    node_id: str(r['node_id']),
    group: str(r['group']),
    connection_id: str(r['connection_id']),
    endpoint: str(r['endpoint']),
    kind: str(r['kind']),
    target: str(r['target']),
    state: str(r['state']),
    error: str(r['error']),
    peer_node_id: str(r['peer_node_id']),
    remote_address: str(r['remote_address']),
    tls: bool(r['tls']),
  };
}

export function subscriptionInfo(v: unknown): SubscriptionInfo {
  const r = (v ?? {}) as Raw;
  return { node_id: str(r['node_id']), group: str(r['group']), name: str(r['name']) };
}

export function rejection(v: unknown): Rejection {
  const r = (v ?? {}) as Raw;
  return {
    node_id: str(r['node_id']),
    group: str(r['group']),
    identity: str(r['identity']),
    peer: str(r['peer']),
    reason: str(r['reason']),
    last_at_ms: num(r['last_at_ms']),
    count: num(r['count']),
  };
}

export function groupInfo(v: unknown): GroupInfo {
  const r = (v ?? {}) as Raw;
  return {
    group: str(r['group']),
    health: str(r['health']),
    external_endpoints: list(r['external_endpoints']).map(str),
    nodes: list(r['nodes']).map(nodeInfo),
    connections_up: num(r['connections_up']),
    connections_failing: num(r['connections_failing']),
    reaches: list(r['reaches']).map(str),
  };
}

export function adminEvent(v: unknown): AdminEvent {
  const r = (v ?? {}) as Raw;
  return { at_ms: num(r['at_ms']), type: str(r['type']), node_id: str(r['node_id']), group: str(r['group']), detail: str(r['detail']) };
}
