// Loads a .proto service with @grpc/proto-loader for grpc-js (control plane, admin API,
// Workload API: low-rate channels, so no hand-written codec as on the data plane).

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export function protoPath(file: string): string {
  // Source (vitest, tsx) sits beside the .proto; the build runs from dist/proto/.
  for (const rel of [`./${file}`, `../../proto/${file}`]) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new Error(`proto/${file} not found beside the program`);
}

const cache = new Map<string, grpc.ServiceDefinition>();

/** The service definition of `service` (its full name, e.g. slim.admin.v1.AdminService) in `file`. */
export function loadServiceDefinition(file: string, service: string): grpc.ServiceDefinition {
  const key = `${file}#${service}`;
  let def = cache.get(key);
  if (!def) {
    const pkg = protoLoader.loadSync(protoPath(file), { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
    def = pkg[service] as grpc.ServiceDefinition | undefined;
    if (!def) throw new Error(`${file}: service ${service} missing`);
    cache.set(key, def);
  }
  return def;
}

export function clientConstructor(file: string, service: string): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(loadServiceDefinition(file, service), service);
}
