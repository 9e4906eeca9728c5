// The netns harness the end-to-end test builds its clusters with: pod IPs reachable inside a
// cluster only, LoadBalancer addresses served by real haproxy, names from /etc/netns hosts,
// per-process bind mounts, and nothing left behind. Needs root; skipped elsewhere, but under
// CI it must run.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProcessGroup, type ManagedProcess } from '../harness/processes.js';
import { NetnsTopology, canUseNetns, cleanupStale, waitForListening } from '../harness/netns.js';
import { findHaproxy, renderHaproxyConfig, startHaproxy } from '../harness/haproxy.js';
import { eventually } from './support/local-nodes.js';

const usable = canUseNetns();
const ci = process.env['CI'] === 'true';
const haveHaproxy = findHaproxy() !== null;
if (!usable.ok && !ci) console.warn(`netns topology tests skipped: ${usable.why}`);
else if (!haveHaproxy && !ci) console.warn('netns LoadBalancer tests skipped: haproxy not installed (apt-get install -y haproxy)');

const PORT = 7000;

// Answers every connection with its own name, so a client can tell which pod it reached.
const SERVER = `
const [, host, port, name] = process.argv;
require('net').createServer((s) => { s.on('error', () => {}); s.end(name); })
  .listen(Number(port), host, () => console.log('listening'));
`;

// Connects `n` times in a row; prints one JSON array of 'ok:<reply>' / 'err:<code>'.
const CLIENT = `
const [, host, port, n] = process.argv;
const once = () => new Promise((done) => {
  let got = '';
  const s = require('net').connect({ host, port: Number(port), timeout: 3000 });
  s.on('data', (c) => { got += c; });
  s.on('end', () => done('ok:' + got));
  s.on('timeout', () => { s.destroy(); done('err:timeout'); });
  s.on('error', (e) => done('err:' + e.code));
});
(async () => { const out = []; for (let i = 0; i < Number(n); i++) out.push(await once()); console.log(JSON.stringify(out)); })();
`;

const LOOKUP = `
Promise.all(process.argv.slice(1).map((h) => require('dns').promises.lookup(h, { family: 4 }).then((r) => r.address, (e) => 'err:' + e.code)))
  .then((a) => console.log(JSON.stringify(a)));
`;

describe('netns harness prerequisites', () => {
  it.runIf(ci)('can build network namespaces (required under CI)', () => {
    expect(usable).toEqual({ ok: true });
  });

  it.runIf(ci)('has haproxy (required under CI)', () => {
    expect(findHaproxy(), 'apt-get install -y haproxy').not.toBeNull();
  });

  it('renders a TCP round-robin haproxy config with health checks and long idle timeouts', () => {
    const cfg = renderHaproxyConfig({
      frontends: [{ name: 'slim', bind: { host: '172.18.255.200', port: 46357 }, backends: [{ host: '10.10.0.11', port: 46357 }, { name: 'slim-1', host: '10.10.0.12', port: 46357 }] }],
    });
    expect(cfg).toMatch(/mode tcp/);
    expect(cfg).toMatch(/balance roundrobin/);
    expect(cfg).toMatch(/bind 172\.18\.255\.200:46357/);
    expect(cfg).toMatch(/server 10\.10\.0\.11_46357 10\.10\.0\.11:46357 check/);
    expect(cfg).toMatch(/server slim-1 10\.10\.0\.12:46357 check/);
    expect(cfg).toMatch(/timeout tunnel 3600000ms/);
    expect(() => renderHaproxyConfig({ frontends: [{ name: 'x', bind: { host: '1.2.3.4', port: 1 }, backends: [] }] })).toThrow(/no backends/);
  });
});

describe.skipIf(!usable.ok && !ci)('three clusters in network namespaces', () => {
  let topo: NetnsTopology | undefined;
  const group = new ProcessGroup();
  let scratch = '';

  const t = (): NetnsTopology => {
    if (!topo) throw new Error('topology not created');
    return topo;
  };

  async function serve(cluster: string, pod: string, port = PORT): Promise<ManagedProcess> {
    const p = t().pod(cluster, pod);
    const proc = group.spawnCommand(`${cluster}/${pod}`, process.execPath, ['-e', SERVER, p.ip, String(port), `${cluster}/${pod}`], { netns: p.ns });
    await proc.waitForLine(/listening/, 5000);
    return proc;
  }

  async function connect(fromNs: string, host: string, n = 1, port = PORT): Promise<string[]> {
    const r = await t().exec(fromNs, process.execPath, ['-e', CLIENT, host, String(port), String(n)]);
    if (r.code !== 0) throw new Error(`client in ${fromNs} failed (exit ${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as string[];
  }

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'slim-netns-test-'));
    topo = await NetnsTopology.create({
      clusters: [
        { name: 'cluster-a', pods: ['slim-0', 'slim-1', 'slim-2'], lb: { name: 'slim-a' } },
        { name: 'cluster-b', pods: ['slim-0', 'slim-1', 'slim-2'], lb: { name: 'slim-b' } },
        { name: 'admin', pods: ['controller-0'], lb: { name: 'slim-control' } },
      ],
      hosts: {
        'slim.cluster-a.example': 'slim-a',
        'slim.cluster-b.example': 'cluster-b',
        'slim-control.admin.example': 'slim-control',
      },
    });
  });

  afterAll(async () => {
    await group.stopAll();
    await topo?.destroy();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('gives each cluster its own subnet and each LoadBalancer an address on the shared network', () => {
    expect(t().pod('cluster-a', 'slim-0').ip).toBe('10.10.0.11');
    expect(t().pod('cluster-b', 'slim-2').ip).toBe('10.11.0.13');
    expect(t().lb('cluster-a').ip).toBe('172.18.255.200');
    expect(t().lb('admin').ip).toBe('172.18.255.202');
    expect(t().namespaces.every((ns) => ns.startsWith(t().runId))).toBe(true);
  });

  it('a pod reaches a pod of its own cluster by pod IP', async () => {
    await serve('cluster-a', 'slim-0');
    expect(await connect(t().pod('cluster-a', 'slim-1').ns, t().pod('cluster-a', 'slim-0').ip)).toEqual(['ok:cluster-a/slim-0']);
  });

  it('a pod cannot reach another cluster\'s pod IP', async () => {
    await serve('cluster-b', 'slim-1');
    const [got] = await connect(t().pod('cluster-b', 'slim-0').ns, t().pod('cluster-a', 'slim-0').ip);
    expect(got).toMatch(/^err:(ENETUNREACH|EHOSTUNREACH|timeout)$/);
    // Same client, same port, own cluster: the failure above is the isolation, not the client.
    expect(await connect(t().pod('cluster-b', 'slim-0').ns, t().pod('cluster-b', 'slim-1').ip)).toEqual(['ok:cluster-b/slim-1']);
  });

  it('resolves the LoadBalancer names from /etc/netns hosts in every namespace', async () => {
    const names = ['slim.cluster-a.example', 'slim.cluster-b.example', 'slim-control.admin.example'];
    const want = [t().lb('cluster-a').ip, t().lb('cluster-b').ip, t().lb('admin').ip];
    for (const ns of [t().pod('cluster-a', 'slim-2').ns, t().pod('admin', 'controller-0').ns, t().lb('cluster-b').ns]) {
      const r = await t().exec(ns, process.execPath, ['-e', LOOKUP, ...names]);
      expect(JSON.parse(r.stdout), `${ns}: ${r.stderr}`).toEqual(want);
    }
    const getent = await t().exec(t().pod('cluster-b', 'slim-0').ns, 'getent', ['hosts', 'slim.cluster-a.example']);
    if (getent.code !== 127) expect(getent.stdout).toMatch(/^172\.18\.255\.200\s+slim\.cluster-a\.example/);
    // The host's own /etc/hosts is untouched.
    expect(readFileSync('/etc/hosts', 'utf8')).not.toContain('slim.cluster-a.example');
  });

  it.skipIf(!haveHaproxy && !ci)('carries another cluster\'s traffic through the LoadBalancer (haproxy), round robin over the pods that listen', async () => {
    // slim-0 already serves; slim-2 does not listen yet, so health checks must keep it out.
    await serve('cluster-a', 'slim-1');
    const lb = t().lb('cluster-a');
    const pods = t().pods('cluster-a');
    await startHaproxy(group, {
      netns: lb.ns,
      frontends: [{ name: 'slim', bind: { host: lb.ip, port: PORT }, backends: pods.map((p) => ({ name: p.name, host: p.ip, port: PORT })) }],
    });
    const from = t().pod('cluster-b', 'slim-2').ns;
    const got = await connect(from, 'slim.cluster-a.example', 6);
    expect(got.filter((g) => !g.startsWith('ok:')), JSON.stringify(got)).toEqual([]);
    expect(new Set(got)).toEqual(new Set(['ok:cluster-a/slim-0', 'ok:cluster-a/slim-1']));

    await serve('cluster-a', 'slim-2');
    let last: string[] = [];
    await eventually(async () => {
      last = await connect(from, lb.ip, 6);
      return new Set(last).size === 3;
    }, 5000, 'round robin over all three cluster-a pods').catch((err: Error) => {
      throw new Error(`${err.message}; last: ${JSON.stringify(last)}`);
    });
    expect(last.every((g) => g.startsWith('ok:cluster-a/'))).toBe(true);

    // The admin cluster's controller is likewise reached through its own LoadBalancer.
    await serve('admin', 'controller-0', 7100);
    const ctl = t().lb('admin');
    await startHaproxy(group, {
      netns: ctl.ns,
      frontends: [{ name: 'control', bind: { host: ctl.ip, port: 7100 }, backends: [{ host: t().pod('admin', 'controller-0').ip, port: 7100 }] }],
    });
    expect(await connect(t().pod('cluster-a', 'slim-0').ns, 'slim-control.admin.example', 1, 7100)).toEqual(['ok:admin/controller-0']);
    expect(await connect(t().pod('cluster-a', 'slim-0').ns, t().pod('admin', 'controller-0').ip, 1, 7100)).toEqual([expect.stringMatching(/^err:/)]);
  });

  it('bind-mounts a file at a fixed path for one process only', async () => {
    const target = join(scratch, 'spire-agent', 'public');
    const sources = ['slim-0', 'slim-1'].map((pod) => {
      const dir = join(scratch, 'pods', pod);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'api.sock'), `socket of ${pod}`);
      return { pod, dir };
    });
    const reads = sources.map(({ pod, dir }) => group.spawnCommand(`cat@${pod}`, 'cat', [join(target, 'api.sock')], {
      netns: t().pod('cluster-a', pod).ns,
      mounts: [{ source: dir, target }],
    }));
    await Promise.all(reads.map((p) => p.exited));
    expect(reads.map((p) => [p.exitCode, p.output])).toEqual([[0, 'socket of slim-0'], [0, 'socket of slim-1']]);

    // A file onto a file works too.
    const single = group.spawnCommand('cat-file', 'cat', [join(scratch, 'view', 'token')], {
      netns: t().pod('cluster-a', 'slim-2').ns,
      mounts: [{ source: join(sources[0]!.dir, 'api.sock'), target: join(scratch, 'view', 'token') }],
    });
    await single.exited;
    expect([single.exitCode, single.output]).toEqual([0, 'socket of slim-0']);

    // Neither the host nor another process in the same namespace sees the mounts.
    expect(readdirSync(target)).toEqual([]);
    const other = await t().exec(t().pod('cluster-a', 'slim-0').ns, 'ls', ['-A', target]);
    expect([other.code, other.stdout]).toEqual([0, '']);
    expect(() => group.spawnCommand('no-netns', 'true', [], { mounts: [{ source: scratch, target: '/mnt' }] })).toThrow(/needs SpawnOptions.netns/);
  });

  it('destroy() kills what runs in the namespaces and removes every namespace and /etc/netns dir, twice without error', async () => {
    const topology = t();
    const lingering = await serve('cluster-b', 'slim-2', 7200);
    await waitForListening(lingering.child.pid!, 7200, { netns: topology.pod('cluster-b', 'slim-2').ns });
    await topology.destroy();
    expect(lingering.running).toBe(false);
    expect(netnsNames().filter((n) => n.startsWith(topology.runId))).toEqual([]);
    expect(etcNetns().filter((n) => n.startsWith(topology.runId))).toEqual([]);
    await topology.destroy();
  });

  it('cleanupStale() removes the namespaces of a run whose process died, and only those', async () => {
    const dead = spawnSync('true').pid;
    const stale = `slimt-stale-${dead}-beef-router`;
    const live = `slimt-stale-${process.pid}-cafe-router`;
    for (const ns of [stale, live]) {
      expect(spawnSync('ip', ['netns', 'add', ns]).status).toBe(0);
      mkdirSync(`/etc/netns/${ns}`, { recursive: true });
    }
    try {
      expect(await cleanupStale('slimt-stale')).toEqual([stale]);
      expect(netnsNames()).not.toContain(stale);
      expect(existsSync(`/etc/netns/${stale}`)).toBe(false);
      expect(netnsNames()).toContain(live);
    } finally {
      for (const ns of [stale, live]) {
        spawnSync('ip', ['netns', 'del', ns]);
        rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
      }
    }
  });
});

function netnsNames(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return r.stdout.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
}

function etcNetns(): string[] {
  return existsSync('/etc/netns') ? readdirSync('/etc/netns') : [];
}
