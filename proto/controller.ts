// Types and loader for proto/controller.proto (the node ↔ controller channel), as
// @grpc/proto-loader decodes them (keepCase, defaults filled, oneofs named by `payload`/`action`/`target`).

import type * as grpc from '@grpc/grpc-js';
import { clientConstructor, loadServiceDefinition } from './grpc-loader.js';

export const CONTROLLER_SERVICE = 'slim.controller.v1.ControllerService';

/**
 * Largest control message either way: a registration lists everything a node holds, which in a
 * large network passes grpc-js's 4 MiB default. Both ends set it.
 */
export const MAX_CONTROL_MESSAGE = 64 * 1024 * 1024;

export function controllerServiceDefinition(): grpc.ServiceDefinition {
  return loadServiceDefinition('controller.proto', CONTROLLER_SERVICE);
}

export function controllerClientConstructor(): grpc.ServiceClientConstructor {
  return clientConstructor('controller.proto', CONTROLLER_SERVICE);
}

export interface EndpointMsg {
  local_endpoint: string;
  external_endpoint: string;
  tls: boolean;
}

export interface ConnectionSpecMsg {
  id: string;
  endpoint: string;
  tls: boolean;
  node_id?: string;
  group?: string;
  target?: 'node_id' | 'group';
}

export interface RouteMsg {
  name: string;
  connection_id: string;
}

export type ConnectionStateName = 'up' | 'connecting' | 'failing';

export interface ConnectionStateMsg {
  id: string;
  state: ConnectionStateName | string;
  error: string;
  peer_node_id: string;
  remote_address: string;
}

export interface RegisterMsg {
  node_id: string;
  group: string;
  endpoints: EndpointMsg[];
  subscriptions: string[];
  connections: ConnectionSpecMsg[];
  routes: RouteMsg[];
  static_connections: ConnectionSpecMsg[];
  connection_states: ConnectionStateMsg[];
  version: string;
}

export interface RegisterReplyMsg {
  accepted: boolean;
  reason: string;
  heartbeat_interval_ms: number;
}

export interface SubscriptionUpdateMsg {
  added: string[];
  removed: string[];
}

export interface CommandMsg {
  id: number;
  create_connection?: ConnectionSpecMsg;
  delete_connection?: string;
  set_route?: RouteMsg;
  delete_route?: RouteMsg;
  action?: 'create_connection' | 'delete_connection' | 'set_route' | 'delete_route';
}

export interface CommandAckMsg {
  id: number;
  success: boolean;
  error: string;
}

export interface HeartbeatMsg {
  sent_at_ms: number;
}

export interface NodeMessage {
  register?: RegisterMsg;
  subscriptions?: SubscriptionUpdateMsg;
  ack?: CommandAckMsg;
  heartbeat?: HeartbeatMsg;
  connection_status?: { states: ConnectionStateMsg[] };
  acks?: { acks: CommandAckMsg[] };
  payload?: 'register' | 'subscriptions' | 'ack' | 'heartbeat' | 'connection_status' | 'acks';
}

export interface ControllerMessage {
  register_reply?: RegisterReplyMsg;
  command?: CommandMsg;
  heartbeat?: HeartbeatMsg;
  commands?: { commands: CommandMsg[] };
  payload?: 'register_reply' | 'command' | 'heartbeat' | 'commands';
}

/** Deterministic connection ids: a restarted controller computes the same ones. */
export function nodeConnectionId(nodeId: string): string {
  return `node/${nodeId}`;
}
export function groupConnectionId(group: string): string {
  return `group/${group}`;
}

/** A route's identity: the same name over the same connection is one route. */
export function routeKey(name: string, connectionId: string): string {
  return `${name}\u0000${connectionId}`;
}

/** "node X" or "group G", for logs and the admin API. */
export function connectionTarget(c: Pick<ConnectionSpecMsg, 'node_id' | 'group'>): string {
  return c.node_id ? `node ${c.node_id}` : `group ${c.group ?? ''}`;
}
