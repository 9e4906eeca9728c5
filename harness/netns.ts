// Several Kubernetes clusters' networks on one machine, built from Linux network namespaces,
// so end-to-end tests can run the real programs "as pods" with real pod IPs and LoadBalancer
// addresses. Nothing here touches the host's own network: every bridge, address and route
// lives in namespaces this module creates, and the host stays unreachable from them.
//
// Addressing (cluster index i = position in the spec):
//   cluster i's pod network   10.(10+i).0.0/24, gateway 10.(10+i).0.1 (a bridge in the router),
//                             pods .11, .12, ... in spec order
//   LoadBalancer network      172.18.0.0/16 (like Kind's docker network), gateway 172.18.0.1,
//                             cluster i's LoadBalancer 172.18.255.(200+i) (like MetalLB on Kind)
// A pod routes only to its own cluster's subnet and the LoadBalancer network, so another
// cluster's pod IP is unreachable (connect fails with ENETUNREACH) and traffic between clusters
// can only go through a LoadBalancer address. A LoadBalancer routes to every pod subnet: it must
// answer clients from other clusters (there is no NAT here to hide their pod IPs), and it only
// ever dials the backends its haproxy config names.

import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { randomBytes } from 'node:crypto';
import { endianness } from 'node:os';

export interface ClusterSpec {
  /** e.g. 'cluster-a'; part of namespace names, so letters, digits and '-'. */
  name: string;
  /** Pod names, e.g. ['slim-0', 'slim-1', 'slim-2']; each gets a namespace and a pod IP. */
  pods: string[];
  /** A LoadBalancer address for this cluster; `name` can be used as a value in `hosts`. */
  lb?: { name: string };
}

export interface TopologySpec {
  /** Start of every namespace name; runs are told apart by the pid and a random tag after it. */
  prefix?: string;
  clusters: ClusterSpec[];
  /**
   * Names every namespace resolves through its /etc/hosts. A value is an IP, a LoadBalancer
   * name, a cluster name (its LoadBalancer) or 'cluster/pod' (that pod's IP).
   */
  hosts?: Record<string, string>;
}

export interface Endpoint {
  /** Network namespace name, for `ip netns exec` / SpawnOptions.netns. */
  ns: string;
  ip: string;
}

export interface PodEndpoint extends Endpoint {
  cluster: string;
  name: string;
}

export const DEFAULT_PREFIX = 'slimt';
export const LB_SUBNET = '172.18.0.0/16';
export const LB_GATEWAY = '172.18.0.1';

const NAME_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/i;
const IP_CANDIDATES = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'];

function ipBinary(): string | undefined {
  const fromPath = (process.env['PATH'] ?? '').split(':').filter(Boolean).map((d) => `${d}/ip`);
  return [...fromPath, ...IP_CANDIDATES].find((p) => existsSync(p));
}

// Resolved once: root's PATH usually has /usr/sbin, but a sanitized test environment may not.
const IP = ipBinary() ?? 'ip';

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion, never rejecting on a non-zero exit. */
function execCapture(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
  return new Promise((resolveExec, reject) => {
    const child = execFile(cmd, args, { timeout: opts.timeoutMs ?? 15_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number' && !err.killed) {
        reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}`));
        return;
      }
      resolveExec({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Runs a command that must succeed; the error names the command and carries its stderr. */
async function run(cmd: string, args: string[], opts: { input?: string } = {}): Promise<string> {
  const r = await execCapture(cmd, args, opts);
  if (r.code !== 0) throw new Error(`\`${cmd} ${args.join(' ')}\` failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** Runs `ip -batch -` inside `ns` (one process for many link/addr/route commands). */
async function ipBatch(ns: string, commands: string[]): Promise<void> {
  // Without -force, ip stops at the first failing line and names it in stderr.
  await run(IP, ['-n', ns, '-batch', '-'], { input: commands.join('\n') + '\n' });
}

/** Whether this process can build a topology: root, iproute2, and a kernel allowing netns/bridge/veth. */
export function canUseNetns(): { ok: true } | { ok: false; why: string } {
  if (process.platform !== 'linux') return { ok: false, why: `network namespaces need Linux (this is ${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, why: 'network namespaces need root (run the tests as root or under CI)' };
  if (!ipBinary()) return { ok: false, why: '`ip` (iproute2) not found; install the iproute2 package' };
  const probe = `${DEFAULT_PREFIX}-probe-${process.pid}-${randomBytes(2).toString('hex')}`;
  const step = (args: string[]): string | undefined => {
    const r = spawnSync(IP, args, { encoding: 'utf8', timeout: 10_000 });
    if (r.error) return `\`ip ${args.join(' ')}\`: ${r.error.message}`;
    return r.status === 0 ? undefined : `\`ip ${args.join(' ')}\` failed: ${(r.stderr || r.stdout).trim()}`;
  };
  const failure = step(['netns', 'add', probe])
    ?? step(['-n', probe, 'link', 'add', 'probebr', 'type', 'bridge'])
    ?? step(['-n', probe, 'link', 'add', 'probev0', 'type', 'veth', 'peer', 'name', 'probev1']);
  step(['netns', 'del', probe]);
  return failure ? { ok: false, why: `cannot build network namespaces: ${failure}` } : { ok: true };
}

/** Pids of the processes whose network namespace is `ns`. */
async function nsPids(ns: string): Promise<number[]> {
  const r = await execCapture(IP, ['netns', 'pids', ns]);
  if (r.code !== 0) return [];
  return r.stdout.split(/\s+/).filter(Boolean).map(Number).filter((n) => Number.isInteger(n) && n > 0);
}

async function listNetns(): Promise<string[]> {
  const out = await run(IP, ['netns', 'list']);
  // Lines look like "name" or "name (id: 3)".
  return out.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter(Boolean);
}

/** Kills what runs in `ns`, deletes it and its /etc/netns dir; quiet when already gone. */
async function removeNamespace(ns: string): Promise<void> {
  // A netns outlives `ip netns del` while any process is still in it, so empty it first.
  for (let attempt = 0; attempt < 50; attempt++) {
    const pids = (await nsPids(ns)).filter((p) => p !== process.pid);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const r = await execCapture(IP, ['netns', 'del', ns]);
  if (r.code !== 0 && !/No such file|Cannot remove namespace file/.test(r.stderr)) {
    throw new Error(`\`ip netns del ${ns}\` failed: ${r.stderr.trim()}`);
  }
  await rm(`/etc/netns/${ns}`, { recursive: true, force: true });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Removes namespaces (with their processes) and /etc/netns dirs left by earlier runs that
 * died without destroy(): names `${prefix}-${pid}-...` whose pid is no longer alive. Runs of
 * live processes are left alone, so concurrent test workers do not tear each other down.
 */
export async function cleanupStale(prefix = DEFAULT_PREFIX): Promise<string[]> {
  const re = new RegExp(`^${escapeRe(prefix)}-(\\d+)-`);
  const etc = existsSync('/etc/netns') ? readdirSync('/etc/netns') : [];
  const names = new Set([...(await listNetns()), ...etc]);
  const stale = [...names].filter((n) => {
    const m = re.exec(n);
    return m !== null && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
  });
  await Promise.all(stale.map((ns) => removeNamespace(ns)));
  return stale;
}

/** Resolves once something in `pid`'s network namespace listens on TCP `port` (on `host` or a wildcard address). */
export async function waitForListening(
  pid: number,
  port: number,
  opts: { host?: string; timeoutMs?: number; exited?: () => boolean; netns?: string } = {},
): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  const portHex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const wanted = new Set([`${'0'.repeat(8)}${portHex}`, `${'0'.repeat(32)}${portHex}`]);
  if (opts.host) wanted.add(procNetAddress(opts.host) + portHex);
  while (true) {
    // Until `ip netns exec` has switched, PID is still in the host's namespace, whose listeners
    // must not count.
    if (opts.netns && !(await inNetns(pid, opts.netns))) {
      if (opts.exited?.()) throw new Error(`process ${pid} exited before entering netns ${opts.netns}`);
      if (Date.now() > deadline) throw new Error(`process ${pid} did not enter netns ${opts.netns} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 25));
      continue;
    }
    // /proc/PID/net/tcp{,6} list the sockets of PID's network namespace, so nothing has to run in it.
    const tables = await Promise.all(['tcp', 'tcp6'].map((f) => readFile(`/proc/${pid}/net/${f}`, 'utf8').catch(() => '')));
    const listening = tables.join('\n').split('\n').some((line) => {
      const [, local, , state] = line.trim().split(/\s+/);
      if (state !== '0A' || !local) return false;
      return opts.host ? wanted.has(local) : local.endsWith(portHex);
    });
    if (listening) return;
    if (opts.exited?.()) throw new Error(`process ${pid} exited before listening on ${opts.host ?? '*'}:${port}`);
    if (Date.now() > deadline) throw new Error(`nothing listened on ${opts.host ?? '*'}:${port} in the network namespace of pid ${pid} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function inNetns(pid: number, ns: string): Promise<boolean> {
  try {
    const [link, st] = await Promise.all([readlink(`/proc/${pid}/ns/net`), stat(`/run/netns/${ns}`)]);
    return link === `net:[${st.ino}]`;
  } catch {
    return false;
  }
}

/** An IPv4 address as /proc/net/tcp prints it: the 32-bit network-order value read as a native integer, in hex. */
function procNetAddress(ip: string): string {
  const bytes = ip.split('.').map((b) => Number(b).toString(16).toUpperCase().padStart(2, '0'));
  return (endianness() === 'LE' ? bytes.reverse() : bytes).join('');
}

interface ClusterPlan {
  spec: ClusterSpec;
  index: number;
  subnet: string;
  gateway: string;
  bridge: string;
  pods: PodEndpoint[];
  lb?: Endpoint & { name: string };
}

export class NetnsTopology {
  private readonly created: string[] = [];

  private constructor(
    /** `${prefix}-${pid}-${tag}`: every namespace and /etc/netns dir of this run starts with it. */
    readonly runId: string,
    /** The namespace holding the bridges and forwarding between them. */
    readonly router: string,
    private readonly clusters: Map<string, ClusterPlan>,
    private readonly hostEntries: [string, string][],
  ) {}

  static async create(spec: TopologySpec): Promise<NetnsTopology> {
    const usable = canUseNetns();
    if (!usable.ok) throw new Error(usable.why);
    const prefix = spec.prefix ?? DEFAULT_PREFIX;
    if (!NAME_RE.test(prefix)) throw new Error(`topology prefix ${JSON.stringify(prefix)} must be letters, digits and '-'`);
    if (spec.clusters.length === 0 || spec.clusters.length > 200) throw new Error('a topology needs 1..200 clusters');
    await cleanupStale(prefix);

    // A random tag as well as the pid: vitest thread workers share one pid.
    const runId = `${prefix}-${process.pid}-${randomBytes(2).toString('hex')}`;
    const clusters = new Map<string, ClusterPlan>();
    const lbNames = new Set<string>();
    spec.clusters.forEach((c, index) => {
      if (!NAME_RE.test(c.name)) throw new Error(`cluster name ${JSON.stringify(c.name)} must be letters, digits and '-'`);
      if (clusters.has(c.name)) throw new Error(`cluster ${c.name} is listed twice`);
      if (c.pods.length > 240) throw new Error(`cluster ${c.name}: at most 240 pods`);
      const net = `10.${10 + index}.0`;
      const plan: ClusterPlan = {
        spec: c,
        index,
        subnet: `${net}.0/24`,
        gateway: `${net}.1`,
        bridge: `br${index}`,
        pods: c.pods.map((name, i) => {
          if (!NAME_RE.test(name)) throw new Error(`pod name ${JSON.stringify(name)} must be letters, digits and '-'`);
          return { cluster: c.name, name, ns: `${runId}-${c.name}-${name}`, ip: `${net}.${11 + i}` };
        }),
      };
      if (new Set(c.pods).size !== c.pods.length) throw new Error(`cluster ${c.name} lists a pod twice`);
      if (c.lb) {
        if (!NAME_RE.test(c.lb.name)) throw new Error(`LoadBalancer name ${JSON.stringify(c.lb.name)} must be letters, digits and '-'`);
        if (lbNames.has(c.lb.name)) throw new Error(`LoadBalancer name ${c.lb.name} is used twice`);
        lbNames.add(c.lb.name);
        plan.lb = { name: c.lb.name, ns: `${runId}-${c.name}-lb-${c.lb.name}`, ip: `172.18.255.${200 + index}` };
      }
      clusters.set(c.name, plan);
    });

    const hostEntries = Object.entries(spec.hosts ?? {}).map(([host, target]): [string, string] => [host, resolveHostTarget(clusters, host, target)]);
    const topo = new NetnsTopology(runId, `${runId}-router`, clusters, hostEntries);
    try {
      await topo.build();
    } catch (err) {
      await topo.destroy().catch(() => undefined);
      throw err;
    }
    return topo;
  }

  private async addNamespace(ns: string, hostname?: string, ip?: string): Promise<void> {
    // Recorded before creation, so a half-built run is still torn down.
    this.created.push(ns);
    await run(IP, ['netns', 'add', ns]);
    await mkdir(`/etc/netns/${ns}`, { recursive: true });
    const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback'];
    if (hostname && ip) lines.push(`${ip}\t${hostname}`);
    for (const [host, target] of this.hostEntries) lines.push(`${target}\t${host}`);
    await writeFile(`/etc/netns/${ns}/hosts`, lines.join('\n') + '\n');
    // Nothing resolves names by DNS in here: point the resolver at a closed local port so a
    // lookup of an unknown name (or gRPC's TXT query) fails at once instead of timing out on
    // the host's nameserver, which these namespaces cannot reach.
    await writeFile(`/etc/netns/${ns}/resolv.conf`, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
  }

  private async build(): Promise<void> {
    const router = this.router;
    await this.addNamespace(router);
    // Forwarding is per network namespace; enabling it here leaves the host's setting alone.
    await run(IP, ['netns', 'exec', router, 'sh', '-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward']);
    const routerCmds = ['link set lo up', 'link add brlb type bridge', `addr add ${LB_GATEWAY}/16 dev brlb`, 'link set brlb up'];
    for (const c of this.clusters.values()) {
      routerCmds.push(`link add ${c.bridge} type bridge`, `addr add ${c.gateway}/24 dev ${c.bridge}`, `link set ${c.bridge} up`);
    }
    await ipBatch(router, routerCmds);

    const endpoints: { ns: string; ip: string; prefixLen: number; bridge: string; veth: string; routes: string[]; hostname: string }[] = [];
    for (const c of this.clusters.values()) {
      c.pods.forEach((p, i) => endpoints.push({
        ns: p.ns, ip: p.ip, prefixLen: 24, bridge: c.bridge, veth: `p${c.index}x${i}`, hostname: p.name,
        routes: [`route add ${LB_SUBNET} via ${c.gateway}`],
      }));
      if (c.lb) {
        endpoints.push({
          ns: c.lb.ns, ip: c.lb.ip, prefixLen: 16, bridge: 'brlb', veth: `lb${c.index}`, hostname: c.lb.name,
          routes: [...this.clusters.values()].map((o) => `route add ${o.subnet} via ${LB_GATEWAY}`),
        });
      }
    }
    await Promise.all(endpoints.map(async (e) => {
      await this.addNamespace(e.ns, e.hostname, e.ip);
      // Created straight into both namespaces: no interface ever appears in the host's namespace.
      await ipBatch(router, [`link add ${e.veth} type veth peer name eth0 netns ${e.ns}`, `link set ${e.veth} master ${e.bridge}`, `link set ${e.veth} up`]);
      await ipBatch(e.ns, ['link set lo up', `addr add ${e.ip}/${e.prefixLen} dev eth0`, 'link set eth0 up', ...e.routes]);
    }));
  }

  private cluster(name: string): ClusterPlan {
    const c = this.clusters.get(name);
    if (!c) throw new Error(`no cluster ${name} in this topology (have ${[...this.clusters.keys()].join(', ')})`);
    return c;
  }

  pod(cluster: string, pod: string): PodEndpoint {
    const c = this.cluster(cluster);
    const p = c.pods.find((x) => x.name === pod);
    if (!p) throw new Error(`no pod ${pod} in ${cluster} (have ${c.pods.map((x) => x.name).join(', ')})`);
    return p;
  }

  pods(cluster: string): PodEndpoint[] {
    return [...this.cluster(cluster).pods];
  }

  lb(cluster: string): Endpoint & { name: string } {
    const c = this.cluster(cluster);
    if (!c.lb) throw new Error(`cluster ${cluster} has no LoadBalancer`);
    return c.lb;
  }

  /** The pod subnet of `cluster`, e.g. '10.10.0.0/24'. */
  subnet(cluster: string): string {
    return this.cluster(cluster).subnet;
  }

  /** Every namespace of this run (router first). */
  get namespaces(): string[] {
    return [...this.created];
  }

  /** Runs a command to completion inside `ns`, never rejecting on a non-zero exit. */
  exec(ns: string, command: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
    return execCapture(IP, ['netns', 'exec', ns, command, ...args], opts);
  }

  /** Kills every process left in this run's namespaces, deletes them and their /etc/netns dirs. Idempotent. */
  async destroy(): Promise<void> {
    const failures: string[] = [];
    await Promise.all(this.created.map((ns) => removeNamespace(ns).catch((err: Error) => {
      failures.push(err.message);
    })));
    if (failures.length) throw new Error(`destroying topology ${this.runId}: ${failures.join('; ')}`);
  }
}

function resolveHostTarget(clusters: Map<string, ClusterPlan>, host: string, target: string): string {
  if (!/^[a-z0-9.-]+$/i.test(host)) throw new Error(`hosts: ${JSON.stringify(host)} is not a host name`);
  if (isIP(target)) return target;
  for (const c of clusters.values()) if (c.lb?.name === target) return c.lb.ip;
  const cluster = clusters.get(target);
  if (cluster?.lb) return cluster.lb.ip;
  const [cn, pn] = target.split('/');
  const pod = pn ? clusters.get(cn!)?.pods.find((p) => p.name === pn) : undefined;
  if (pod) return pod.ip;
  throw new Error(`hosts: ${host} → ${JSON.stringify(target)} is not an IP, a LoadBalancer name, a cluster with a LoadBalancer, or cluster/pod`);
}

/** Host-side view of a namespace's hosts file (for debugging a failing test). */
export function hostsFileOf(ns: string): string {
  return readFileSync(`/etc/netns/${ns}/hosts`, 'utf8');
}
