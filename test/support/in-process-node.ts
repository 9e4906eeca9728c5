// In-process SlimNode instances on free loopback ports, and per-test cleanup, for the tests that
// drive a node directly (regressions, controlled routes, the controller client).

import { afterEach } from 'vitest';
import { pino, type Logger } from 'pino';
import { freePort } from '../../harness/processes.js';
import { parseNodeConfig } from '../../node/config.js';
import { SlimNode } from '../../node/node.js';

/**
 * Things to undo after each test of the file that calls this (newest first); a failed cleanup
 * must not hide the test's own result.
 */
export function useCleanups(): (() => unknown)[] {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        await c();
      } catch {
        // best effort
      }
    }
  });
  return cleanups;
}

export interface InProcessNodeSpec {
  nodeId: string;
  group?: string;
  /** Endpoints (http://host:port) to dial as dataplane.clients. */
  dial?: string[];
  serverTls?: Record<string, unknown>;
  /** The server's metadata (local_endpoint, external_endpoint), given the chosen port. */
  metadata?: (port: number) => Record<string, unknown>;
  /** More keys of services.slim/0.dataplane. */
  dataplane?: Record<string, unknown>;
  /** services.slim/0.controller.clients. */
  controllers?: { endpoint: string; tls?: Record<string, unknown> }[];
  opsPort?: number;
  logger?: Logger;
}

export interface InProcessNode {
  node: SlimNode;
  port: number;
  /** host:port, as a controller names an endpoint. */
  endpoint: string;
  url: string;
}

/** Starts a node and registers its stop with `cleanups`. */
export async function startInProcessNode(spec: InProcessNodeSpec, cleanups: (() => unknown)[]): Promise<InProcessNode> {
  const port = await freePort();
  const cfg = parseNodeConfig(
    JSON.stringify({
      tracing: { log_level: spec.logger?.level ?? 'silent' },
      observability: { endpoint: spec.opsPort ? `127.0.0.1:${spec.opsPort}` : '' },
      runtime: { drain_timeout: '100ms' },
      services: {
        'slim/0': {
          node_id: spec.nodeId,
          ...(spec.group ? { group_name: spec.group } : {}),
          dataplane: {
            servers: [{ endpoint: `127.0.0.1:${port}`, ...(spec.metadata ? { metadata: spec.metadata(port) } : {}), tls: spec.serverTls ?? { insecure: true } }],
            clients: (spec.dial ?? []).map((endpoint) => ({ endpoint, tls: { insecure: true } })),
            ...spec.dataplane,
          },
          ...(spec.controllers ? { controller: { clients: spec.controllers.map((c) => ({ endpoint: c.endpoint, tls: c.tls ?? { insecure: true } })) } } : {}),
        },
      },
    }),
  );
  const node = new SlimNode(cfg, spec.logger ?? pino({ level: 'silent' }));
  await node.start();
  cleanups.push(() => node.stop());
  return { node, port, endpoint: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}` };
}
