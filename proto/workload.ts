// The SPIFFE Workload API service definition, loaded with @grpc/proto-loader for both the client
// (identity/workload-api-client.ts) and the dev issuer's server. Low rate: no hand-written codec.

import type * as grpc from '@grpc/grpc-js';
import { clientConstructor, loadServiceDefinition } from './grpc-loader.js';

/** The header every Workload API call must carry (the SPIFFE Workload API standard). */
export const WORKLOAD_HEADER = 'workload.spiffe.io';

export function workloadServiceDefinition(): grpc.ServiceDefinition {
  return loadServiceDefinition('workload.proto', 'SpiffeWorkloadAPI');
}

export function workloadClientConstructor(): grpc.ServiceClientConstructor {
  return clientConstructor('workload.proto', 'SpiffeWorkloadAPI');
}

// Message shapes as proto-loader decodes them (keepCase, bytes as Buffer, defaults filled).
export interface X509SvidMsg {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint: string;
}
export interface X509SvidResponseMsg {
  svids: X509SvidMsg[];
  crl: Buffer[];
  federated_bundles: Record<string, Buffer>;
}
export interface X509BundlesResponseMsg {
  crl: Buffer[];
  bundles: Record<string, Buffer>;
}
export interface JwtSvidRequestMsg {
  audience: string[];
  spiffe_id: string;
}
export interface JwtSvidMsg {
  spiffe_id: string;
  svid: string;
  hint: string;
}
export interface JwtSvidResponseMsg {
  svids: JwtSvidMsg[];
}
export interface JwtBundlesResponseMsg {
  bundles: Record<string, Buffer>;
}
export interface ValidateJwtSvidRequestMsg {
  audience: string;
  svid: string;
}
/** google.protobuf.Struct as proto-loader represents it. */
export interface StructMsg {
  fields: Record<string, ValueMsg>;
}
export interface ValueMsg {
  kind?: 'nullValue' | 'numberValue' | 'stringValue' | 'boolValue' | 'structValue' | 'listValue';
  nullValue?: string;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: StructMsg;
  listValue?: { values: ValueMsg[] };
}
export interface ValidateJwtSvidResponseMsg {
  spiffe_id: string;
  claims: StructMsg | null;
}

/** JSON value → google.protobuf.Struct value. */
export function toValue(v: unknown): ValueMsg {
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v as Record<string, unknown>) };
}

export function toStruct(o: Record<string, unknown>): StructMsg {
  const fields: Record<string, ValueMsg> = {};
  for (const [k, v] of Object.entries(o)) fields[k] = toValue(v);
  return { fields };
}

/** google.protobuf.Struct value → JSON value. */
export function fromValue(v: ValueMsg): unknown {
  if (v.structValue) return fromStruct(v.structValue);
  if (v.listValue) return v.listValue.values.map(fromValue);
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.numberValue !== undefined) return v.numberValue;
  if (v.boolValue !== undefined) return v.boolValue;
  return null;
}

export function fromStruct(s: StructMsg): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s.fields ?? {})) out[k] = fromValue(v);
  return out;
}
