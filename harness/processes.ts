// Starting and stopping the project's programs as real processes, for the demo, the
// integration/e2e tests and the benchmarks: spawn, wait for a line, collect output, stop all.

import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';

/** Repository root (works from the TypeScript sources and from dist/). */
export const REPO_ROOT = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  return here.includes('/dist/') ? resolve(here, '../..') : resolve(here, '..');
})();

/** Built entry points, by program name, with the node flags their shebang line carries. */
export const PROGRAMS = {
  'slim-node': { script: 'dist/node/main.js', nodeFlags: ['--no-memory-reducer'] },
  'slim-receiver': { script: 'dist/client/receiver-main.js', nodeFlags: [] },
  'slim-sender': { script: 'dist/client/sender-main.js', nodeFlags: [] },
  'slim-dev-issuer': { script: 'dist/identity/dev-issuer/main.js', nodeFlags: [] },
  slimctl: { script: 'dist/client/slimctl.js', nodeFlags: [] },
  'slim-controller': { script: 'dist/controller/main.js', nodeFlags: [] },
  // Load generators get the same flag, so a bench measures the path, not the client's idle GC.
  'bench-worker': { script: 'dist/bench/worker.js', nodeFlags: ['--no-memory-reducer'] },
} as const;

export type ProgramName = keyof typeof PROGRAMS;

export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Prefix for each echoed line; when set, output is echoed to this process's stdout. */
  echo?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Run the program inside `ip netns exec NS`. */
  netns?: string;
  /**
   * Bind mounts seen only by this process (needs `netns`): how a pod finds its own file (a SPIRE
   * agent socket directory, say) at the fixed path its config names while every pod's file is
   * a different one on the host. Absolute paths; a missing target (a directory, or an empty
   * file when the source is a file) is created on the host first, and left there. Prefer
   * mounting a socket's directory: a file mount keeps the old inode if the socket is recreated.
   */
  mounts?: { source: string; target: string }[];
}

// `ip netns exec` already runs the command in its own mount namespace with / made rslave, so
// these mounts stay private to the process and vanish with it. Paths come in as arguments,
// never spliced into the script, so no quoting can break.
const BIND_THEN_EXEC = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"';

function withMounts(command: string, args: string[], opts: SpawnOptions): string[] {
  const mounts = opts.mounts ?? [];
  if (mounts.length === 0) return [command, ...args];
  if (!opts.netns) throw new Error('SpawnOptions.mounts needs SpawnOptions.netns (only `ip netns exec` gives the process a mount namespace of its own)');
  for (const { source, target } of mounts) {
    if (!isAbsolute(source) || !isAbsolute(target)) throw new Error(`mount ${source} -> ${target}: both paths must be absolute`);
    if (source === '--' || target === '--') throw new Error('mount paths cannot be "--"');
    let sourceIsDir: boolean;
    try {
      sourceIsDir = statSync(source).isDirectory();
    } catch (err) {
      throw new Error(`mount source ${source}: ${(err as Error).message}`);
    }
    if (sourceIsDir) mkdirSync(target, { recursive: true });
    else {
      mkdirSync(dirname(target), { recursive: true });
      if (!existsSync(target)) writeFileSync(target, '');
    }
  }
  return ['sh', '-c', BIND_THEN_EXEC, 'sh', ...mounts.flatMap((m) => [m.source, m.target]), '--', command, ...args];
}

export class ManagedProcess {
  readonly lines: string[] = [];
  private waiters: { test: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitCode: number | null | undefined;

  constructor(
    readonly label: string,
    readonly child: ChildProcess,
    echo?: SpawnOptions['echo'],
  ) {
    const attach = (stream: NodeJS.ReadableStream | null, kind: 'stdout' | 'stderr'): void => {
      let carry = '';
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => {
        const parts = (carry + chunk).split('\n');
        carry = parts.pop()!;
        for (const line of parts) this.onLine(line, kind, echo);
      });
      stream?.on('end', () => carry && this.onLine(carry, kind, echo));
    };
    attach(child.stdout, 'stdout');
    attach(child.stderr, 'stderr');
    this.exited = new Promise((resolveExit) => {
      child.on('exit', (code, signal) => {
        this.exitCode = code;
        resolveExit({ code, signal });
      });
    });
  }

  private onLine(line: string, kind: 'stdout' | 'stderr', echo?: SpawnOptions['echo']): void {
    this.lines.push(line);
    echo?.(line, kind);
    this.waiters = this.waiters.filter((w) => {
      if (!w.test(line)) return true;
      w.resolve(line);
      return false;
    });
  }

  get output(): string {
    return this.lines.join('\n');
  }

  /** Resolves with the first line (already seen or future) matching; rejects on timeout or exit. */
  waitForLine(test: RegExp | ((line: string) => boolean), timeoutMs = 15_000): Promise<string> {
    const fn = typeof test === 'function' ? test : (l: string) => test.test(l);
    const seen = this.lines.find(fn);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolveLine, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.label}: no line matching ${test} within ${timeoutMs} ms; output:\n${this.tail()}`)), timeoutMs);
      const w = {
        test: fn,
        resolve: (l: string) => {
          clearTimeout(timer);
          resolveLine(l);
        },
      };
      this.waiters.push(w);
      void this.exited.then(({ code, signal }) => {
        if (!this.waiters.includes(w)) return;
        clearTimeout(timer);
        reject(new Error(`${this.label} exited (code ${code}, signal ${signal}) before printing ${test}; output:\n${this.tail()}`));
      });
    });
  }

  /** The first JSON line with all of `keys`, parsed. */
  async waitForJson<T = Record<string, unknown>>(keys: string[], timeoutMs = 15_000): Promise<T> {
    const line = await this.waitForLine((l) => {
      if (!l.startsWith('{')) return false;
      try {
        const o = JSON.parse(l) as Record<string, unknown>;
        return keys.every((k) => k in o);
      } catch {
        return false;
      }
    }, timeoutMs);
    return JSON.parse(line) as T;
  }

  tail(n = 30): string {
    return this.lines.slice(-n).join('\n');
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 3000): Promise<void> {
    if (!this.running) return;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export class ProcessGroup {
  readonly processes: ManagedProcess[] = [];

  spawn(label: string, program: ProgramName, args: string[], opts: SpawnOptions = {}): ManagedProcess {
    const { script, nodeFlags } = PROGRAMS[program];
    return this.spawnCommand(label, process.execPath, [...nodeFlags, resolve(REPO_ROOT, script), ...args], opts);
  }

  /** Any other executable (nats-server, haproxy...), managed the same way. */
  spawnCommand(label: string, command: string, args: string[], opts: SpawnOptions = {}): ManagedProcess {
    const inner = withMounts(command, args, opts);
    const [cmd, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, ...inner]] : [command, args];
    const child = spawn(cmd, argv, {
      cwd: opts.cwd ?? REPO_ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const p = new ManagedProcess(label, child, opts.echo);
    this.processes.push(p);
    return p;
  }

  /** Stops in reverse start order, so apps leave before the nodes they are connected to. */
  async stopAll(): Promise<void> {
    for (const p of [...this.processes].reverse()) await p.stop();
  }
}

/**
 * Ports this process handed out recently. The kernel may offer a just-closed ephemeral port again
 * at once, so two calls in a row could name the same port for two listeners (seen in CI: a node's
 * data and metrics port); a port handed out is not handed out again for a while.
 */
const handedOut = new Set<number>();
const HANDED_OUT_MEMORY = 4096;

/** A TCP port free on 127.0.0.1 right now, and not returned by an earlier call. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const port = await new Promise<number>((resolvePort, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, host, () => {
        const addr = srv.address();
        srv.close(() => resolvePort(typeof addr === 'object' && addr ? addr.port : 0));
      });
    });
    if (!handedOut.has(port) || attempt >= 20) {
      handedOut.add(port);
      if (handedOut.size > HANDED_OUT_MEMORY) handedOut.delete(handedOut.values().next().value!);
      return port;
    }
  }
}
