// The slim-controller configuration, in the shape of the seed's controller chart values:
//
//   config:
//     southbound: { httpHost, httpPort, tls: { useSpiffe }, spire: { socketPath } }
//     northbound: { httpHost, httpPort, ... }      # the admin API (slimctl)
//     reconciler: { heartbeatInterval, nodeGracePeriod, commandTimeout, startupGrace }
//   spire:
//     enabled: true
//     trustedDomains: [spiffe://cluster-a.example, spiffe://cluster-b.example]
//
// The chart renders its `config` and `spire` values into this file unchanged.

import { z } from 'zod';
import { ConfigError, duration, loadConfigFile, optionalHostPort, parseConfigText, type HostPort } from '../common/config-file.js';
import type { TlsSettings } from '../common/tls-config.js';
import { trustDomainField, spiffeIdField } from '../identity/spiffe-schema.js';
import { pathPatternField } from '../identity/spiffe-path-pattern.js';

const port = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : /^\d+$/.test(v.trim()) ? Number(v.trim()) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a port (0-65535; 0 picks a free one)` });
    return z.NEVER;
  }
  return n;
});

const positiveDuration = duration.refine((ms) => ms >= 10, { message: 'must be at least 10ms' });

const tlsSchema = z
  .strictObject({
    useSpiffe: z.boolean().default(false),
    insecure: z.boolean().default(false),
    certFile: z.string().min(1).optional(),
    keyFile: z.string().min(1).optional(),
    caFile: z.string().min(1).optional(),
  })
  .superRefine((t, ctx) => {
    const modes = [t.useSpiffe && 'useSpiffe', t.insecure && 'insecure', (t.certFile || t.keyFile) && 'certFile/keyFile'].filter(Boolean);
    if (modes.length > 1) ctx.addIssue({ code: 'custom', message: `choose one of ${modes.join(', ')}` });
    if (Boolean(t.certFile) !== Boolean(t.keyFile)) ctx.addIssue({ code: 'custom', message: 'certFile and keyFile go together' });
    // Without a CA the listener cannot ask for client certificates: no node or admin would be
    // authenticated, and anyone could register as any node.
    if (t.certFile && !t.caFile) ctx.addIssue({ code: 'custom', path: ['caFile'], message: 'is required with certFile/keyFile: peers are authenticated by their certificates' });
  });

const spireSchema = z.strictObject({
  socketPath: z
    .string()
    .refine((v) => v.startsWith('unix:') || v.startsWith('/'), { message: 'must be unix:///path or an absolute path of the SPIFFE Workload API socket' })
    .optional(),
});

const listenerSchema = z.strictObject({
  httpHost: z.string().min(1).default('0.0.0.0'),
  httpPort: port,
  tls: tlsSchema.optional(),
  spire: spireSchema.optional(),
});

export const controllerConfigSchema = z.strictObject({
  config: z
    .strictObject({
      southbound: listenerSchema.extend({
        httpPort: port.default(50052),
        /** SPIFFE ID paths a node must present to register; [] accepts any path. */
        nodeSpiffePaths: z.array(pathPatternField).default(['/ns/*/sa/slim']),
      }).prefault({}),
      northbound: listenerSchema
        .extend({
          httpHost: z.string().min(1).default('127.0.0.1'),
          httpPort: port.default(50051),
          /** Trust domains whose workloads may use the admin API (default: the controller's own). */
          adminTrustDomains: z.array(trustDomainField).optional(),
          /** Exact SPIFFE IDs allowed to use the admin API (instead of whole trust domains). */
          adminSpiffeIds: z.array(spiffeIdField).optional(),
          enabled: z.boolean().default(true),
        })
        .prefault({}),
      reconciler: z
        .strictObject({
          /** How often both ends of a control channel send a heartbeat; 3 missed ones end the channel. */
          heartbeatInterval: positiveDuration.default(5_000),
          /** How long a disconnected node's routes stay on the other nodes before removal. */
          nodeGracePeriod: duration.default(15_000),
          /**
           * How long a command may go unacknowledged before it is reported as timed out; above
           * the nodes' connect timeout (10 s), which a create_connection's ack may wait for.
           */
          commandTimeout: positiveDuration.default(15_000),
          /** After a (re)start, deletions wait this long, so every node can re-register first. */
          startupGrace: duration.optional(),
        })
        .prefault({}),
      logging: z.strictObject({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info') }).prefault({}),
      observability: z
        .strictObject({
          /** /metrics, /healthz, /readyz; "" disables. */
          endpoint: optionalHostPort.default({ host: '0.0.0.0', port: 9091 }),
        })
        .prefault({}),
    })
    .prefault({}),
  spire: z
    .strictObject({
      enabled: z.boolean().default(false),
      /** Trust domains whose nodes may register, besides the controller's own. */
      trustedDomains: z.array(trustDomainField).default([]),
    })
    .prefault({}),
});

export interface ListenerSettings {
  host: string;
  port: number;
  tls: TlsSettings;
  /** Config key of the listener, for errors. */
  key: string;
}

export interface ControllerConfig {
  southbound: ListenerSettings & { nodeSpiffePaths: string[] };
  northbound?: ListenerSettings & { adminTrustDomains?: string[]; adminSpiffeIds?: string[] };
  heartbeatIntervalMs: number;
  nodeGracePeriodMs: number;
  commandTimeoutMs: number;
  startupGraceMs: number;
  logLevel: string;
  ops?: HostPort;
  trustedDomains: string[];
}

type Listener = z.output<typeof listenerSchema>;

function listenerTls(l: Listener, key: string, spireEnabled: boolean, trustedDomains: string[], inherit?: TlsSettings): TlsSettings {
  const t = l.tls;
  const socketPath = l.spire?.socketPath;
  if (!t) {
    if (inherit) return inherit;
    if (spireEnabled) return spiffeTls(socketPath, trustedDomains);
    throw new Error(`${key}.tls: set useSpiffe: true (SPIRE), certFile/keyFile/caFile, or insecure: true (development only)`);
  }
  if (t.insecure) return { insecure: true, skipVerify: false };
  if (t.useSpiffe) return spiffeTls(socketPath, trustedDomains);
  if (t.certFile && t.keyFile) {
    return {
      insecure: false,
      skipVerify: false,
      cert: { type: 'file', cert: t.certFile, key: t.keyFile, flat: true },
      ...(t.caFile ? { ca: { type: 'file' as const, path: t.caFile, flat: true } } : {}),
    };
  }
  throw new Error(`${key}.tls: set useSpiffe: true (SPIRE), certFile/keyFile/caFile, or insecure: true (development only)`);
}

function spiffeTls(socketPath: string | undefined, trustDomains: string[]): TlsSettings {
  return { insecure: false, skipVerify: false, cert: { type: 'spire', socketPath }, ca: { type: 'spire', socketPath, trustDomains } };
}

export function normalizeControllerConfig(input: z.output<typeof controllerConfigSchema>): ControllerConfig {
  const c = input.config;
  const trusted = input.spire.trustedDomains;
  const sbKey = 'config.southbound';
  const sbTls = listenerTls(c.southbound, sbKey, input.spire.enabled, trusted);
  const nb = c.northbound;
  return {
    southbound: { host: c.southbound.httpHost, port: c.southbound.httpPort, tls: sbTls, key: sbKey, nodeSpiffePaths: c.southbound.nodeSpiffePaths },
    northbound: nb.enabled
      ? {
          host: nb.httpHost,
          port: nb.httpPort,
          // The admin API trusts the southbound's trust domains only for TLS; the authorizer
          // then admits admin identities alone.
          tls: listenerTls(nb, 'config.northbound', input.spire.enabled, trusted, sbTls),
          key: 'config.northbound',
          adminTrustDomains: nb.adminTrustDomains,
          adminSpiffeIds: nb.adminSpiffeIds?.map((i) => i.id),
        }
      : undefined,
    heartbeatIntervalMs: c.reconciler.heartbeatInterval,
    nodeGracePeriodMs: c.reconciler.nodeGracePeriod,
    commandTimeoutMs: c.reconciler.commandTimeout,
    startupGraceMs: c.reconciler.startupGrace ?? c.reconciler.nodeGracePeriod,
    logLevel: c.logging.level,
    ops: c.observability.endpoint === '' ? undefined : c.observability.endpoint,
    trustedDomains: trusted,
  };
}

const WHAT = 'controller config';

function normalized(input: z.output<typeof controllerConfigSchema>): ControllerConfig {
  try {
    return normalizeControllerConfig(input);
  } catch (err) {
    throw new ConfigError(`${WHAT}: ${(err as Error).message}`);
  }
}

export function loadControllerConfig(file: string, env: NodeJS.ProcessEnv = process.env): ControllerConfig {
  return normalized(loadConfigFile(controllerConfigSchema, file, WHAT, env));
}

export function parseControllerConfig(text: string, env: NodeJS.ProcessEnv = process.env, baseDir = '.'): ControllerConfig {
  return normalized(parseConfigText(controllerConfigSchema, text, WHAT, baseDir, env));
}
