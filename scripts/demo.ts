// npm run demo: the seed's three-cluster deployment on this machine. The dev issuer plays SPIRE
// (three federated trust domains, a Workload API socket per pod), slim-control plays the admin
// cluster, three slim-node processes per workload cluster sit behind that cluster's load
// balancer, Alice subscribes in cluster-a, Bob sends her 10 messages from cluster-b and waits
// for each reply. Every config comes from `helm template` of the charts with kind/values/*.yaml.
//
// There are no pods here, so the demo gives each "pod" what Kubernetes would: its own IP (a
// loopback address, 127.77.<cluster>.<n>, which Linux routes without any setup), its own
// SPIRE socket (the config's socket path, pointed at the pod's socket), and names for the
// LoadBalancers (the chart values name slim.cluster-a.example etc.; here they are replaced by
// the balancer's loopback address, as /etc/hosts would map them).
//
// Prints an account and exits 0 when Bob got all replies; stops everything, also on Ctrl-C.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProcessGroup, type ManagedProcess } from '../harness/processes.js';
import { scratchDir } from '../harness/node-config.js';
import { TcpBalancer } from '../harness/tcp-balancer.js';
import {
  ADMIN, ALICE, BOB, CONTROLLER_POD, CONTROLLER_SOCKET_DIR, DATA_PORT, NODE_PODS, NODE_SOCKET_DIR, NORTHBOUND_PORT,
  NODE_OPS_PORT, SOUTHBOUND_PORT, WORKLOAD_CLUSTERS, aliceArgs, appSlimArg, bobArgs, renderSeedConfigs, rewriteConfig, startSeedIssuer,
  type WorkloadCluster,
} from '../harness/seed-deployment.js';
import { AdminClient, type ConnectionInfo } from '../client/admin-client.js';

const say = (line = ''): void => void process.stdout.write(`${line}\n`);
const group = new ProcessGroup();
const balancers: TcpBalancer[] = [];
let admin: AdminClient | undefined;
let stopping = false;

async function shutdown(code: number): Promise<never> {
  stopping = true;
  admin?.close();
  await group.stopAll();
  await Promise.all(balancers.map((b) => b.close()));
  process.exit(code);
}

process.on('SIGINT', () => {
  say('\ninterrupted: stopping everything the demo started');
  void shutdown(130);
});
process.on('SIGTERM', () => void shutdown(143));

function watchExit(p: ManagedProcess): void {
  void p.exited.then(({ code }) => {
    if (!stopping && code !== 0 && !['alice', 'bob'].includes(p.label)) {
      say(`✗ ${p.label} exited with code ${code}:\n${p.tail(10)}`);
      void shutdown(1);
    }
  });
}

// Addresses: 127.77.0.x admin, 127.77.1.x cluster-a, 127.77.2.x cluster-b; .100 is the LoadBalancer.
const podIp = (cluster: number, i: number): string => `127.77.${cluster}.${10 + i}`;
const lbIp = (cluster: number): string => `127.77.${cluster}.100`;
const HOSTS: Record<string, string> = { [ADMIN.lbName]: lbIp(0), [WORKLOAD_CLUSTERS[0]!.lbName]: lbIp(1), [WORKLOAD_CLUSTERS[1]!.lbName]: lbIp(2) };
const nameOf = (endpoint: string): string => {
  for (const [name, ip] of Object.entries(HOSTS)) if (endpoint.startsWith(`${ip}:`)) return `${endpoint} = ${name}${endpoint.slice(ip.length)}`;
  return endpoint;
};

/** What a pod's surroundings would do to its config: its own IP, its socket, the names of the LBs. */
function podConfig(text: string, ip: string, socketDir: string, mountedDir: string): string {
  return rewriteConfig(text, (v) => {
    let out = v.replace(/^0\.0\.0\.0(:|$)/, `${ip}$1`).replace(new RegExp(`^unix:(//)?${mountedDir}/`), `unix:${socketDir}/`);
    for (const [name, addr] of Object.entries(HOSTS)) out = out.replaceAll(name, addr);
    return out;
  });
}

async function main(): Promise<void> {
  const dir = scratchDir('slim-demo');
  say('SLIM-TS demo: the seed\'s three clusters on this machine; Bob in cluster-b sends 10 messages to Alice in cluster-a');
  say();

  const configs = await renderSeedConfigs();
  say(`▸ rendered the charts: helm template charts/slim -f ${WORKLOAD_CLUSTERS.map((c) => c.values).join(' | -f ')}; charts/slim-controller -f ${ADMIN.values}`);

  // One Workload API socket per pod, as the SPIFFE CSI driver gives each pod its agent's socket.
  const spire = await startSeedIssuer(group, dir);
  watchExit(spire.process);
  say('▸ dev issuer (standing in for SPIRE): trust domains admin.example, cluster-a.example, cluster-b.example, federated; a socket per pod');

  // admin.example: the controller behind its LoadBalancer (southbound for nodes, northbound for slimctl).
  const ctlIp = podIp(0, 0);
  const ctlCfg = join(dir, 'slim-control.yaml');
  writeFileSync(ctlCfg, podConfig(configs.controller, ctlIp, spire.dir(`admin/${CONTROLLER_POD}`), CONTROLLER_SOCKET_DIR));
  const controller = group.spawn('slim-control', 'slim-controller', ['--config', ctlCfg]);
  watchExit(controller);
  await controller.waitForLine(/"msg":"slim-controller started"/, 20_000);
  for (const port of [SOUTHBOUND_PORT, NORTHBOUND_PORT]) {
    const lb = new TcpBalancer([{ host: ctlIp, port }]);
    balancers.push(lb);
    await lb.listen(port, lbIp(0));
  }
  say(`▸ admin.example: slim-control on ${ctlIp} (pod IP), LoadBalancer ${lbIp(0)} = ${ADMIN.lbName}:${SOUTHBOUND_PORT}/${NORTHBOUND_PORT}`);

  // cluster-a, cluster-b: a StatefulSet of three nodes each, behind the cluster's LoadBalancer.
  const nodes: { cluster: WorkloadCluster; pod: string; ip: string; proc: ManagedProcess }[] = [];
  for (const [ci, c] of WORKLOAD_CLUSTERS.entries()) {
    const n = ci + 1;
    for (const [i, pod] of NODE_PODS.entries()) {
      const ip = podIp(n, i);
      const file = join(dir, `${c.name}-${pod}.yaml`);
      writeFileSync(file, podConfig(configs.nodes[c.name], ip, spire.dir(`${c.name}/${pod}`), NODE_SOCKET_DIR));
      const proc = group.spawn(`${c.name}/${pod}`, 'slim-node', ['--config', file], { env: { SLIM_SVC_ID: pod, MY_POD_IP: ip } });
      watchExit(proc);
      nodes.push({ cluster: c, pod, ip, proc });
    }
    const lb = new TcpBalancer(NODE_PODS.map((_, i) => ({ host: podIp(n, i), port: DATA_PORT })));
    balancers.push(lb);
    await lb.listen(DATA_PORT, lbIp(n));
  }
  await Promise.all(nodes.map((x) => x.proc.waitForLine(/"msg":"slim-node started"/, 20_000)));
  for (const c of WORKLOAD_CLUSTERS) {
    const n = WORKLOAD_CLUSTERS.indexOf(c) + 1;
    say(`▸ ${c.trustDomain}: ${NODE_PODS.map((p, i) => `${p} on ${podIp(n, i)}`).join(', ')}; LoadBalancer ${lbIp(n)} = ${c.lbName}:${DATA_PORT}`);
  }

  // Seed step 6: every node registered with the controller.
  const registered = (): string[] => controller.lines.filter((l) => l.includes('Registering node with ID'));
  await waitFor(() => registered().length >= nodes.length, 30_000, `${nodes.length} nodes registering (controller log:\n${controller.tail(10)})`);
  say();
  say('Controller log (seed step 6: kubectl logs -n slim deployment/slim-control | grep "Registering node with ID"):');
  for (const line of registered()) {
    const o = JSON.parse(line) as { msg: string; group: string; identity: string; local_endpoint: string; external_endpoint: string };
    say(`  ${o.msg}  group ${o.group}, ${o.identity}, local ${o.local_endpoint}, external ${nameOf(o.external_endpoint)}`);
  }

  admin = await AdminClient.connect({
    server: `${lbIp(0)}:${NORTHBOUND_PORT}`,
    tls: { insecure: false, skipVerify: false, cert: { type: 'spire', socketPath: `unix:${spire.socket('admin/slimctl')}` }, ca: { type: 'spire', socketPath: `unix:${spire.socket('admin/slimctl')}`, trustDomains: [] } },
  });

  // Seed step 7: Alice on cluster-a (through its Service), then Bob on cluster-b.
  say();
  const aliceSlim = appSlimArg(`https://${lbIp(1)}:${DATA_PORT}`, spire.socket('cluster-a/alice'));
  const alice = group.spawn('alice', 'slim-receiver', aliceArgs(aliceSlim), { echo: (line) => say(`    [alice] ${line}`) });
  watchExit(alice);
  await alice.waitForLine(/waiting for messages/);
  const routesTo = async (name: string): Promise<string[]> =>
    (await admin!.routes()).filter((r) => r.name.startsWith(`${name}/`) && r.state === 'installed').map((r) => `${r.node_id} (${r.group}) → ${r.connection_id}`);
  // Step 1 (the other two cluster-a nodes) and step 2 (all three cluster-b nodes).
  await waitFor(async () => (await routesTo(ALICE.name)).length === 5, 20_000, 'the controller installing Alice\'s routes');
  say(`▸ Alice subscribed; the controller installed ${ALICE.name} routes (slimctl routes):`);
  for (const r of (await routesTo(ALICE.name)).sort()) say(`    ${r}`);
  say();

  const bobSlim = appSlimArg(`https://${lbIp(2)}:${DATA_PORT}`, spire.socket('cluster-b/bob'));
  const bob = group.spawn('bob', 'slim-sender', bobArgs(bobSlim), { echo: (line) => say(`    [bob]   ${line}`) });
  // While Bob is connected (his name leaves with him): which node each app is on, which node each LB connection reached.
  const snapshot = bob.waitForLine(/sent "hello", reply/, 60_000).then(async () => ({ conns: await admin!.connections(), subs: await admin!.subscriptions() }), () => undefined);
  const { code } = await bob.exited;
  say();

  const snap = await snapshot;
  if (snap) await describeHops(snap.conns, snap.subs, nodes);
  say();
  if (code === 0) {
    say(`✓ Bob got all ${BOB.messages} replies over an MLS session (no node could read them): every hop mutual TLS with SPIFFE IDs from three federated trust domains, routes from the controller`);
  } else say(`✗ bob exited with code ${code}: not every message got its reply`);
  await shutdown(code === 0 ? 0 : 1);
}

/** Where the messages went: whose node each app is on, and which node each LB connection reached. */
async function describeHops(conns: ConnectionInfo[], subs: { node_id: string; group: string; name: string }[], nodes: { cluster: WorkloadCluster; pod: string; ip: string }[]): Promise<void> {
  const homeOf = (name: string): { node_id: string; group: string } | undefined => subs.find((s) => s.name.startsWith(`${name}/`));
  const [a, b] = [homeOf(ALICE.name), homeOf(BOB.name)];
  if (!a || !b) return;
  const via = (from: { node_id: string; group: string }, connectionId: string): ConnectionInfo | undefined =>
    conns.find((c) => c.node_id === from.node_id && c.group === from.group && c.connection_id === connectionId && c.state === 'up');
  const leg = (from: { node_id: string; group: string }, to: { node_id: string; group: string }): string[] => {
    const out: string[] = [];
    const lb = via(from, `group/${to.group}`);
    if (!lb) return [`${from.node_id} (${from.group}) → ?`];
    out.push(`${from.node_id} (${from.group}) → group/${to.group} via ${nameOf(lb.endpoint)}, landed on ${lb.peer_node_id}`);
    if (lb.peer_node_id !== to.node_id) {
      const local = via({ node_id: lb.peer_node_id, group: to.group }, `node/${to.node_id}`);
      out.push(`${lb.peer_node_id} (${to.group}) → node/${to.node_id} at ${local?.endpoint ?? '?'} (pod IP)`);
    }
    return out;
  };
  say('Where the messages went (slimctl subscriptions + connections: the LB picks a node per connection):');
  say(`  Bob → ${b.node_id} (${b.group})`);
  for (const l of leg(b, a)) say(`    ${l}`);
  say(`  → ${a.node_id} (${a.group}) → Alice`);
  say(`  Alice's replies → ${a.node_id} (${a.group})`);
  for (const l of leg(a, b)) say(`    ${l}`);
  say(`  → ${b.node_id} (${b.group}) → Bob`);
  const counts = await Promise.all(nodes.map(async (n) => [n, await publishes(n.ip)] as const));
  say('  publishes each node received (its /metrics): ' + counts.filter(([, v]) => v > 0).map(([n, v]) => `${n.cluster.name}/${n.pod} ${v}`).join(', '));
}

async function publishes(ip: string): Promise<number> {
  const text = await (await fetch(`http://${ip}:${NODE_OPS_PORT}/metrics`)).text();
  const m = /^slim_messages_received_total\{[^}]*type="publish"[^}]*\} (\S+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}

async function waitFor(test: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await test())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

main().catch(async (err: Error) => {
  say(`✗ demo failed: ${err.message}${err.cause ? ` (${(err.cause as Error).message})` : ''}`);
  await shutdown(1);
});
