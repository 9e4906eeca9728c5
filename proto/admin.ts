// Types and loader for proto/admin.proto (slim-controller's northbound admin API), as
// @grpc/proto-loader decodes them (keepCase, defaults filled).

import type * as grpc from '@grpc/grpc-js';
import { clientConstructor, loadServiceDefinition } from './grpc-loader.js';

export const ADMIN_SERVICE = 'slim.admin.v1.AdminService';

export function adminServiceDefinition(): grpc.ServiceDefinition {
  return loadServiceDefinition('admin.proto', ADMIN_SERVICE);
}

export function adminClientConstructor(): grpc.ServiceClientConstructor {
  return clientConstructor('admin.proto', ADMIN_SERVICE);
}

export interface ListRequest {
  node_id: string;
  group: string;
}

export interface NodeEndpointInfo {
  local_endpoint: string;
  external_endpoint: string;
  tls: boolean;
}

export type NodeStatus = 'up' | 'down';

export interface NodeInfo {
  node_id: string;
  group: string;
  identity: string;
  endpoints: NodeEndpointInfo[];
  status: NodeStatus | string;
  last_heartbeat_ms: number;
  registered_at_ms: number;
  subscriptions: number;
  connections: number;
  routes: number;
  pending_commands: number;
  last_error: string;
}

export interface RouteInfo {
  node_id: string;
  group: string;
  name: string;
  connection_id: string;
  target: string;
  state: 'installed' | 'pending' | 'failed' | string;
  error: string;
}

export interface ConnectionInfo {
  node_id: string;
  group: string;
  connection_id: string;
  endpoint: string;
  kind: 'local' | 'external' | 'static' | string;
  target: string;
  state: string;
  error: string;
  peer_node_id: string;
  remote_address: string;
  tls: boolean;
}

export interface SubscriptionInfo {
  node_id: string;
  group: string;
  name: string;
}

export interface GroupInfo {
  group: string;
  health: 'healthy' | 'degraded' | 'down' | string;
  external_endpoints: string[];
  nodes: NodeInfo[];
  connections_up: number;
  connections_failing: number;
  reaches: string[];
}

export interface Rejection {
  node_id: string;
  group: string;
  identity: string;
  peer: string;
  reason: string;
  last_at_ms: number;
  count: number;
}
export interface RejectionList {
  rejections: Rejection[];
}

export interface AdminEvent {
  at_ms: number;
  type: string;
  node_id: string;
  group: string;
  detail: string;
}

export interface NodeList {
  nodes: NodeInfo[];
}
export interface RouteList {
  routes: RouteInfo[];
}
export interface ConnectionList {
  connections: ConnectionInfo[];
}
export interface SubscriptionList {
  subscriptions: SubscriptionInfo[];
}
export interface Topology {
  groups: GroupInfo[];
}
