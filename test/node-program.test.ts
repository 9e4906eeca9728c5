// The slim-node program as a real process: --check, exit codes and one-line messages for
// configuration and startup problems (and no port opened when the config is wrong), the ops
// endpoint, JSON logs, and graceful shutdown on SIGTERM.

import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { rmSync, writeFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SlimApp } from '../client/slim-app.js';
import { localNodeConfig, scratchDir, writeConfig } from '../harness/node-config.js';
import { ProcessGroup, freePort, type ManagedProcess } from '../harness/processes.js';
import { SEED } from './support/seed-node-config.js';


let dir: string;
let group: ProcessGroup;
const apps: SlimApp[] = [];
const blockers: Server[] = [];

beforeAll(() => {
  dir = scratchDir('slim-node-program');
});

afterEach(async () => {
  for (const a of apps.splice(0)) a.close();
  await group?.stopAll();
  await Promise.all(blockers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** True when a TCP connection to 127.0.0.1:port is refused (nothing listening). */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      // Connecting to a free port in the ephemeral range can, rarely, pick that same port as the
      // source and connect to itself (TCP simultaneous open): that is not a listener.
      const self = sock.localPort === port;
      sock.destroy();
      resolve(self);
    });
    sock.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/** Polls the ports until the process exits; returns the ports that ever accepted a connection. */
async function portsOpenedWhileRunning(p: ManagedProcess, ports: number[]): Promise<number[]> {
  const opened = new Set<number>();
  let done = false;
  void p.exited.then(() => (done = true));
  while (!done) {
    const results = await Promise.all(ports.map(async (port) => [port, await refused(port)] as const));
    for (const [port, r] of results) if (!r) opened.add(port);
    await new Promise((r) => setTimeout(r, 5));
  }
  return [...opened];
}

function run(args: string[], env?: Record<string, string>): ManagedProcess {
  group = group ?? new ProcessGroup();
  return group.spawn('slim-node', 'slim-node', args, { env });
}

/** A valid plaintext config on 127.0.0.1:port, with optional changes to the doc. */
function localDoc(port: number, opsPort?: number, nodeId = 'prog-node'): Record<string, unknown> & { services: { 'slim/0': { dataplane: Record<string, unknown> } } } {
  return localNodeConfig({ nodeId, group: 'cluster-a.example', port, opsPort }) as ReturnType<typeof localDoc>;
}

/** Lines the program wrote that start with `slim-node: ` (its stderr messages). */
function messages(p: ManagedProcess): string[] {
  return p.lines.filter((l) => l.startsWith('slim-node: '));
}

describe('slim-node --check', () => {
  it('accepts a valid config and says so on stdout, without opening ports', async () => {
    const [port, opsPort] = [await freePort(), await freePort()];
    const file = writeConfig(dir, 'check-ok.yaml', localDoc(port, opsPort, 'check-node'));
    const p = run(['--config', file, '--check']);
    const opened = await portsOpenedWhileRunning(p, [port, opsPort]);
    const { code } = await p.exited;
    expect(p.lines).toEqual(['node config ok: node check-node in group cluster-a.example, 1 server(s), 0 client(s)']);
    expect(code).toBe(0);
    expect(opened).toEqual([]);
  });

  it('reads the TLS files the config names, and names the key of a missing one', async () => {
    const doc = localDoc(await freePort());
    const missing = join(dir, 'check-missing.crt');
    doc.services['slim/0'].dataplane.clients = [{ endpoint: 'https://127.0.0.1:1', tls: { cert_file: missing, key_file: join(dir, 'check-missing.key') } }];
    const file = writeConfig(dir, 'check-missing-cert.yaml', doc);
    const p = run(['--config', file, '--check']);
    const { code } = await p.exited;
    expect(code).toBe(2);
    expect(messages(p)).toHaveLength(1);
    expect(messages(p)[0]).toMatch(/^slim-node: node config: services\.slim\/0\.dataplane\.clients\[0\]\.tls\b.*ENOENT/);
    expect(messages(p)[0]).toContain(missing);
    expect(p.output).not.toContain('node config ok');
  });

  it('rejects the same config without its environment, naming the key, with exit code 2', async () => {
    const file = join(dir, 'seed-noenv.yaml');
    writeFileSync(file, SEED);
    // The child inherits the test's environment; an empty value counts as unset.
    const proc = run(['--config', file, '--check'], { SLIM_SVC_ID: '', MY_POD_IP: '10.1.0.4' });
    const { code } = await proc.exited;
    expect(code).toBe(2);
    expect(messages(proc)).toEqual(['slim-node: node config: services.slim/0.node_id: environment variable SLIM_SVC_ID is not set']);
    expect(proc.output).not.toContain('node config ok');
  });
});

describe('slim-node with a bad config', () => {
  it('exits 2 naming the key, and never opens its ports', async () => {
    const [port, opsPort] = [await freePort(), await freePort()];
    const doc = localDoc(port, opsPort);
    (doc.runtime as Record<string, unknown>).drain_timeout = '10 parsecs';
    const file = writeConfig(dir, 'bad-duration.yaml', doc);
    const p = run(['--config', file]);
    const opened = await portsOpenedWhileRunning(p, [port, opsPort]);
    const { code } = await p.exited;
    expect(code).toBe(2);
    expect(messages(p)).toHaveLength(1);
    expect(messages(p)[0]).toMatch(/^slim-node: node config: runtime\.drain_timeout: "10 parsecs" is not a duration/);
    expect(opened).toEqual([]);
    expect(await refused(port)).toBe(true);
    expect(await refused(opsPort)).toBe(true);
  });

  it('prints one line per problem, each prefixed with the program name', async () => {
    const port = await freePort();
    const doc = localDoc(port);
    const svc = doc.services['slim/0'];
    svc.dataplane.max_message_size = 'huge';
    svc.dataplane.servers = [{ endpont: `127.0.0.1:${port}` }];
    const file = writeConfig(dir, 'many.yaml', doc);
    const p = run(['--config', file]);
    const { code } = await p.exited;
    expect(code).toBe(2);
    const lines = messages(p);
    expect(lines).toContain(`slim-node: node config: services.slim/0.dataplane.servers[0].endpont: not a known key`);
    expect(lines).toContain(`slim-node: node config: services.slim/0.dataplane.servers[0].endpoint is missing`);
    expect(lines.some((l) => l.startsWith('slim-node: node config: services.slim/0.dataplane.max_message_size: "huge" is not a positive size'))).toBe(true);
    expect(lines).toHaveLength(3);
    expect(p.output).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('exits 2 naming dataplane.clients[0].tls when a client cert file is missing, before servers[0] listens', async () => {
    const [port, opsPort] = [await freePort(), await freePort()];
    const doc = localDoc(port, opsPort);
    const missing = join(dir, 'no-such-client.crt');
    doc.services['slim/0'].dataplane.clients = [
      { endpoint: 'https://127.0.0.1:1', tls: { cert_file: missing, key_file: join(dir, 'no-such-client.key') } },
    ];
    const file = writeConfig(dir, 'missing-client-cert.yaml', doc);
    const p = run(['--config', file]);
    const opened = await portsOpenedWhileRunning(p, [port, opsPort]);
    const { code } = await p.exited;
    expect(code).toBe(2);
    expect(messages(p)).toHaveLength(1);
    expect(messages(p)[0]).toMatch(/^slim-node: node config: services\.slim\/0\.dataplane\.clients\[0\]\.tls\b/);
    expect(messages(p)[0]).toContain(missing);
    expect(messages(p)[0]).toContain('ENOENT');
    expect(opened).toEqual([]);
    expect(await refused(port)).toBe(true);
  });

  it('exits 2 naming dataplane.servers[1].tls when a server key file is missing, before servers[0] listens', async () => {
    const [port, port2] = [await freePort(), await freePort()];
    const doc = localDoc(port);
    const servers = doc.services['slim/0'].dataplane.servers as unknown[];
    servers.push({ endpoint: `127.0.0.1:${port2}`, tls: { source: { type: 'file', cert: join(dir, 'nope.crt'), key: join(dir, 'nope.key') } } });
    const file = writeConfig(dir, 'missing-server-cert.yaml', doc);
    const p = run(['--config', file]);
    const opened = await portsOpenedWhileRunning(p, [port, port2]);
    const { code } = await p.exited;
    expect(code).toBe(2);
    expect(messages(p)).toHaveLength(1);
    expect(messages(p)[0]).toMatch(/^slim-node: node config: services\.slim\/0\.dataplane\.servers\[1\]\.tls\b.*ENOENT/);
    expect(opened).toEqual([]);
  });

  it('exits 2 with a clear message when the config file does not exist', async () => {
    const file = join(dir, 'does-not-exist.yaml');
    const p = run(['--config', file]);
    const { code } = await p.exited;
    expect(code).toBe(2);
    expect(messages(p)).toEqual([`slim-node: node config: cannot read ${file}: ENOENT`]);
  });

  it('exits 1 naming the endpoint key and EADDRINUSE when the data port is taken', async () => {
    const port = await freePort();
    const blocker = createServer();
    blockers.push(blocker);
    await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
    const file = writeConfig(dir, 'port-in-use.yaml', localDoc(port));
    const p = run(['--config', file]);
    const { code } = await p.exited;
    expect(code).toBe(1);
    expect(messages(p)).toHaveLength(1);
    expect(messages(p)[0]).toContain('services.slim/0.dataplane.servers[0].endpoint');
    expect(messages(p)[0]).toContain(`127.0.0.1:${port}`);
    expect(messages(p)[0]).toContain('EADDRINUSE');
  });
});

describe('a running slim-node', () => {
  it('serves /healthz, /readyz, /metrics; logs JSON; drains on SIGTERM and tells its apps', async () => {
    const [port, opsPort] = [await freePort(), await freePort()];
    const doc = localDoc(port, opsPort, 'ops-node');
    const drainMs = 3000;
    (doc.runtime as Record<string, unknown>).drain_timeout = `${drainMs}ms`;
    const file = writeConfig(dir, 'running.yaml', doc);
    const p = run(['--config', file]);
    await p.waitForLine(/"msg":"slim-node started"/);

    const app = await SlimApp.connect({ name: 'org/ns/watcher', slim: `http://127.0.0.1:${port}`, reconnect: false, connectTimeoutMs: 5000 });
    apps.push(app);
    const disconnected = new Promise<string>((resolve) => app.once('disconnected', (why: string) => resolve(why)));

    const ops = `http://127.0.0.1:${opsPort}`;
    const health = await fetch(`${ops}/healthz`);
    expect(health.status).toBe(200);
    await health.text();
    const ready = await fetch(`${ops}/readyz`);
    expect(ready.status).toBe(200);
    expect((await ready.text()).trim()).toBe('ready');
    const notFound = await fetch(`${ops}/nope`);
    expect(notFound.status).toBe(404);
    await notFound.text();

    const metricsRes = await fetch(`${ops}/metrics`);
    expect(metricsRes.status).toBe(200);
    const metrics = await metricsRes.text();
    for (const name of ['slim_links', 'slim_subscriptions', 'slim_messages_received_total', 'slim_queue_bytes']) {
      const samples = metrics.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
      expect(samples.length, `${name} samples`).toBeGreaterThan(0);
      for (const s of samples) expect(s, name).toContain('node_id="ops-node"');
    }
    expect(metrics).toMatch(/^slim_links\{[^}]*kind="app"[^}]*\} 1$/m);
    expect(metrics).toMatch(/^slim_subscriptions\{[^}]*\} 1$/m);

    // Logs: JSON lines (pino) carrying the node's identity.
    const started = await p.waitForJson<Record<string, unknown>>(['msg', 'node_id']);
    expect(started.node_id).toBe('ops-node');
    const jsonLines = p.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(jsonLines.length).toBeGreaterThan(0);
    expect(jsonLines.length).toBe(p.lines.filter((l) => l.trim() !== '').length);
    for (const l of jsonLines) {
      expect(l.node_id).toBe('ops-node');
      expect(l.group).toBe('cluster-a.example');
      expect(typeof l.msg).toBe('string');
      expect(typeof l.level).toBe('string');
    }
    expect(jsonLines.some((l) => l.msg === 'data-plane server listening' && l.endpoint === `127.0.0.1:${port}`)).toBe(true);

    const t0 = Date.now();
    p.child.kill('SIGTERM');
    const { code, signal } = await p.exited;
    const elapsed = Date.now() - t0;
    expect(signal).toBeNull();
    expect(code).toBe(0);
    expect(elapsed).toBeLessThan(drainMs);
    expect(p.lines.some((l) => l.includes('"msg":"draining"') && l.includes('"signal":"SIGTERM"'))).toBe(true);
    const why = await disconnected;
    expect(why).toMatch(/shutting down/);
    expect(await refused(port)).toBe(true);
    expect(await refused(opsPort)).toBe(true);
  });

  it('runs without an ops endpoint when observability.endpoint is ""', async () => {
    const port = await freePort();
    const file = writeConfig(dir, 'no-ops.yaml', localDoc(port));
    const p = run(['--config', file]);
    await p.waitForLine(/"msg":"slim-node started"/);
    expect(p.lines.some((l) => l.includes('metrics and health endpoint listening'))).toBe(false);
    expect(await refused(port)).toBe(false);
    await p.stop();
    expect(p.exitCode).toBe(0);
  });
});
