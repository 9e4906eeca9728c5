// npm run bench: the two-hop data-plane path (sender -> node B -> node A -> receiver, each its
// own process, plaintext) next to a raw node:http2 relay chain of the same shape (sender ->
// relay -> relay -> receiver: gRPC framing, no parsing, no routing), in one invocation, so the
// ratio is what to read: absolute numbers move with the machine.
//
// Options: --sizes 100,1024  --count N (messages per throughput run)  --rate 1000  --seconds 5
//          --repeat 3 (latency runs per path, alternating slim and raw; the median p99 is reported,
//          with the range: on a shared 2-core VM one run's tail can move by milliseconds)
//          --only throughput|latency   --paths slim,raw

import { ProcessGroup, freePort, type ManagedProcess } from '../harness/processes.js';
import { localNodeConfig, scratchDir, writeConfig } from '../harness/node-config.js';

interface Latency {
  p50: number;
  p99: number;
  lost: number;
}

interface Row extends Latency {
  size: number;
  path: string;
  rate: number;
  p99s: number[];
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const SIZES = arg('sizes', '100,1024').split(',').map(Number);
// Enough messages that JIT warm-up is a small part of the run (~5 s per path at 100 B).
const COUNT = Number(arg('count', '3000000'));
const RATE = Number(arg('rate', '1000'));
const SECONDS = Number(arg('seconds', '5'));
const REPEAT = Number(arg('repeat', '3'));
const ONLY = arg('only', 'both');
const PATHS = new Set(arg('paths', 'slim,raw').split(','));
const wants = (what: 'throughput' | 'latency', path: 'slim' | 'raw'): boolean => (ONLY === 'both' || ONLY === what) && PATHS.has(path);
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

/** Two nodes in two groups, B dialling A; returns their data ports and B's metrics port. */
async function startNodes(group: ProcessGroup): Promise<{ a: number; b: number; bOps: number }> {
  const dir = scratchDir('slim-bench');
  const [a, b, bOps] = [await freePort(), await freePort(), await freePort()];
  const cfgA = writeConfig(dir, 'a.yaml', localNodeConfig({ nodeId: 'bench-a', group: 'cluster-a.example', port: a, logLevel: 'warn' }));
  const cfgB = writeConfig(
    dir,
    'b.yaml',
    localNodeConfig({ nodeId: 'bench-b', group: 'cluster-b.example', port: b, opsPort: bOps, dial: [`http://127.0.0.1:${a}`], logLevel: 'warn' }),
  );
  group.spawn('node-a', 'slim-node', ['--config', cfgA]);
  group.spawn('node-b', 'slim-node', ['--config', cfgB]);
  await waitForMetric(bOps, /slim_links\{kind="remote_group"[^}]*\} 1/);
  return { a, b, bOps };
}

async function slimThroughput(size: number): Promise<number> {
  const group = new ProcessGroup();
  try {
    const { a, b, bOps } = await startNodes(group);
    const recv = group.spawn('slim-recv', 'bench-worker', ['slim-recv', `http://127.0.0.1:${a}`, String(COUNT)]);
    await recv.waitForJson(['ready']);
    // The receiver's interest reaches B over the node link; start once B can route.
    await waitForMetric(bOps, /slim_subscriptions\{[^}]*\} 1/);
    group.spawn('slim-send', 'bench-worker', ['slim-send', `http://127.0.0.1:${b}`, String(COUNT), String(size)]);
    const r = await recv.waitForJson<{ rate: number }>(['rate'], 120_000);
    return r.rate;
  } finally {
    await group.stopAll();
  }
}

async function slimLatency(size: number): Promise<Latency> {
  const group = new ProcessGroup();
  try {
    const { a, b, bOps } = await startNodes(group);
    const echo = group.spawn('slim-echo', 'bench-worker', ['slim-echo', `http://127.0.0.1:${a}`]);
    await echo.waitForJson(['ready']);
    await waitForMetric(bOps, /slim_subscriptions\{[^}]*\} 1/);
    const rtt = group.spawn('slim-rtt', 'bench-worker', ['slim-rtt', `http://127.0.0.1:${b}`, String(RATE), String(SECONDS), String(size)]);
    const r = await rtt.waitForJson<{ p50: number; p99: number; sent: number; received: number }>(['p99'], SECONDS * 1000 + 30_000);
    return { p50: r.p50, p99: r.p99, lost: r.sent - r.received };
  } finally {
    await group.stopAll();
  }
}

/** sender -> relay1 -> relay2 -> sink, every hop its own process. */
async function rawChain(group: ProcessGroup, sinkMode: string[], sinkPort: number): Promise<ManagedProcess> {
  const [r1, r2] = [await freePort(), await freePort()];
  const sink = group.spawn('raw-sink', 'bench-worker', sinkMode);
  await sink.waitForJson(['ready']);
  const relay2 = group.spawn('raw-relay2', 'bench-worker', ['raw-relay', String(r2), `http://127.0.0.1:${sinkPort}`]);
  await relay2.waitForJson(['ready']);
  const relay1 = group.spawn('raw-relay1', 'bench-worker', ['raw-relay', String(r1), `http://127.0.0.1:${r2}`]);
  await relay1.waitForJson(['ready']);
  (sink as ManagedProcess & { entry?: number }).entry = r1;
  return sink;
}

async function rawThroughput(size: number): Promise<number> {
  const group = new ProcessGroup();
  try {
    const port = await freePort();
    const sink = await rawChain(group, ['raw-recv', String(port), String(COUNT)], port);
    const entry = (sink as ManagedProcess & { entry?: number }).entry!;
    group.spawn('raw-send', 'bench-worker', ['raw-send', `http://127.0.0.1:${entry}`, String(COUNT), String(size)]);
    const r = await sink.waitForJson<{ rate: number }>(['rate'], 120_000);
    return r.rate;
  } finally {
    await group.stopAll();
  }
}

async function rawLatency(size: number): Promise<Latency> {
  const group = new ProcessGroup();
  try {
    const port = await freePort();
    const sink = await rawChain(group, ['raw-echo', String(port)], port);
    const entry = (sink as ManagedProcess & { entry?: number }).entry!;
    const rtt = group.spawn('raw-rtt', 'bench-worker', ['raw-rtt', `http://127.0.0.1:${entry}`, String(RATE), String(SECONDS), String(size)]);
    const r = await rtt.waitForJson<{ p50: number; p99: number; sent: number; received: number }>(['p99'], SECONDS * 1000 + 30_000);
    return { p50: r.p50, p99: r.p99, lost: r.sent - r.received };
  } finally {
    await group.stopAll();
  }
}

const fmtRate = (r: number): string => `${Math.round(r).toLocaleString('en-US')}`;
const fmtMs = (ms: number): string => `${ms.toFixed(2)} ms`;

async function main(): Promise<void> {
  const rows: Row[] = [];
  for (const size of SIZES) {
    let slimRate = NaN;
    let rawRate = NaN;
    if (wants('throughput', 'slim')) {
      progress(`${size} B: slim two-hop throughput (${COUNT.toLocaleString('en-US')} messages)`);
      slimRate = await slimThroughput(size);
    }
    if (wants('throughput', 'raw')) {
      progress(`${size} B: raw http2 relay throughput`);
      rawRate = await rawThroughput(size);
    }
    const slimRuns: Latency[] = [];
    const rawRuns: Latency[] = [];
    for (let i = 1; i <= REPEAT && (wants('latency', 'slim') || wants('latency', 'raw')); i++) {
      progress(`${size} B: RTT at ${RATE} req/s for ${SECONDS} s, run ${i}/${REPEAT}`);
      if (wants('latency', 'slim')) slimRuns.push(await slimLatency(size));
      if (wants('latency', 'raw')) rawRuns.push(await rawLatency(size));
    }
    const slimLat = combine(slimRuns.length ? slimRuns : [NONE]);
    const rawLat = combine(rawRuns.length ? rawRuns : [NONE]);
    rows.push({ size, path: 'slim: sender → node B → node A → receiver', rate: slimRate, ...slimLat });
    rows.push({ size, path: 'raw node:http2 relay chain (same shape)', rate: rawRate, ...rawLat });
  }
  const range = (r: Row): string => `${fmtMs(Math.min(...r.p99s))}–${fmtMs(Math.max(...r.p99s))}`;
  const lines = [
    `| payload | path | throughput (msgs/s) | RTT p50 @${RATE}/s | RTT p99 @${RATE}/s (median of ${REPEAT}) | p99 range | replies lost |`,
    '|---|---|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.size} B | ${r.path} | ${fmtRate(r.rate)} | ${fmtMs(r.p50)} | ${fmtMs(r.p99)} | ${range(r)} | ${r.lost} |`),
    '',
    '| payload | slim / raw throughput | slim − raw RTT p50 | slim − raw RTT p99 |',
    '|---|---:|---:|---:|',
    ...SIZES.map((s) => {
      const slim = rows.find((r) => r.size === s && r.path.startsWith('slim'))!;
      const raw = rows.find((r) => r.size === s && r.path.startsWith('raw'))!;
      return `| ${s} B | ${(slim.rate / raw.rate).toFixed(2)} | ${fmtMs(slim.p50 - raw.p50)} | ${fmtMs(slim.p99 - raw.p99)} |`;
    }),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
