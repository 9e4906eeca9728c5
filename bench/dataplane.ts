// npm run bench: the two-hop data-plane path (sender -> node B -> node A -> receiver, each its
// own process), plaintext and with SPIFFE mTLS on every hop (identities from the dev issuer, as
// the seed's cross-cluster path runs), next to a raw node:http2 relay chain of the same shape
// (sender -> relay -> relay -> receiver: gRPC framing, no parsing, no routing), plaintext and
// TLS, and the same path through two nats-servers joined by a gateway (when nats-server is
// installed), in one invocation, so the ratios are what to read: absolute numbers move with the
// machine.
//
// Options: --sizes 100,1024  --count N (messages per throughput run)  --rate 1000  --seconds 5
//          --repeat 3 (latency runs per path, alternating paths; the median p99 is reported,
//          with the range: on a shared 2-core VM one run's tail can move by milliseconds)
//          --only throughput|latency   --paths slim,slim-mtls,nats,nats-tls,raw,raw-tls

import { ProcessGroup, freePort, type ManagedProcess } from '../harness/processes.js';
import { existsSync, writeFileSync } from 'node:fs';
import { localNodeConfig, scratchDir, spireTls, writeConfig } from '../harness/node-config.js';
import { mintCa, mintSvid } from '../identity/x509-mint.js';
import { arg } from './args.js';

interface Latency {
  p50: number;
  p99: number;
  lost: number;
}

interface Throughput {
  rate: number;
  /** Messages of the throughput run that never arrived (NATS drops for slow consumers). */
  lost: number;
}

interface Row extends Latency {
  sendLost: number;
  size: number;
  path: string;
  rate: number;
  p99s: number[];
}

const SIZES = arg('sizes', '100,1024').split(',').map(Number);
// Enough messages that JIT warm-up is a small part of the run (~5 s per path at 100 B).
const COUNT = Number(arg('count', '3000000'));
const RATE = Number(arg('rate', '1000'));
const SECONDS = Number(arg('seconds', '5'));
const REPEAT = Number(arg('repeat', '3'));
const ONLY = arg('only', 'both');
type PathName = 'slim' | 'slim-mtls' | 'nats' | 'nats-tls' | 'raw' | 'raw-tls';
const NATS_SERVER = natsServerBinary();
const PATHS = new Set(arg('paths', `slim,slim-mtls,${NATS_SERVER ? 'nats,nats-tls,' : ''}raw,raw-tls`).split(','));
const wants = (what: 'throughput' | 'latency', path: PathName): boolean => (ONLY === 'both' || ONLY === what) && PATHS.has(path);
const NONE: Latency = { p50: NaN, p99: NaN, lost: 0 };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Median p50 and p99 over runs, lost summed. */
function combine(runs: Latency[]): Latency & { p99s: number[] } {
  return {
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
    lost: runs.reduce((n, r) => n + r.lost, 0),
    p99s: runs.map((r) => r.p99),
  };
}

const progress = (msg: string): void => void process.stderr.write(`bench: ${msg}\n`);

async function waitForMetric(port: number, pattern: RegExp, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      if (pattern.test(text)) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`metric ${pattern} not seen on :${port} within ${timeoutMs} ms`);
}

interface TwoNodes {
  bOps: number;
  /** --slim arguments for an app on node A (the receiving end) and on node B (the sending end). */
  appA: string;
  appB: string;
}

/**
 * Two nodes in two groups, B dialling A. With `mtls`, a dev issuer serves every process its
 * SVID (two trust domains accepting each other, as in the seed) and every hop is mutual TLS.
 */
async function startNodes(group: ProcessGroup, mtls: boolean): Promise<TwoNodes> {
  const dir = scratchDir('slim-bench');
  const [a, b, bOps] = [await freePort(), await freePort(), await freePort()];
  const sock = (name: string): string => `${dir}/${name}.sock`;
  if (mtls) {
    const issuer = group.spawn('dev-issuer', 'slim-dev-issuer', [
      '--config',
      writeConfig(dir, 'issuer.yaml', {
        trust_domains: ['cluster-a.example', 'cluster-b.example'],
        workloads: [
          { socket: sock('node-a'), spiffe_id: 'spiffe://cluster-a.example/ns/slim/sa/slim' },
          { socket: sock('node-b'), spiffe_id: 'spiffe://cluster-b.example/ns/slim/sa/slim' },
          { socket: sock('app-a'), spiffe_id: 'spiffe://cluster-a.example/ns/bench/sa/receiver' },
          { socket: sock('app-b'), spiffe_id: 'spiffe://cluster-b.example/ns/bench/sa/sender' },
        ],
      }),
    ]);
    await issuer.waitForLine(/"msg":"dev issuer ready"/);
  }
  const tlsOf = (name: string, other: string): Record<string, unknown> | undefined => (mtls ? spireTls(sock(name), [other]) : undefined);
  const scheme = mtls ? 'https' : 'http';
  const cfgA = writeConfig(
    dir,
    'a.yaml',
    localNodeConfig({ nodeId: 'bench-a', group: 'cluster-a.example', port: a, logLevel: 'warn', serverTls: tlsOf('node-a', 'cluster-b.example') }),
  );
  const cfgB = writeConfig(
    dir,
    'b.yaml',
    localNodeConfig({
      nodeId: 'bench-b',
      group: 'cluster-b.example',
      port: b,
      opsPort: bOps,
      dial: [`${scheme}://127.0.0.1:${a}`],
      logLevel: 'warn',
      serverTls: tlsOf('node-b', 'cluster-a.example'),
      clientTls: tlsOf('node-b', 'cluster-a.example'),
    }),
  );
  group.spawn('node-a', 'slim-node', ['--config', cfgA]);
  group.spawn('node-b', 'slim-node', ['--config', cfgB]);
  await waitForMetric(bOps, /slim_links\{kind="remote_group"[^}]*\} 1/);
  const app = (port: number, name: string): string =>
    mtls ? JSON.stringify({ endpoint: `https://127.0.0.1:${port}`, tls: spireTls(sock(name)) }) : `http://127.0.0.1:${port}`;
  return { bOps, appA: app(a, 'app-a'), appB: app(b, 'app-b') };
}

async function slimThroughput(size: number, mtls: boolean): Promise<Throughput> {
  const group = new ProcessGroup();
  try {
    const { appA, appB, bOps } = await startNodes(group, mtls);
    const recv = group.spawn('slim-recv', 'bench-worker', ['slim-recv', appA, String(COUNT)]);
    await recv.waitForJson(['ready']);
    // The receiver's interest reaches B over the node link; start once B can route.
    await waitForMetric(bOps, /slim_subscriptions\{[^}]*\} 1/);
    group.spawn('slim-send', 'bench-worker', ['slim-send', appB, String(COUNT), String(size)]);
    const r = await recv.waitForJson<{ rate: number }>(['rate'], 120_000);
    return { rate: r.rate, lost: 0 }; // the receiver reports only once every message arrived
  } finally {
    await group.stopAll();
  }
}

async function slimLatency(size: number, mtls: boolean): Promise<Latency> {
  const group = new ProcessGroup();
  try {
    const { appA, appB, bOps } = await startNodes(group, mtls);
    const echo = group.spawn('slim-echo', 'bench-worker', ['slim-echo', appA]);
    await echo.waitForJson(['ready']);
    await waitForMetric(bOps, /slim_subscriptions\{[^}]*\} 1/);
    const rtt = group.spawn('slim-rtt', 'bench-worker', ['slim-rtt', appB, String(RATE), String(SECONDS), String(size)]);
    const r = await rtt.waitForJson<{ p50: number; p99: number; sent: number; received: number }>(['p99'], SECONDS * 1000 + 30_000);
    return { p50: r.p50, p99: r.p99, lost: r.sent - r.received };
  } finally {
    await group.stopAll();
  }
}

let tlsEnv: Record<string, string> | undefined;

/**
 * One certificate (EC P-256, as SPIRE issues; `localhost` for nats-server's hostname checks)
 * and its CA, for the raw TLS chain and the NATS paths.
 */
async function benchTlsFiles(): Promise<Record<string, string>> {
  if (!tlsEnv) {
    const dir = scratchDir('slim-bench-tls');
    const ca = await mintCa({ trustDomain: 'bench.example' });
    const svid = await mintSvid(ca, { uris: ['spiffe://bench.example/bench'], dnsNames: ['localhost'] });
    writeFileSync(`${dir}/cert.pem`, svid.certPem);
    writeFileSync(`${dir}/key.pem`, svid.keyPem);
    writeFileSync(`${dir}/ca.pem`, ca.cert.toString('pem'));
    tlsEnv = { BENCH_TLS_CERT: `${dir}/cert.pem`, BENCH_TLS_KEY: `${dir}/key.pem`, BENCH_TLS_CA: `${dir}/ca.pem` };
  }
  return tlsEnv;
}

function natsServerBinary(): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(':').concat(['/usr/sbin', '/usr/local/bin'])) {
    if (dir && existsSync(`${dir}/nats-server`)) return `${dir}/nats-server`;
  }
  return undefined;
}

/**
 * Two nats-servers, each its own "cluster", joined by a gateway (NATS's way to link clusters),
 * optionally with mutual TLS for clients and for the gateway. Returns their client URLs.
 */
async function startNats(group: ProcessGroup, tls: boolean): Promise<{ a: string; b: string; env?: Record<string, string> }> {
  if (!NATS_SERVER) throw new Error('nats-server is not installed (apt-get install nats-server)');
  const dir = scratchDir('slim-bench-nats');
  const [pa, pb, ga, gb] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const env = tls ? await benchTlsFiles() : undefined;
  const tlsBlock = env
    ? `tls { cert_file: "${env['BENCH_TLS_CERT']}", key_file: "${env['BENCH_TLS_KEY']}", ca_file: "${env['BENCH_TLS_CA']}", verify: true }`
    : '';
  const conf = (name: string, port: number, gw: number, other: string, otherGw: number): string =>
    [
      `server_name: nats-${name}`,
      `listen: "127.0.0.1:${port}"`,
      'max_payload: 4MB',
      tlsBlock,
      'gateway {',
      `  name: ${name}`,
      `  listen: "127.0.0.1:${gw}"`,
      `  gateways: [ { name: ${other}, url: "nats://localhost:${otherGw}" } ]`,
      `  ${tlsBlock}`,
      '}',
    ].join('\n');
  writeFileSync(`${dir}/a.conf`, conf('cluster-a', pa, ga, 'cluster-b', gb));
  writeFileSync(`${dir}/b.conf`, conf('cluster-b', pb, gb, 'cluster-a', ga));
  const a = group.spawnCommand('nats-a', NATS_SERVER, ['-c', `${dir}/a.conf`]);
  const b = group.spawnCommand('nats-b', NATS_SERVER, ['-c', `${dir}/b.conf`]);
  for (const p of [a, b]) await p.waitForLine(/Server is ready/);
  // Each side has an outbound gateway connection once the other accepted it.
  for (const p of [a, b]) await p.waitForLine(/Outbound gateway connection to "cluster-[ab]".*registered/);
  const url = (port: number): string => `${tls ? 'tls' : 'nats'}://localhost:${port}`;
  return { a: url(pa), b: url(pb), ...(env ? { env } : {}) };
}

async function natsThroughput(size: number, tls: boolean): Promise<Throughput> {
  const group = new ProcessGroup();
  try {
    const { a, b, env } = await startNats(group, tls);
    const recv = group.spawn('nats-recv', 'bench-worker', ['nats-recv', a, String(COUNT)], { env });
    await recv.waitForJson(['ready']);
    group.spawn('nats-send', 'bench-worker', ['nats-send', b, String(COUNT), String(size)], { env });
    const r = await recv.waitForJson<{ rate: number; lost: number }>(['rate'], 180_000);
    return { rate: r.rate, lost: r.lost };
  } finally {
    await group.stopAll();
  }
}

async function natsLatency(size: number, tls: boolean): Promise<Latency> {
  const group = new ProcessGroup();
  try {
    const { a, b, env } = await startNats(group, tls);
    const echo = group.spawn('nats-echo', 'bench-worker', ['nats-echo', a], { env });
    await echo.waitForJson(['ready']);
    const rtt = group.spawn('nats-rtt', 'bench-worker', ['nats-rtt', b, String(RATE), String(SECONDS), String(size)], { env });
    const r = await rtt.waitForJson<{ p50: number; p99: number; sent: number; received: number }>(['p99'], SECONDS * 1000 + 30_000);
    return { p50: r.p50, p99: r.p99, lost: r.sent - r.received };
  } finally {
    await group.stopAll();
  }
}

/** sender -> relay1 -> relay2 -> sink, every hop its own process. */
async function rawChain(group: ProcessGroup, sinkMode: string[], sinkPort: number, env?: Record<string, string>): Promise<ManagedProcess> {
  const [r1, r2] = [await freePort(), await freePort()];
  const sink = group.spawn('raw-sink', 'bench-worker', sinkMode, { env });
  await sink.waitForJson(['ready']);
  const relay2 = group.spawn('raw-relay2', 'bench-worker', ['raw-relay', String(r2), `http://127.0.0.1:${sinkPort}`], { env });
  await relay2.waitForJson(['ready']);
  const relay1 = group.spawn('raw-relay1', 'bench-worker', ['raw-relay', String(r1), `http://127.0.0.1:${r2}`], { env });
  await relay1.waitForJson(['ready']);
  (sink as ManagedProcess & { entry?: number }).entry = r1;
  return sink;
}

async function rawThroughput(size: number, tls: boolean): Promise<Throughput> {
  const group = new ProcessGroup();
  try {
    const port = await freePort();
    const env = tls ? await benchTlsFiles() : undefined;
    const sink = await rawChain(group, ['raw-recv', String(port), String(COUNT)], port, env);
    const entry = (sink as ManagedProcess & { entry?: number }).entry!;
    group.spawn('raw-send', 'bench-worker', ['raw-send', `http://127.0.0.1:${entry}`, String(COUNT), String(size)], { env });
    const r = await sink.waitForJson<{ rate: number }>(['rate'], 120_000);
    return { rate: r.rate, lost: 0 };
  } finally {
    await group.stopAll();
  }
}

async function rawLatency(size: number, tls: boolean): Promise<Latency> {
  const group = new ProcessGroup();
  try {
    const port = await freePort();
    const env = tls ? await benchTlsFiles() : undefined;
    const sink = await rawChain(group, ['raw-echo', String(port)], port, env);
    const entry = (sink as ManagedProcess & { entry?: number }).entry!;
    const rtt = group.spawn('raw-rtt', 'bench-worker', ['raw-rtt', `http://127.0.0.1:${entry}`, String(RATE), String(SECONDS), String(size)], { env });
    const r = await rtt.waitForJson<{ p50: number; p99: number; sent: number; received: number }>(['p99'], SECONDS * 1000 + 30_000);
    return { p50: r.p50, p99: r.p99, lost: r.sent - r.received };
  } finally {
    await group.stopAll();
  }
}

const fmtRate = (r: number): string => `${Math.round(r).toLocaleString('en-US')}`;
const fmtMs = (ms: number): string => `${ms.toFixed(2)} ms`;

const LABELS: Record<PathName, string> = {
  slim: 'slim, plaintext: sender → node B → node A → receiver',
  'slim-mtls': 'slim, SPIFFE mTLS on every hop (same path)',
  raw: 'raw node:http2 relay chain (same shape, plaintext)',
  nats: 'NATS: sender → nats-server B → gateway → nats-server A → receiver, plaintext',
  'nats-tls': 'NATS, mutual TLS for clients and the gateway (same path)',
  'raw-tls': 'raw node:http2 relay chain, mutual TLS on every hop',
};

async function main(): Promise<void> {
  const rows: (Row & { key: PathName })[] = [];
  const order: PathName[] = (['slim', 'slim-mtls', 'nats', 'nats-tls', 'raw', 'raw-tls'] as const).filter((p) => PATHS.has(p));
  if (!NATS_SERVER) progress('nats-server not found: the NATS paths are skipped (apt-get install nats-server)');
  const throughput = (p: PathName, size: number): Promise<Throughput> =>
    p.startsWith('raw') ? rawThroughput(size, p === 'raw-tls') : p.startsWith('nats') ? natsThroughput(size, p === 'nats-tls') : slimThroughput(size, p === 'slim-mtls');
  const latency = (p: PathName, size: number): Promise<Latency> =>
    p.startsWith('raw') ? rawLatency(size, p === 'raw-tls') : p.startsWith('nats') ? natsLatency(size, p === 'nats-tls') : slimLatency(size, p === 'slim-mtls');
  for (const size of SIZES) {
    const rate = new Map<PathName, Throughput>();
    for (const p of order) {
      if (!wants('throughput', p)) continue;
      progress(`${size} B: ${p} throughput (${COUNT.toLocaleString('en-US')} messages)`);
      rate.set(p, await throughput(p, size));
    }
    const runs = new Map<PathName, Latency[]>(order.map((p) => [p, []]));
    for (let i = 1; i <= REPEAT && order.some((p) => wants('latency', p)); i++) {
      progress(`${size} B: RTT at ${RATE} req/s for ${SECONDS} s, run ${i}/${REPEAT}`);
      for (const p of order) if (wants('latency', p)) runs.get(p)!.push(await latency(p, size));
    }
    for (const p of order) {
      const r = runs.get(p)!;
      const t = rate.get(p);
      rows.push({ key: p, size, path: LABELS[p], rate: t?.rate ?? NaN, sendLost: t?.lost ?? 0, ...combine(r.length ? r : [NONE]) });
    }
  }
  const range = (r: Row): string => `${fmtMs(Math.min(...r.p99s))}–${fmtMs(Math.max(...r.p99s))}`;
  const find = (s: number, p: PathName): Row | undefined => rows.find((r) => r.size === s && r.key === p);
  const ratio = (s: number, p: PathName, q: PathName): string => {
    const [x, y] = [find(s, p), find(s, q)];
    return x && y ? `${(x.rate / y.rate).toFixed(2)} | ${fmtMs(x.p50 - y.p50)} | ${fmtMs(x.p99 - y.p99)}` : 'n/a | n/a | n/a';
  };
  const lines = [
    `| payload | path | throughput (msgs/s) | lost of ${COUNT.toLocaleString('en-US')} | RTT p50 @${RATE}/s | RTT p99 @${RATE}/s (median of ${REPEAT}) | p99 range | replies lost |`,
    '|---|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.size} B | ${r.path} | ${fmtRate(r.rate)} | ${r.sendLost.toLocaleString('en-US')} | ${fmtMs(r.p50)} | ${fmtMs(r.p99)} | ${range(r)} | ${r.lost} |`),
    '',
    '| payload | comparison | throughput ratio | Δ RTT p50 | Δ RTT p99 |',
    '|---|---|---:|---:|---:|',
    ...SIZES.flatMap((s) => [
      `| ${s} B | slim plaintext vs NATS plaintext | ${ratio(s, 'slim', 'nats')} |`,
      `| ${s} B | slim mTLS vs NATS mTLS | ${ratio(s, 'slim-mtls', 'nats-tls')} |`,
      `| ${s} B | slim plaintext vs raw | ${ratio(s, 'slim', 'raw')} |`,
      `| ${s} B | slim mTLS vs raw mTLS | ${ratio(s, 'slim-mtls', 'raw-tls')} |`,
      `| ${s} B | slim: mTLS vs plaintext (what TLS costs us) | ${ratio(s, 'slim-mtls', 'slim')} |`,
      `| ${s} B | raw: TLS vs plaintext (what TLS costs Node) | ${ratio(s, 'raw-tls', 'raw')} |`,
    ]),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
