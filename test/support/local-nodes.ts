// Real slim-node processes on loopback for integration tests.
import { ProcessGroup, freePort, type ManagedProcess } from '../../harness/processes.js';
import { localNodeConfig, scratchDir, writeConfig } from '../../harness/node-config.js';
import { startLinkTap, type LinkTap, type LinkTapOptions } from '../../harness/link-tap.js';

export interface StartedNode {
  id: string;
  port: number;
  opsPort: number;
  url: string;
  process: ManagedProcess;
}

export interface NodeSpec {
  id: string;
  group?: string;
  /** Ids of nodes (earlier in the list) this one dials. */
  dial?: string[];
  extraDataplane?: Record<string, unknown>;
}

export interface StartNodesOptions {
  /**
   * Asked once per configured link, just before node `from`'s config is written: the URL it
   * should dial instead of node `to`'s own `url` (a LinkTap's, say), or undefined to dial `to`
   * directly. The "link up" waits still work through a relay: they match on node ids, which
   * travel in the link negotiation.
   */
  via?: (link: { from: string; to: string; url: string }) => string | undefined | Promise<string | undefined>;
}

/** Starts nodes in order and waits until every configured link is up on both ends. */
export async function startNodes(group: ProcessGroup, specs: NodeSpec[], opts: StartNodesOptions = {}): Promise<Map<string, StartedNode>> {
  const dir = scratchDir('slim-test');
  const nodes = new Map<string, StartedNode>();
  for (const spec of specs) {
    const [port, opsPort] = [await freePort(), await freePort()];
    nodes.set(spec.id, { id: spec.id, port, opsPort, url: `http://127.0.0.1:${port}`, process: undefined as unknown as ManagedProcess });
  }
  for (const spec of specs) {
    const n = nodes.get(spec.id)!;
    const dial: string[] = [];
    for (const d of spec.dial ?? []) {
      const { url } = nodes.get(d)!;
      dial.push((await opts.via?.({ from: spec.id, to: d, url })) ?? url);
    }
    const file = writeConfig(
      dir,
      `${spec.id}.yaml`,
      localNodeConfig({ nodeId: spec.id, group: spec.group ?? 'cluster-a.example', port: n.port, opsPort: n.opsPort, dial, logLevel: 'debug', extraDataplane: spec.extraDataplane }),
    );
    n.process = group.spawn(spec.id, 'slim-node', ['--config', file]);
    await n.process.waitForLine(/"msg":"slim-node started"/);
  }
  for (const spec of specs) {
    for (const peer of spec.dial ?? []) {
      await nodes.get(spec.id)!.process.waitForLine((l) => l.includes('"msg":"link up"') && l.includes(`"link":"node ${peer} `));
      await nodes.get(peer)!.process.waitForLine((l) => l.includes('"msg":"link up"') && l.includes(`"link":"node ${spec.id} `));
    }
  }
  return nodes;
}

/** Reads one sample of a Prometheus metric (sum over label sets matching `labels`). */
export async function metric(node: StartedNode, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.opsPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** Polls until `fn` returns true or the timeout passes. */
export async function eventually(fn: () => Promise<boolean> | boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${what} not reached within ${timeoutMs} ms`);
}

/**
 * node-a, and node-b dialling it through a LinkTap (harness/link-tap.ts); the tap is pushed to
 * `taps` so the caller's cleanup closes it.
 */
export async function startTappedNodes(
  group: ProcessGroup,
  tapOpts: Omit<LinkTapOptions, 'upstream'>,
  taps: LinkTap[],
): Promise<{ a: StartedNode; b: StartedNode; tap: LinkTap }> {
  let tap: LinkTap | undefined;
  const nodes = await startNodes(group, [{ id: 'node-a' }, { id: 'node-b', dial: ['node-a'] }], {
    via: async ({ url }) => {
      tap = await startLinkTap({ upstream: url, ...tapOpts });
      taps.push(tap);
      return tap.url;
    },
  });
  return { a: nodes.get('node-a')!, b: nodes.get('node-b')!, tap: tap! };
}
