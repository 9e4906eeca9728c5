// The slim-node configuration, in the shape of the seed deployment's values
// (services: slim/0: node_id, group_name, dataplane.servers[], dataplane.clients[],
// controller.clients[], tls with file or SPIRE sources).

import { z } from 'zod';
import { byteSize, duration, hostPort, joinHostPort, loadConfigFile, optionalHostPort, parseConfigText, splitHostPort, type HostPort } from '../common/config-file.js';
import { isIP } from 'node:net';
import { normalizeTls, tlsSchema, type TlsSettings } from '../common/tls-config.js';
import { pathPatternField } from '../identity/spiffe-path-pattern.js';

export type { TlsSettings } from '../common/tls-config.js';

// -- data plane -----------------------------------------------------------------------------------

const serverSchema = z.strictObject({
  endpoint: hostPort,
  metadata: z
    .strictObject({
      local_endpoint: z.string().optional(),
      external_endpoint: z.string().optional(),
      // How peers should dial this server; carried to the controller with the endpoints.
      client_config: z.strictObject({ tls: tlsSchema.optional() }).optional(),
    })
    .optional(),
  tls: tlsSchema.optional(),
});

/** http://host:port, https://host:port or host:port (TLS unless tls.insecure). */
const dialEndpoint = z.string().transform((v, ctx) => {
  const m = /^(?:(https?):\/\/)?([^/]+?)\/?$/.exec(v.trim());
  const hp = m ? splitHostPort(m[2]!) : undefined;
  if (!m || !hp) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not an endpoint (e.g. http://10.0.0.5:46357 or https://slim.cluster-a.example:46357)` });
    return z.NEVER;
  }
  return { scheme: (m[1] as 'http' | 'https' | undefined) ?? null, ...hp };
});

const clientSchema = z
  .strictObject({
    endpoint: dialEndpoint,
    tls: tlsSchema.optional(),
    connect_timeout: duration.default(10_000),
    keepalive: z
      .strictObject({ interval: duration.default(10_000), timeout: duration.default(5_000) })
      .default({ interval: 10_000, timeout: 5_000 }),
  })
  .superRefine((c, ctx) => {
    if (c.endpoint.scheme === 'http' && c.tls && !c.tls.insecure && (c.tls.source || c.tls.ca_source || c.tls.cert_file || c.tls.ca_file)) {
      ctx.addIssue({ code: 'custom', path: ['endpoint'], message: 'http:// is plaintext but TLS sources are configured; use https://' });
    }
    if (c.endpoint.scheme === 'https' && c.tls?.insecure) {
      ctx.addIssue({ code: 'custom', path: ['tls', 'insecure'], message: 'https:// endpoint with tls.insecure: true; use http:// for plaintext' });
    }
  });

const serviceSchema = z.strictObject({
  node_id: z.string().min(1, 'must not be empty'),
  group_name: z.string().min(1, 'must not be empty').default('default'),
  dataplane: z
    .strictObject({
      servers: z.array(serverSchema).default([]),
      clients: z.array(clientSchema).default([]),
      max_message_size: byteSize.default(4 * 1024 * 1024),
      connection_queue_limit: byteSize.default(8 * 1024 * 1024),
      default_ttl: z.number().int().min(1).max(127).default(8),
      max_subscriptions_per_link: z.number().int().min(1).default(10_000),
      /** SPIFFE ID paths of node workloads (`*` matches within one segment); default: this node's own. */
      node_spiffe_paths: z.array(pathPatternField).optional(),
    })
    .prefault({}),
  controller: z
    .strictObject({
      clients: z.array(clientSchema).default([]),
      servers: z.array(serverSchema).default([]),
    })
    .prefault({}),
});

export const nodeConfigSchema = z.strictObject({
  tracing: z
    .strictObject({
      log_level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
      display_thread_names: z.boolean().optional(),
      display_thread_ids: z.boolean().optional(),
    })
    .prefault({}),
  runtime: z
    .strictObject({
      n_cores: z.number().int().min(0).optional(),
      thread_name: z.string().optional(),
      drain_timeout: duration.default(10_000),
    })
    .prefault({}),
  observability: z
    .strictObject({
      // /metrics, /healthz, /readyz; "" disables.
      endpoint: optionalHostPort.default({ host: '0.0.0.0', port: 9090 }),
    })
    .prefault({}),
  services: z
    .record(z.string(), serviceSchema)
    .superRefine((services, ctx) => {
      const keys = Object.keys(services);
      if (keys.length === 0) ctx.addIssue({ code: 'custom', message: 'needs one service, e.g. "slim/0"' });
      if (keys.length > 1) ctx.addIssue({ code: 'custom', message: `one slim service per process, found ${keys.join(', ')}` });
      for (const k of keys) {
        if (!/^slim\/\d+$/.test(k)) ctx.addIssue({ code: 'custom', path: [k], message: 'service ids look like slim/0' });
      }
    }),
});

export type NodeConfigInput = z.output<typeof nodeConfigSchema>;

export interface ServerSettings {
  endpoint: HostPort;
  /** host:port peers in the same group dial (pod IP + server port when only an IP is given). */
  localEndpoint?: string;
  /** host:port nodes of other groups dial (the group's LoadBalancer). */
  externalEndpoint?: string;
  tls: TlsSettings;
}

export interface ClientSettings {
  /** http://host:port or https://host:port. */
  url: string;
  host: string;
  port: number;
  tls: TlsSettings;
  connectTimeoutMs: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
}

export interface NodeConfig {
  serviceId: string;
  nodeId: string;
  group: string;
  logLevel: string;
  drainTimeoutMs: number;
  ops?: HostPort;
  servers: ServerSettings[];
  clients: ClientSettings[];
  controllerClients: ClientSettings[];
  maxMessageSize: number;
  queueLimit: number;
  defaultTtl: number;
  maxSubscriptionsPerLink: number;
  /** Patterns of node SPIFFE ID paths; undefined: the node's own path. */
  nodeSpiffePaths?: string[];
}

function withPort(endpoint: string | undefined, port: number): string | undefined {
  if (!endpoint) return undefined;
  if (isIP(endpoint) === 6) return `[${endpoint}]:${port}`;
  return splitHostPort(endpoint) ? endpoint : `${endpoint}:${port}`;
}

function toClient(c: z.output<typeof clientSchema>): ClientSettings {
  const tls = normalizeTls(c.tls);
  const scheme = c.endpoint.scheme ?? (tls.insecure ? 'http' : 'https');
  if (scheme === 'http') tls.insecure = true;
  return {
    url: `${scheme}://${joinHostPort(c.endpoint.host, c.endpoint.port)}`,
    host: c.endpoint.host,
    port: c.endpoint.port,
    tls,
    connectTimeoutMs: c.connect_timeout,
    keepaliveIntervalMs: c.keepalive.interval,
    keepaliveTimeoutMs: c.keepalive.timeout,
  };
}

export function normalizeNodeConfig(input: NodeConfigInput): NodeConfig {
  const [serviceId, svc] = Object.entries(input.services)[0]!;
  const ops = input.observability.endpoint;
  return {
    serviceId,
    nodeId: svc.node_id,
    group: svc.group_name,
    logLevel: input.tracing.log_level,
    drainTimeoutMs: input.runtime.drain_timeout,
    ops: ops === '' ? undefined : ops,
    servers: svc.dataplane.servers.map((s) => ({
      endpoint: s.endpoint,
      localEndpoint: withPort(s.metadata?.local_endpoint, s.endpoint.port),
      externalEndpoint: withPort(s.metadata?.external_endpoint, s.endpoint.port),
      tls: normalizeTls(s.tls),
    })),
    clients: svc.dataplane.clients.map(toClient),
    controllerClients: svc.controller.clients.map(toClient),
    maxMessageSize: svc.dataplane.max_message_size,
    queueLimit: svc.dataplane.connection_queue_limit,
    defaultTtl: svc.dataplane.default_ttl,
    maxSubscriptionsPerLink: svc.dataplane.max_subscriptions_per_link,
    nodeSpiffePaths: svc.dataplane.node_spiffe_paths,
  };
}

export function loadNodeConfig(file: string, env: NodeJS.ProcessEnv = process.env): NodeConfig {
  return normalizeNodeConfig(loadConfigFile(nodeConfigSchema, file, 'node config', env));
}

export function parseNodeConfig(text: string, env: NodeJS.ProcessEnv = process.env, baseDir = '.'): NodeConfig {
  return normalizeNodeConfig(parseConfigText(nodeConfigSchema, text, 'node config', baseDir, env));
}
