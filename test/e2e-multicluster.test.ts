// The seed's three-cluster deployment, end to end, each cluster its own network: a network
// namespace per pod on a bridge per cluster (pod IPs 10.1x.0.y), haproxy as each cluster's
// LoadBalancer (172.18.255.2xx), the seed's names in every namespace's /etc/hosts, the SPIRE
// socket mounted at the chart's path in each pod (one dev-issuer socket per pod). The node and
// controller configs are the ConfigMaps `helm template` renders from the charts with
// kind/values/*.yaml, byte for byte; each pod adds only its environment (SLIM_SVC_ID, MY_POD_IP).
//
// Needs root (namespaces, mounts). Locally it skips with a message when it cannot run; under
// CI=true it must run, and fails if it cannot.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProcessGroup, type ManagedProcess } from '../harness/processes.js';
import { scratchDir } from '../harness/node-config.js';
import { eventually } from './support/local-nodes.js';
import { NetnsTopology, canUseNetns } from '../harness/netns.js';
import { findHaproxy, startHaproxy } from '../harness/haproxy.js';
import {
  ADMIN, ALICE, BOB, CONTROLLER_POD, CONTROLLER_SOCKET_DIR, DATA_PORT, IDENTITY, NODE_PODS, NODE_SOCKET_DIR, NORTHBOUND_PORT, SOUTHBOUND_PORT,
  WORKLOAD_CLUSTERS, aliceArgs, appSlimArg, bobArgs, renderSeedConfigs, startSeedIssuer, type SeedIssuer,
} from '../harness/seed-deployment.js';
import type { ConnectionInfo, NodeInfo } from '../client/admin-client.js';

const usable = canUseNetns();
const haproxy = findHaproxy();
const why = !usable.ok ? usable.why : !haproxy ? 'haproxy is not installed (Debian package haproxy)' : '';
const mustRun = process.env.CI === 'true';
if (why && !mustRun) console.warn(`skipping the network-namespace e2e test: ${why}`);

const API_SOCKET = `unix:${NODE_SOCKET_DIR}/api.sock`;

describe.skipIf(why !== '' && !mustRun)('the seed deployment across three network namespaces', () => {
  const group = new ProcessGroup();
  let topo: NetnsTopology | undefined;
  let controller: ManagedProcess;
  let spire: SeedIssuer;

  /** slimctl in the admin cluster, through the controller's LoadBalancer name, as an operator. */
  async function slimctl(...args: string[]): Promise<unknown> {
    const p = group.spawn('slimctl', 'slimctl', [...args, '-o', 'json', '--server', `${ADMIN.lbName}:${NORTHBOUND_PORT}`, '--spiffe-socket', API_SOCKET], {
      netns: topo!.pod('admin', 'slimctl').ns,
      mounts: [{ source: spire.dir('admin/slimctl'), target: NODE_SOCKET_DIR }],
    });
    const { code } = await p.exited;
    if (code !== 0) throw new Error(`slimctl ${args.join(' ')} exited ${code}: ${p.tail()}`);
    return JSON.parse(p.output);
  }

  beforeAll(async () => {
    if (why) throw new Error(`CI=true, so the network-namespace e2e test must run, but ${why}`);
    const dir = scratchDir('slim-e2e');
    const configs = await renderSeedConfigs();

    topo = await NetnsTopology.create({
      clusters: [
        { name: 'admin', pods: [CONTROLLER_POD, 'slimctl'], lb: { name: 'slim-control' } },
        { name: 'cluster-a', pods: [...NODE_PODS, 'alice'], lb: { name: 'slim-a' } },
        { name: 'cluster-b', pods: [...NODE_PODS, 'bob'], lb: { name: 'slim-b' } },
      ],
      hosts: { [ADMIN.lbName]: 'admin', [WORKLOAD_CLUSTERS[0]!.lbName]: 'cluster-a', [WORKLOAD_CLUSTERS[1]!.lbName]: 'cluster-b' },
    });

    // SPIRE's part: one socket per pod, each pod's identity as its ClusterSPIFFEID gives it.
    spire = await startSeedIssuer(group, dir);

    // admin.example: the controller pod and its LoadBalancer.
    const ctlPod = topo.pod('admin', CONTROLLER_POD);
    const ctlConfig = join(dir, 'slim-control.yaml');
    writeFileSync(ctlConfig, configs.controller);
    controller = group.spawn('slim-control', 'slim-controller', ['--config', ctlConfig], {
      netns: ctlPod.ns,
      mounts: [{ source: spire.dir(`admin/${CONTROLLER_POD}`), target: CONTROLLER_SOCKET_DIR }],
    });
    await controller.waitForLine(/"msg":"slim-controller started"/, 20_000);
    const adminLb = topo.lb('admin');
    await startHaproxy(group, {
      netns: adminLb.ns,
      frontends: [
        { name: 'southbound', bind: { host: adminLb.ip, port: SOUTHBOUND_PORT }, backends: [{ host: ctlPod.ip, port: SOUTHBOUND_PORT }] },
        { name: 'northbound', bind: { host: adminLb.ip, port: NORTHBOUND_PORT }, backends: [{ host: ctlPod.ip, port: NORTHBOUND_PORT }] },
      ],
    });

    // cluster-a, cluster-b: the StatefulSet's three pods, all reading the one ConfigMap.
    const started: Promise<string>[] = [];
    for (const c of WORKLOAD_CLUSTERS) {
      const config = join(dir, `${c.name}-config.yaml`);
      writeFileSync(config, configs.nodes[c.name]);
      for (const pod of NODE_PODS) {
        const p = topo.pod(c.name, pod);
        const node = group.spawn(`${c.name}/${pod}`, 'slim-node', ['--config', config], {
          netns: p.ns,
          env: { SLIM_SVC_ID: pod, MY_POD_IP: p.ip },
          mounts: [{ source: spire.dir(`${c.name}/${pod}`), target: NODE_SOCKET_DIR }],
        });
        started.push(node.waitForLine(/"msg":"slim-node started"/, 20_000));
      }
      const lb = topo.lb(c.name);
      await startHaproxy(group, {
        netns: lb.ns,
        frontends: [{ name: 'data', bind: { host: lb.ip, port: DATA_PORT }, backends: topo.pods(c.name).filter((p) => NODE_PODS.includes(p.name)).map((p) => ({ host: p.ip, port: DATA_PORT })) }],
      });
    }
    await Promise.all(started);
  }, 90_000);

  afterAll(async () => {
    await group.stopAll();
    await topo?.destroy();
  }, 30_000);

  it('registers all six nodes: the controller log (seed step 6) and the admin API', async () => {
    const want = WORKLOAD_CLUSTERS.flatMap((c) => NODE_PODS.map((pod) => `${c.trustDomain}/${pod}`)).sort();
    const registered = (): string[] =>
      controller.lines.filter((l) => l.includes('Registering node with ID')).map((l) => JSON.parse(l) as { group: string; node_id: string; msg: string })
        .map((o) => { expect(o.msg).toBe(`Registering node with ID ${o.node_id}`); return `${o.group}/${o.node_id}`; });
    await eventually(() => new Set(registered()).size >= want.length, 30_000, 'six registrations');
    expect([...new Set(registered())].sort()).toEqual(want);

    const { nodes } = (await slimctl('nodes')) as { nodes: NodeInfo[] };
    expect(nodes.map((n) => `${n.group}/${n.node_id}`).sort()).toEqual(want);
    for (const n of nodes) {
      const c = WORKLOAD_CLUSTERS.find((x) => x.trustDomain === n.group)!;
      expect(n.status).toBe('up');
      expect(n.identity).toBe(IDENTITY.node(c));
      expect(n.endpoints[0]).toMatchObject({ local_endpoint: `${topo!.pod(c.name, n.node_id).ip}:${DATA_PORT}`, external_endpoint: `${c.lbName}:${DATA_PORT}` });
    }
  }, 60_000);

  it('Bob\'s 10 messages reach Alice across the clusters and her 10 replies come back; links: pod IPs inside a cluster, LoadBalancers between', async () => {
    const alice = group.spawn('alice', 'slim-receiver', aliceArgs(appSlimArg(`https://${WORKLOAD_CLUSTERS[0]!.lbName}:${DATA_PORT}`, API_SOCKET)), {
      netns: topo!.pod('cluster-a', 'alice').ns,
      mounts: [{ source: spire.dir('cluster-a/alice'), target: NODE_SOCKET_DIR }],
    });
    await alice.waitForLine(/waiting for messages/, 20_000);
    const bob = group.spawn('bob', 'slim-sender', bobArgs(appSlimArg(`https://${WORKLOAD_CLUSTERS[1]!.lbName}:${DATA_PORT}`, API_SOCKET)), {
      netns: topo!.pod('cluster-b', 'bob').ns,
      mounts: [{ source: spire.dir('cluster-b/bob'), target: NODE_SOCKET_DIR }],
    });
    // While Bob is connected, both names have their routes: look at the connections they use.
    await bob.waitForLine(/sent "hello", reply/, 40_000);
    const { connections } = (await slimctl('connections')) as { connections: ConnectionInfo[] };
    const { code } = await bob.exited;
    expect(code, bob.output).toBe(0);
    expect(bob.output).toContain(`${BOB.messages}/${BOB.messages} replies received`);
    // As in the seed, Bob's messages went over an MLS session bound to Alice's SPIFFE ID.
    expect(bob.output).toMatch(new RegExp(`opened MLS session \\S+ with ${ALICE.name}/\\w+ \\(identity ${IDENTITY.alice.replaceAll('.', '\\.')}\\), MLS epoch 1`));
    expect(alice.output).toMatch(new RegExp(`new MLS session \\S+ from ${BOB.name}/\\w+`));
    const got = alice.lines.filter((l) => l.includes(`received "hello" from ${BOB.name}/`));
    expect(got).toHaveLength(BOB.messages);
    for (const l of got) expect(l).toContain(`(identity ${IDENTITY.bob})`);
    expect(bob.lines.filter((l) => l.includes(`reply "hello from ${ALICE.name}"`) && l.includes(`(identity ${IDENTITY.alice})`))).toHaveLength(BOB.messages);

    // The controller's connections: within a cluster to pod IPs, between clusters to the other
    // cluster's LoadBalancer name, and the nodes really reached those addresses. Alice stays:
    // every cluster-b node ends up with its connection into cluster-a (step 2 of her routes).
    const towardA = async (): Promise<ConnectionInfo[]> => {
      const { connections: now } = (await slimctl('connections')) as { connections: ConnectionInfo[] };
      return now.filter((c) => c.group === WORKLOAD_CLUSTERS[1]!.trustDomain && c.connection_id === `group/${WORKLOAD_CLUSTERS[0]!.trustDomain}` && c.state === 'up');
    };
    let intoA: ConnectionInfo[] = [];
    await eventually(async () => (intoA = await towardA()).length >= NODE_PODS.length, 20_000, 'every cluster-b node connected into cluster-a');
    expect(intoA.map((c) => c.node_id).sort()).toEqual(NODE_PODS);
    const all = [...connections, ...intoA];
    const local = all.filter((c) => c.kind === 'local' && c.state === 'up');
    const external = all.filter((c) => c.kind === 'external' && c.state === 'up');
    expect(local.length).toBeGreaterThan(0);
    // Bob's replies left cluster-a over a connection into cluster-b.
    expect(connections.some((c) => c.kind === 'external' && c.state === 'up' && c.group === WORKLOAD_CLUSTERS[0]!.trustDomain)).toBe(true);
    const host = (hostPort: string): string => hostPort.slice(0, hostPort.lastIndexOf(':'));
    for (const c of local) {
      const cluster = WORKLOAD_CLUSTERS.find((x) => x.trustDomain === c.group)!;
      const podIps = topo!.pods(cluster.name).map((p) => p.ip);
      expect(podIps).toContain(host(c.endpoint));
      expect(podIps).toContain(host(c.remote_address));
    }
    // The link behind a group connection is the one this node dialled (remote: the other
    // cluster's LB) or one a node of that cluster dialled in (remote: this cluster's LB, which
    // haproxy connects from): a LoadBalancer either way, never a pod of the other cluster.
    const lbIps = WORKLOAD_CLUSTERS.map((x) => topo!.lb(x.name).ip);
    for (const c of external) {
      const other = WORKLOAD_CLUSTERS.find((x) => x.trustDomain !== c.group)!;
      expect(c.endpoint).toBe(`${other.lbName}:${DATA_PORT}`);
      expect(lbIps).toContain(host(c.remote_address));
      expect(NODE_PODS).toContain(c.peer_node_id);
    }
    expect(external.some((c) => c.remote_address === `${topo!.lb(WORKLOAD_CLUSTERS.find((x) => x.trustDomain !== c.group)!.name).ip}:${DATA_PORT}`)).toBe(true);
  }, 90_000);
});
