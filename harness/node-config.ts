// Node config files for locally started nodes (demo, tests, benchmarks), in the same YAML
// shape a chart renders, so they go through the same loader and validator.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';

export interface LocalNodeSpec {
  nodeId: string;
  group: string;
  host?: string;
  port: number;
  opsPort?: number;
  /** Endpoints (http://host:port) of nodes to dial. */
  dial?: string[];
  logLevel?: string;
  extraDataplane?: Record<string, unknown>;
  /** The tls block of the server and of every client (default: plaintext). */
  serverTls?: Record<string, unknown>;
  clientTls?: Record<string, unknown>;
  /** The group's load balancer (host:port) nodes of other groups dial. */
  externalEndpoint?: string;
  /** Controllers to register with: the seed's controller.clients entries. */
  controllers?: { endpoint: string; tls: Record<string, unknown> }[];
}

/**
 * The seed's SPIRE tls block: SVID and bundles from a Workload API socket, accepting peers of
 * the workload's own trust domain and of `trustDomains`.
 */
export function spireTls(socket: string, trustDomains: string[] = []): Record<string, unknown> {
  const socketPath = socket.startsWith('unix:') ? socket : `unix:${socket}`;
  return {
    insecure_skip_verify: false,
    source: { type: 'spire', socket_path: socketPath },
    ca_source: { type: 'spire', socket_path: socketPath, trust_domains: trustDomains },
  };
}

export function localNodeConfig(spec: LocalNodeSpec): Record<string, unknown> {
  const host = spec.host ?? '127.0.0.1';
  return {
    tracing: { log_level: spec.logLevel ?? 'info' },
    runtime: { drain_timeout: '2s' },
    observability: { endpoint: spec.opsPort ? `${host}:${spec.opsPort}` : '' },
    services: {
      'slim/0': {
        node_id: spec.nodeId,
        group_name: spec.group,
        dataplane: {
          servers: [
            {
              endpoint: `${host}:${spec.port}`,
              metadata: { local_endpoint: `${host}:${spec.port}`, ...(spec.externalEndpoint ? { external_endpoint: spec.externalEndpoint } : {}) },
              tls: spec.serverTls ?? { insecure: true },
            },
          ],
          clients: (spec.dial ?? []).map((endpoint) => ({ endpoint, tls: spec.clientTls ?? { insecure: true } })),
          ...spec.extraDataplane,
        },
        ...(spec.controllers ? { controller: { clients: spec.controllers } } : {}),
      },
    },
  };
}

export function scratchDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `${prefix}-`));
}

/** Writes a config object as YAML into `dir` and returns the path. */
export function writeConfig(dir: string, name: string, doc: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, stringify(doc));
  return file;
}
