// A real load balancer (haproxy, TCP mode) for a cluster's LoadBalancer address in the netns
// topology: what MetalLB + kube-proxy do in front of a cluster's SLIM nodes. It passes bytes
// through, so TLS stays end to end between the dialling node and whichever node it lands on.

import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ManagedProcess, ProcessGroup, SpawnOptions } from './processes.js';
import { waitForListening } from './netns.js';

export interface HaproxyBackend {
  /** Server name in haproxy's config and logs; defaults to `HOST_PORT`. */
  name?: string;
  host: string;
  port: number;
}

export interface HaproxyFrontend {
  /** Letters, digits, '-' and '_'; names the frontend and its backend. */
  name: string;
  bind: { host: string; port: number };
  backends: HaproxyBackend[];
}

export interface HaproxyConfigOptions {
  frontends: HaproxyFrontend[];
  /** Health-check interval; a backend is out after 2 failed checks and back after 1 good one. */
  checkIntervalMs?: number;
  connectTimeoutMs?: number;
  /** Idle timeout for an established connection; long, so HTTP/2 streams that idle are not cut. */
  idleTimeoutMs?: number;
}

const HAPROXY_CANDIDATES = ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy', '/usr/bin/haproxy', '/usr/local/bin/haproxy'];

/** The haproxy executable, or null when it is not installed. */
export function findHaproxy(): string | null {
  const fromPath = (process.env['PATH'] ?? '').split(':').filter(Boolean).map((d) => join(d, 'haproxy'));
  return [...HAPROXY_CANDIDATES, ...fromPath].find((p) => existsSync(p)) ?? null;
}

export function requireHaproxy(): string {
  const bin = findHaproxy();
  if (!bin) throw new Error('haproxy not found (looked in /usr/sbin and PATH); install it, e.g. `apt-get install -y haproxy` (Debian package "haproxy")');
  return bin;
}

const NAME_RE = /^[A-Za-z0-9_-]+$/;

export function renderHaproxyConfig(opts: HaproxyConfigOptions): string {
  const check = opts.checkIntervalMs ?? 500;
  const connect = opts.connectTimeoutMs ?? 2000;
  const idle = opts.idleTimeoutMs ?? 3_600_000;
  if (opts.frontends.length === 0) throw new Error('haproxy config needs at least one frontend');
  const lines = [
    'global',
    // haproxy sizes maxconn from the fd limit, which can be huge in containers and costs memory.
    '  maxconn 4096',
    '',
    'defaults',
    '  mode tcp',
    '  balance roundrobin',
    // A backend that is down but not yet detected by checks costs a retry on the next server
    // (redispatch on every retry also skips haproxy's 1 s turn-around delay), not the connection.
    '  option redispatch 1',
    '  retries 3',
    `  timeout connect ${connect}ms`,
    `  timeout client ${idle}ms`,
    `  timeout server ${idle}ms`,
    // In TCP mode this replaces client/server once both sides are connected.
    `  timeout tunnel ${idle}ms`,
    '  timeout client-fin 5s',
    '  timeout server-fin 5s',
    `  timeout check ${Math.max(check, 200)}ms`,
    // rise 1: a pod that starts listening late joins at the next check.
    `  default-server inter ${check}ms fastinter ${check}ms downinter ${check}ms fall 2 rise 1`,
  ];
  const names = new Set<string>();
  for (const f of opts.frontends) {
    if (!NAME_RE.test(f.name)) throw new Error(`haproxy frontend name ${JSON.stringify(f.name)}: letters, digits, '-' and '_' only`);
    if (names.has(f.name)) throw new Error(`haproxy frontend ${f.name} is listed twice`);
    names.add(f.name);
    if (f.backends.length === 0) throw new Error(`haproxy frontend ${f.name} has no backends`);
    lines.push('', `frontend ${f.name}`, `  bind ${f.bind.host}:${f.bind.port}`, `  default_backend ${f.name}_servers`);
    lines.push('', `backend ${f.name}_servers`);
    for (const b of f.backends) {
      const name = b.name ?? `${b.host}_${b.port}`;
      if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new Error(`haproxy server name ${JSON.stringify(name)}: letters, digits, '.', '-' and '_' only`);
      lines.push(`  server ${name} ${b.host}:${b.port} check`);
    }
  }
  return lines.join('\n') + '\n';
}

export interface StartedHaproxy {
  process: ManagedProcess;
  configPath: string;
  config: string;
}

/**
 * Starts haproxy in the foreground (in `netns`, when given) under `group`, and resolves once
 * every frontend listens. The config file lives in a temp dir removed when haproxy exits.
 */
export async function startHaproxy(
  group: ProcessGroup,
  opts: HaproxyConfigOptions & { label?: string; netns?: string; echo?: SpawnOptions['echo']; timeoutMs?: number },
): Promise<StartedHaproxy> {
  const bin = requireHaproxy();
  const config = renderHaproxyConfig(opts);
  const dir = await mkdtemp(join(tmpdir(), 'slim-haproxy-'));
  const configPath = join(dir, 'haproxy.cfg');
  await writeFile(configPath, config);
  const label = opts.label ?? `haproxy${opts.netns ? `@${opts.netns}` : ''}`;
  // -db: stay in the foreground, no daemon, so ProcessGroup owns the process and its output.
  const proc = group.spawnCommand(label, bin, ['-db', '-f', configPath], { netns: opts.netns, echo: opts.echo });
  void proc.exited.then(() => rm(dir, { recursive: true, force: true }));
  try {
    const pid = proc.child.pid;
    if (pid === undefined) throw new Error('could not spawn it');
    for (const f of opts.frontends) {
      await waitForListening(pid, f.bind.port, {
        host: f.bind.host, netns: opts.netns, timeoutMs: opts.timeoutMs ?? 10_000, exited: () => !proc.running,
      });
    }
  } catch (err) {
    await proc.stop('SIGKILL');
    throw new Error(`${label} (\`${bin} -db -f ${configPath}\`${opts.netns ? ` in netns ${opts.netns}` : ''}) did not start: ${(err as Error).message}; output:\n${proc.tail()}`);
  }
  return { process: proc, configPath, config };
}
