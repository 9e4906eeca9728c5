// The northbound admin API (slimctl): read-only views of the control plane and a watch stream
// of its events. Every call is authorized: the caller's verified SPIFFE ID must be an admin's.

import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import {
  adminServiceDefinition,
  type AdminEvent,
  type ConnectionInfo,
  type GroupInfo,
  type ListRequest,
  type NodeInfo,
  type Rejection,
  type RouteInfo,
  type SubscriptionInfo,
} from '../proto/admin.js';
import { connectionTarget } from '../proto/controller.js';
import type { Authorizer } from '../identity/authorizer.js';
import type { ConnectionTls } from '../identity/connection-tls.js';
import { verifyGrpcCall } from '../identity/grpc-tls.js';
import { parseSpiffeId } from '../identity/spiffe-id.js';
import type { ControlPlane, HeldConnection, NodeRecord } from './control-plane.js';

type Call = Parameters<typeof verifyGrpcCall>[1];

export class AdminViews {
  constructor(private readonly plane: ControlPlane) {}

  private selected(req: Partial<ListRequest>): NodeRecord[] {
    return [...this.plane.records.values()]
      .filter((r) => (!req.node_id || r.id === req.node_id) && (!req.group || r.group === req.group))
      .sort((a, b) => a.group.localeCompare(b.group) || a.id.localeCompare(b.id));
  }

  nodeInfo(r: NodeRecord): NodeInfo {
    return {
      node_id: r.id,
      group: r.group,
      identity: r.identity,
      endpoints: r.endpoints.map((e) => ({ local_endpoint: e.local_endpoint, external_endpoint: e.external_endpoint, tls: e.tls })),
      status: r.status,
      last_heartbeat_ms: r.lastHeartbeatMs,
      registered_at_ms: r.registeredAtMs,
      subscriptions: this.plane.planner.subscriptionsOf(r.key).size,
      connections: r.connections.size,
      routes: r.routes.size,
      pending_commands: r.session?.pendingCount ?? 0,
      last_error: r.lastError,
    };
  }

  nodes(req: Partial<ListRequest> = {}): NodeInfo[] {
    return this.selected(req).map((r) => this.nodeInfo(r));
  }

  routes(req: Partial<ListRequest> = {}): RouteInfo[] {
    const out: RouteInfo[] = [];
    for (const r of this.selected(req)) {
      for (const h of r.routes.values()) {
        const c = r.connections.get(h.connectionId);
        out.push({
          node_id: r.id,
          group: r.group,
          name: h.name,
          connection_id: h.connectionId,
          target: c ? connectionTarget(c.spec) : '',
          state: h.state,
          error: h.error,
        });
      }
    }
    return out.sort((a, b) => a.group.localeCompare(b.group) || a.node_id.localeCompare(b.node_id) || a.name.localeCompare(b.name) || a.connection_id.localeCompare(b.connection_id));
  }

  connections(req: Partial<ListRequest> = {}): ConnectionInfo[] {
    const out: ConnectionInfo[] = [];
    const info = (r: NodeRecord, c: HeldConnection, kind: string): ConnectionInfo => ({
      node_id: r.id,
      group: r.group,
      connection_id: c.spec.id,
      endpoint: c.spec.endpoint,
      kind,
      target: c.spec.node_id || c.spec.group ? connectionTarget(c.spec) : '',
      state: c.state,
      error: c.error,
      peer_node_id: c.peerNodeId,
      remote_address: c.remoteAddress,
      tls: c.spec.tls,
    });
    for (const r of this.selected(req)) {
      for (const c of r.connections.values()) out.push(info(r, c, c.spec.node_id ? 'local' : 'external'));
      for (const c of r.staticConnections) out.push(info(r, c, 'static'));
    }
    return out;
  }

  subscriptions(req: Partial<ListRequest> = {}): SubscriptionInfo[] {
    const out: SubscriptionInfo[] = [];
    for (const r of this.selected(req)) {
      for (const name of [...this.plane.planner.subscriptionsOf(r.key)].sort()) out.push({ node_id: r.id, group: r.group, name });
    }
    return out;
  }

  rejections(req: Partial<ListRequest> = {}): Rejection[] {
    return [...this.plane.rejections.values()]
      .filter((r) => (!req.node_id || r.node_id === req.node_id) && (!req.group || r.group === req.group))
      .reverse();
  }

  topology(req: Partial<ListRequest> = {}): GroupInfo[] {
    const groups = new Map<string, NodeRecord[]>();
    for (const r of this.selected(req)) {
      let list = groups.get(r.group);
      if (!list) groups.set(r.group, (list = []));
      list.push(r);
    }
    return [...groups.entries()].map(([group, records]) => {
      let up = 0;
      let failing = 0;
      const reaches = new Set<string>();
      const external = new Set<string>();
      for (const r of records) {
        for (const e of r.endpoints) if (e.external_endpoint) external.add(e.external_endpoint);
        for (const c of [...r.connections.values(), ...r.staticConnections]) {
          if (c.state === 'up') up++;
          else if (c.state === 'failing') failing++;
          if (c.spec.group) reaches.add(c.spec.group);
        }
      }
      const nodesUp = records.filter((r) => r.status === 'up').length;
      const health = nodesUp === 0 ? 'down' : nodesUp < records.length || failing > 0 ? 'degraded' : 'healthy';
      return {
        group,
        health,
        external_endpoints: [...external].sort(),
        nodes: records.map((r) => this.nodeInfo(r)),
        connections_up: up,
        connections_failing: failing,
        reaches: [...reaches].sort(),
      };
    });
  }
}

export function addAdminService(server: grpc.Server, plane: ControlPlane, tls: ConnectionTls | undefined, authorize: Authorizer, log: Logger): AdminViews {
  const views = new AdminViews(plane);
  /** The caller's identity when it is an admin's; otherwise the status to end the call with. */
  const check = (call: Call): grpc.ServiceError | undefined => {
    if (!tls) return undefined; // plaintext admin API: bound to loopback by default
    const verdict = verifyGrpcCall(tls, call);
    const fail = (code: grpc.status, details: string): grpc.ServiceError => Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
    if (!verdict.ok) return fail(grpc.status.UNAUTHENTICATED, verdict.message);
    if (!verdict.id) return fail(grpc.status.PERMISSION_DENIED, 'the admin API needs a client certificate with a SPIFFE ID');
    const problem = authorize(parseSpiffeId(verdict.id));
    if (problem) {
      log.warn({ identity: verdict.id, peer: call.getPeer(), reason: problem }, 'refused an admin API call');
      return fail(grpc.status.PERMISSION_DENIED, `not an admin identity: ${problem}`);
    }
    return undefined;
  };
  const unary =
    <T>(list: (req: ListRequest) => T) =>
    (call: grpc.ServerUnaryCall<ListRequest, T>, callback: grpc.sendUnaryData<T>): void => {
      const denied = check(call);
      if (denied) return callback(denied);
      callback(null, list(call.request));
    };
  server.addService(adminServiceDefinition(), {
    ListNodes: unary((req) => ({ nodes: views.nodes(req) })),
    ListRoutes: unary((req) => ({ routes: views.routes(req) })),
    ListConnections: unary((req) => ({ connections: views.connections(req) })),
    ListSubscriptions: unary((req) => ({ subscriptions: views.subscriptions(req) })),
    GetTopology: unary((req) => ({ groups: views.topology(req) })),
    ListRejections: unary((req) => ({ rejections: views.rejections(req) })),
    Watch: (call: grpc.ServerWritableStream<unknown, AdminEvent>) => {
      const denied = check(call);
      if (denied) {
        call.emit('error', denied);
        return;
      }
      const onEvent = (e: AdminEvent): void => {
        call.write(e);
      };
      plane.on('event', onEvent);
      const stop = (): void => {
        plane.off('event', onEvent);
      };
      call.on('cancelled', stop);
      call.on('close', stop);
      call.on('error', stop);
    },
  });
  return views;
}
