// The seed's three-cluster deployment as data, for the two places that run it on one machine:
// `npm run demo` (every pod on its own loopback address) and the network-namespace e2e test
// (every pod in its own network namespace). Both take the node and controller configs from the
// Helm charts rendered with kind/values/*.yaml, exactly what a cluster's ConfigMaps hold, and
// differ only in what a pod's surroundings provide: its IP, its SPIRE socket, name resolution.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml, stringify } from 'yaml';
import { configMapText, renderChart } from './helm.js';
import { writeConfig } from './node-config.js';
import type { ManagedProcess, ProcessGroup } from './processes.js';

export const DATA_PORT = 46357;
export const SOUTHBOUND_PORT = 50052;
export const NORTHBOUND_PORT = 50051;
export const NODE_OPS_PORT = 9090;
export const CONTROLLER_OPS_PORT = 9091;
export const TRUST_DOMAINS = ['admin.example', 'cluster-a.example', 'cluster-b.example'];

export interface WorkloadCluster {
  /** Short name: namespaces, labels. */
  name: 'cluster-a' | 'cluster-b';
  trustDomain: string;
  /** The name of its LoadBalancer (every node's external_endpoint host). */
  lbName: string;
  values: string;
}

export const WORKLOAD_CLUSTERS: WorkloadCluster[] = [
  { name: 'cluster-a', trustDomain: 'cluster-a.example', lbName: 'slim.cluster-a.example', values: 'kind/values/cluster-a.yaml' },
  { name: 'cluster-b', trustDomain: 'cluster-b.example', lbName: 'slim.cluster-b.example', values: 'kind/values/cluster-b.yaml' },
];
export const ADMIN = { name: 'admin', trustDomain: 'admin.example', lbName: 'slim-control.admin.example', values: 'kind/values/controller.yaml' } as const;
/** The StatefulSet's pods in each workload cluster (release "slim", 3 replicas). */
export const NODE_PODS = ['slim-0', 'slim-1', 'slim-2'];
export const CONTROLLER_POD = 'slim-control';

/** Where the charts mount the SPIRE agent's socket directory (see the charts' values). */
export const NODE_SOCKET_DIR = '/tmp/spire-agent/public';
export const CONTROLLER_SOCKET_DIR = '/run/spire/agent-sockets';

/** SPIFFE IDs the ClusterSPIFFEIDs give each workload (namespace + service account). */
export const IDENTITY = {
  controller: 'spiffe://admin.example/ns/slim/sa/slim-control',
  operator: 'spiffe://admin.example/ns/default/sa/slimctl',
  node: (c: WorkloadCluster): string => `spiffe://${c.trustDomain}/ns/slim/sa/slim`,
  alice: 'spiffe://cluster-a.example/ns/default/sa/alice',
  bob: 'spiffe://cluster-b.example/ns/default/sa/bob',
};

/** The seed's sample apps: Alice (receiver) in cluster-a, Bob (sender) in cluster-b. */
export const ALICE = { name: 'org/ns/alice', cluster: 'cluster-a' as const };
export const BOB = { name: 'org/ns/bob', cluster: 'cluster-b' as const, messages: 10 };

/**
 * Alice's and Bob's command lines (as kind/apps runs them). `slim` is the --slim argument:
 * their SLIM node's address and TLS. As in the seed, Bob opens an MLS session with Alice.
 */
export function aliceArgs(slim: string): string[] {
  return ['--local', ALICE.name, '--slim', slim, '--enable-mls'];
}

export function bobArgs(slim: string): string[] {
  return ['--local', BOB.name, '--remote', ALICE.name, '--slim', slim, '--message', 'hello', '--iterations', String(BOB.messages), '--route-wait', '30000', '--enable-mls'];
}

/** An app's --slim argument: the node endpoint and SPIRE TLS (its own trust domain plus `trustDomains`). */
export function appSlimArg(endpoint: string, socketPath: string, trustDomains: string[] = []): string {
  const socket = socketPath.startsWith('unix:') ? socketPath : `unix:${socketPath}`;
  return JSON.stringify({
    endpoint,
    tls: { source: { type: 'spire', socket_path: socket }, ca_source: { type: 'spire', socket_path: socket, trust_domains: trustDomains } },
  });
}

export interface SeedConfigs {
  /** The slim ConfigMap's config.yaml per workload cluster. */
  nodes: Record<WorkloadCluster['name'], string>;
  /** The slim-control ConfigMap's config.yaml. */
  controller: string;
}

/** `helm template` of both charts with the per-cluster values files; the ConfigMaps' config files. */
export async function renderSeedConfigs(): Promise<SeedConfigs> {
  const [a, b, ctl] = await Promise.all([
    renderChart('slim', { release: 'slim', namespace: 'slim', valuesFiles: [WORKLOAD_CLUSTERS[0]!.values] }),
    renderChart('slim', { release: 'slim', namespace: 'slim', valuesFiles: [WORKLOAD_CLUSTERS[1]!.values] }),
    renderChart('slim-controller', { release: CONTROLLER_POD, namespace: 'slim', valuesFiles: [ADMIN.values] }),
  ]);
  return {
    nodes: { 'cluster-a': configMapText(a, 'slim-config'), 'cluster-b': configMapText(b, 'slim-config') },
    controller: configMapText(ctl, `${CONTROLLER_POD}-config`),
  };
}

/**
 * A rendered config with strings rewritten by `rewrite` (every string value, recursively): what
 * a pod's surroundings change when there is no pod. Returns YAML again.
 */
export function rewriteConfig(text: string, rewrite: (value: string) => string): string {
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return rewrite(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return stringify(walk(parseYaml(text)));
}

export interface SeedIssuer {
  process: ManagedProcess;
  /** The socket directory of `cluster/pod` (what the SPIFFE CSI driver mounts into the pod). */
  dir(pod: string): string;
  /** Its Workload API socket, `dir(pod)/api.sock`. */
  socket(pod: string): string;
}

/**
 * The dev issuer standing in for SPIRE: the three federated trust domains and one socket per
 * pod (`admin/slim-control`, `admin/slimctl`, `cluster-a/alice`, `cluster-b/bob`,
 * `cluster-x/slim-N`), each serving the SPIFFE ID the pod's ClusterSPIFFEID gives it.
 */
export async function startSeedIssuer(group: ProcessGroup, root: string): Promise<SeedIssuer> {
  const ids: Record<string, string> = {
    [`${ADMIN.name}/${CONTROLLER_POD}`]: IDENTITY.controller,
    [`${ADMIN.name}/slimctl`]: IDENTITY.operator,
    [`${ALICE.cluster}/alice`]: IDENTITY.alice,
    [`${BOB.cluster}/bob`]: IDENTITY.bob,
  };
  for (const c of WORKLOAD_CLUSTERS) for (const pod of NODE_PODS) ids[`${c.name}/${pod}`] = IDENTITY.node(c);
  const dir = (pod: string): string => {
    if (!(pod in ids)) throw new Error(`no workload ${pod} in the seed deployment`);
    return join(root, 'sockets', pod);
  };
  const socket = (pod: string): string => join(dir(pod), 'api.sock');
  for (const pod of Object.keys(ids)) mkdirSync(dir(pod), { recursive: true });
  const config = writeConfig(root, 'dev-issuer.yaml', {
    trust_domains: TRUST_DOMAINS,
    svid_ttl: '1h',
    workloads: Object.entries(ids).map(([pod, id]) => ({ socket: socket(pod), spiffe_id: id })),
  });
  const process = group.spawn('dev issuer', 'slim-dev-issuer', ['--config', config]);
  await process.waitForLine(/"msg":"dev issuer ready"/);
  return { process, dir, socket };
}
