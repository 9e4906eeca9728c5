// npm run demo: two SLIM nodes standing in for two clusters (cluster-a and cluster-b), alice
// (receiver) on cluster-a's node, bob (sender) on cluster-b's node, every hop mutual TLS with
// SPIFFE identities from the dev issuer (one Workload API socket per workload, the seed's three
// federated trust domains). Bob sends 10 messages to org/ns/alice and waits for each reply.
// Prints what happens and stops everything it started, also on Ctrl-C. Exits 0 only when bob
// got all 10 replies.
//
// The controller and the admin cluster of the seed deployment join this demo with the
// controller; the node and app configs here are the same shape the charts use.

import { ProcessGroup, freePort, type ManagedProcess } from '../harness/processes.js';
import { localNodeConfig, scratchDir, spireTls, writeConfig } from '../harness/node-config.js';

const say = (line: string): void => void process.stdout.write(`${line}\n`);
const group = new ProcessGroup();
let stopping = false;

async function shutdown(code: number): Promise<never> {
  stopping = true;
  await group.stopAll();
  process.exit(code);
}

process.on('SIGINT', () => {
  say('\ninterrupted: stopping everything the demo started');
  void shutdown(130);
});
process.on('SIGTERM', () => void shutdown(143));

async function metrics(port: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  for (const line of text.split('\n')) {
    const m = /^(slim_[a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m) out.set(`${m[1]}${(m[2] ?? '').replace(/,?(node_id|group)="[^"]*"/g, '').replace('{,', '{').replace('{}', '')}`, Number(m[3]));
  }
  return out;
}

function watchExit(p: ManagedProcess): void {
  void p.exited.then(({ code }) => {
    if (!stopping && code !== 0 && (p.label.startsWith('node') || p.label === 'dev issuer')) {
      say(`✗ ${p.label} exited with code ${code}:\n${p.tail(10)}`);
      void shutdown(1);
    }
  });
}

async function main(): Promise<void> {
  const dir = scratchDir('slim-demo');
  const [portA, portB, opsA, opsB] = [await freePort(), await freePort(), await freePort(), await freePort()];
  say('SLIM-TS demo: bob in cluster-b sends 10 messages to alice in cluster-a, mTLS with SPIFFE IDs on every hop');
  say('');

  // The dev issuer plays SPIRE: one CA per trust domain, federated bundles, one socket per workload.
  const ids = {
    'slim-a': 'spiffe://cluster-a.example/ns/slim/sa/slim',
    'slim-b': 'spiffe://cluster-b.example/ns/slim/sa/slim',
    alice: 'spiffe://cluster-a.example/ns/default/sa/alice',
    bob: 'spiffe://cluster-b.example/ns/default/sa/bob',
  };
  const sock = (name: keyof typeof ids): string => `${dir}/spire/${name}.sock`;
  const issuerCfg = writeConfig(dir, 'dev-issuer.yaml', {
    trust_domains: ['admin.example', 'cluster-a.example', 'cluster-b.example'],
    svid_ttl: '1h',
    workloads: Object.entries(ids).map(([name, id]) => ({ socket: sock(name as keyof typeof ids), spiffe_id: id })),
  });
  const issuer = group.spawn('dev issuer', 'slim-dev-issuer', ['--config', issuerCfg]);
  watchExit(issuer);
  await issuer.waitForLine(/"msg":"dev issuer ready"/);
  say('▸ dev issuer: trust domains admin.example, cluster-a.example, cluster-b.example (federated); a Workload API socket per workload');

  // As in the seed: each node accepts its own trust domain and the other workload cluster's.
  const cfgA = writeConfig(
    dir,
    'slim-a.yaml',
    localNodeConfig({
      nodeId: 'slim-a',
      group: 'cluster-a.example',
      port: portA,
      opsPort: opsA,
      serverTls: spireTls(sock('slim-a'), ['cluster-b.example']),
    }),
  );
  const cfgB = writeConfig(
    dir,
    'slim-b.yaml',
    localNodeConfig({
      nodeId: 'slim-b',
      group: 'cluster-b.example',
      port: portB,
      opsPort: opsB,
      dial: [`https://127.0.0.1:${portA}`],
      serverTls: spireTls(sock('slim-b'), ['cluster-a.example']),
      clientTls: spireTls(sock('slim-b'), ['cluster-a.example']),
    }),
  );
  const nodeA = group.spawn('node slim-a', 'slim-node', ['--config', cfgA]);
  watchExit(nodeA);
  await nodeA.waitForLine(/"msg":"slim-node started"/);
  say(`▸ node slim-a (group cluster-a.example, ${ids['slim-a']}) serving mTLS on 127.0.0.1:${portA}   config: ${cfgA}`);
  const nodeB = group.spawn('node slim-b', 'slim-node', ['--config', cfgB]);
  watchExit(nodeB);
  await nodeB.waitForLine(/"msg":"slim-node started"/);
  say(`▸ node slim-b (group cluster-b.example, ${ids['slim-b']}) serving mTLS on 127.0.0.1:${portB}, dialling slim-a`);
  await nodeB.waitForLine((l) => l.includes('"msg":"link up"') && l.includes('node slim-a'));
  say('▸ link up: slim-b → slim-a (one pooled HTTP/2 connection, remote-group link; each side verified the other\'s SVID against its trust domain\'s bundle)');

  const slimArg = (port: number, name: keyof typeof ids): string => JSON.stringify({ endpoint: `https://127.0.0.1:${port}`, tls: spireTls(sock(name)) });
  const alice = group.spawn('alice', 'slim-receiver', ['--local', 'org/ns/alice', '--slim', slimArg(portA, 'alice')], {
    echo: (line) => say(`    [alice] ${line}`),
  });
  await alice.waitForLine(/waiting for messages/);
  say('▸ alice subscribed on slim-a; slim-a told slim-b, which now routes org/ns/alice → slim-a');
  say('');
  const bob = group.spawn(
    'bob',
    'slim-sender',
    ['--local', 'org/ns/bob', '--remote', 'org/ns/alice', '--slim', slimArg(portB, 'bob'), '--message', 'hello', '--iterations', '10'],
    { echo: (line) => say(`    [bob]   ${line}`) },
  );
  const { code } = await bob.exited;
  say('');


  const [ma, mb] = [await metrics(opsA), await metrics(opsB)];
  const pub = (m: Map<string, number>, k: string): number => m.get(`${k}{type="publish"}`) ?? 0;
  say('Where the messages went (from the nodes\' /metrics):');
  say(`  slim-b: received ${pub(mb, 'slim_messages_received_total')} publishes (bob's 10 + alice's 10 replies), sent ${pub(mb, 'slim_messages_sent_total')}`);
  say(`  slim-a: received ${pub(ma, 'slim_messages_received_total')} publishes (bob's 10 via slim-b + alice's 10 replies), sent ${pub(ma, 'slim_messages_sent_total')}`);
  say(`  dropped: slim-a ${sumDropped(ma)}, slim-b ${sumDropped(mb)}`);
  say('');
  if (code === 0) {
    say('✓ bob got all 10 replies: bob → slim-b → slim-a → alice → slim-a → slim-b → bob');
    say('  each message carried the identity its sender\'s node proved from the sender\'s certificate (not what the app claimed)');
  }
  else say(`✗ bob exited with code ${code}: not every message got its reply`);
  await shutdown(code === 0 ? 0 : 1);
}

function sumDropped(m: Map<string, number>): number {
  let n = 0;
  for (const [k, v] of m) if (k.startsWith('slim_messages_dropped_total')) n += v;
  return n;
}

main().catch(async (err: Error) => {
  say(`✗ demo failed: ${err.message}${err.cause ? ` (${(err.cause as Error).message})` : ""}`);
  await shutdown(1);
});
