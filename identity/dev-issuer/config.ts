// The slim-dev-issuer configuration: which trust domains exist, which workloads get an identity,
// and the unix socket through which each workload fetches it (the socket *is* the attestation
// here, so one socket serves exactly one identity).

import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { spiffeIdField, trustDomainField } from '../spiffe-schema.js';
import { duration, loadConfigFile, optionalHostPort, parseConfigText, type HostPort } from '../../common/config-file.js';
import type { SpiffeId } from '../spiffe-id.js';

const WHAT = 'dev issuer config';

/** sun_path is 108 bytes on Linux including the terminating NUL; longer paths fail at bind. */
export const MAX_SOCKET_PATH_BYTES = 107;


const workloadSchema = z.strictObject({
  socket: z.string().min(1, 'must not be empty'),
  spiffe_id: spiffeIdField,
  federates_with: z.array(trustDomainField).optional(),
  dns_names: z.array(z.string().min(1, 'must not be empty')).default([]),
});

/** `unix:/abs`, `unix:///abs`, `unix:rel`, `/abs` or `rel` → the filesystem path. */
export function socketFilePath(socket: string, socketDir: string): string {
  let p = socket.trim();
  if (p.startsWith('unix://')) p = p.slice('unix://'.length);
  else if (p.startsWith('unix:')) p = p.slice('unix:'.length);
  return isAbsolute(p) ? resolve(p) : resolve(socketDir, p);
}

/**
 * The schema needs the config file's directory: relative socket paths are resolved before the
 * duplicate check, so `a.sock` and `./a.sock` are seen as the same socket.
 */
export function devIssuerConfigSchema(baseDir: string) {
  return z
    .strictObject({
      trust_domains: z.array(trustDomainField).min(1, 'needs at least one trust domain, e.g. [cluster-a.example]'),
      svid_ttl: duration.default(3_600_000),
      ca_ttl: duration.default(30 * 24 * 3_600_000),
      socket_dir: z.string().min(1, 'must not be empty').optional(),
      bundle_dir: z.string().min(1, 'must not be empty').optional(),
      log_level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
      observability: z
        .strictObject({
          // /metrics, /healthz, /readyz; off unless asked for, since tests start many issuers.
          endpoint: optionalHostPort.default(''),
        })
        .prefault({}),
      workloads: z.array(workloadSchema).min(1, 'needs at least one workload (socket + spiffe_id)'),
    })
    .superRefine((c, ctx) => {
      if (c.svid_ttl < 1000) ctx.addIssue({ code: 'custom', path: ['svid_ttl'], message: 'must be at least 1s (rotation happens at half of it)' });
      if (c.ca_ttl <= c.svid_ttl) ctx.addIssue({ code: 'custom', path: ['ca_ttl'], message: 'must be longer than svid_ttl' });
      const seenTd = new Set<string>();
      c.trust_domains.forEach((td, i) => {
        if (seenTd.has(td)) ctx.addIssue({ code: 'custom', path: ['trust_domains', i], message: `${td} is listed twice` });
        seenTd.add(td);
      });
      const socketDir = resolve(baseDir, c.socket_dir ?? '.');
      const seenSocket = new Map<string, number>();
      c.workloads.forEach((w, i) => {
        const td = w.spiffe_id.trustDomain;
        if (!seenTd.has(td)) {
          ctx.addIssue({
            code: 'custom',
            path: ['workloads', i, 'spiffe_id'],
            message: `trust domain ${td} is not in trust_domains (${[...seenTd].join(', ')})`,
          });
        }
        w.federates_with?.forEach((f, j) => {
          const path = ['workloads', i, 'federates_with', j];
          if (f === td) ctx.addIssue({ code: 'custom', path, message: `${f} is the workload's own trust domain; its bundle is always served` });
          else if (!seenTd.has(f)) ctx.addIssue({ code: 'custom', path, message: `trust domain ${f} is not in trust_domains` });
        });
        const file = socketFilePath(w.socket, socketDir);
        const bytes = Buffer.byteLength(file);
        if (bytes > MAX_SOCKET_PATH_BYTES) {
          ctx.addIssue({
            code: 'custom',
            path: ['workloads', i, 'socket'],
            message: `${file} is ${bytes} bytes; unix socket paths allow at most ${MAX_SOCKET_PATH_BYTES} (use a shorter socket_dir)`,
          });
        }
        const first = seenSocket.get(file);
        if (first !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['workloads', i, 'socket'], message: `${file} is already the socket of workloads[${first}]; one socket serves one identity` });
        } else seenSocket.set(file, i);
      });
    });
}

export type DevIssuerConfigInput = z.output<ReturnType<typeof devIssuerConfigSchema>>;

export interface DevIssuerWorkload {
  /** Absolute filesystem path of the unix socket. */
  socketPath: string;
  spiffeId: SpiffeId;
  /** Trust domains whose bundles this workload receives besides its own. */
  federatesWith: string[];
  dnsNames: string[];
}

export interface DevIssuerConfig {
  trustDomains: string[];
  svidTtlMs: number;
  caTtlMs: number;
  logLevel: string;
  ops?: HostPort;
  /** Absolute directory for `<td>.pem` and `<td>.spiffe.json`, when set. */
  bundleDir?: string;
  workloads: DevIssuerWorkload[];
}

export function normalizeDevIssuerConfig(input: DevIssuerConfigInput, baseDir: string): DevIssuerConfig {
  const socketDir = resolve(baseDir, input.socket_dir ?? '.');
  const ops = input.observability.endpoint;
  return {
    trustDomains: input.trust_domains,
    svidTtlMs: input.svid_ttl,
    caTtlMs: input.ca_ttl,
    logLevel: input.log_level,
    ops: ops === '' ? undefined : ops,
    bundleDir: input.bundle_dir === undefined ? undefined : resolve(baseDir, input.bundle_dir),
    workloads: input.workloads.map((w) => ({
      socketPath: socketFilePath(w.socket, socketDir),
      spiffeId: w.spiffe_id,
      federatesWith: [...new Set(w.federates_with ?? input.trust_domains.filter((td) => td !== w.spiffe_id.trustDomain))],
      dnsNames: w.dns_names,
    })),
  };
}

function dirOf(file: string): string {
  return resolve(file, '..');
}

export function loadDevIssuerConfig(file: string, env: NodeJS.ProcessEnv = process.env): DevIssuerConfig {
  const baseDir = dirOf(resolve(file));
  return normalizeDevIssuerConfig(loadConfigFile(devIssuerConfigSchema(baseDir), file, WHAT, env), baseDir);
}

/** `baseDir` stands in for the config file's directory (relative socket_dir, socket and bundle_dir). */
export function parseDevIssuerConfig(text: string, baseDir: string, env: NodeJS.ProcessEnv = process.env): DevIssuerConfig {
  const dir = resolve(baseDir);
  return normalizeDevIssuerConfig(parseConfigText(devIssuerConfigSchema(dir), text, WHAT, dir, env), dir);
}
