// SPIFFE end to end: slim-node processes and apps get their identities from the dev issuer's
// Workload API (the same client code a SPIRE agent would serve), with the seed's three federated
// trust domains. Nodes of two trust domains link only when each lists the other in
// trust_domains; an app's identity arrives stamped; bad certificates are refused with a reason,
// a log line and a metric while the node keeps serving everyone else.

import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProcessGroup, freePort } from '../harness/processes.js';
import { localNodeConfig, scratchDir, spireTls, writeConfig } from '../harness/node-config.js';
import { SlimApp } from '../client/slim-app.js';
import { mintCa, mintSvid, type MintedCa, type MintedSvid } from '../identity/x509-mint.js';
import { x509 } from '../identity/x509.js';
import { eventually, metric, type StartedNode } from './support/local-nodes.js';
import { normalizeTls } from '../common/tls-config.js';
import { ConnectionTls } from '../identity/connection-tls.js';
import { LinkKind, PROTOCOL_VERSION } from '../proto/dataplane.js';
import { DEFAULT_LIMITS } from '../transport/channel.js';
import { Status, type StatusInfo } from '../transport/grpc-status.js';
import { SessionPool } from '../transport/session-pool.js';
import { startSpiffeEnv, type SpiffeEnv } from './support/spiffe-env.js';

const NODE_A = 'spiffe://cluster-a.example/ns/slim/sa/slim';
const NODE_B = 'spiffe://cluster-b.example/ns/slim/sa/slim';
const ALICE = 'spiffe://cluster-a.example/ns/default/sa/alice';
const BOB = 'spiffe://cluster-b.example/ns/default/sa/bob';

let env: SpiffeEnv;
const group = new ProcessGroup();
const nodes = new Map<string, StartedNode>();
const apps: SlimApp[] = [];

interface NodePlan {
  id: string;
  group: string;
  socket: string;
  /** trust_domains of the server's and the clients' ca_source. */
  serverTrusts: string[];
  clientTrusts?: string[];
  dial?: string[];
}

async function startNode(p: NodePlan): Promise<StartedNode> {
  const [port, opsPort] = [await freePort(), await freePort()];
  const dir = scratchDir('slim-id');
  const doc = localNodeConfig({
    nodeId: p.id,
    group: p.group,
    port,
    opsPort,
    dial: (p.dial ?? []).map((d) => `https://127.0.0.1:${nodes.get(d)!.port}`),
    logLevel: 'debug',
    serverTls: spireTls(env.socket[p.socket]!, p.serverTrusts),
    clientTls: spireTls(env.socket[p.socket]!, p.clientTrusts ?? []),
  });
  const proc = group.spawn(p.id, 'slim-node', ['--config', writeConfig(dir, `${p.id}.yaml`, doc)]);
  await proc.waitForLine(/"msg":"slim-node started"/);
  const n = { id: p.id, port, opsPort, url: `https://127.0.0.1:${port}`, process: proc };
  nodes.set(p.id, n);
  return n;
}

function slimFor(node: string, socket: string, trusts: string[] = []): string {
  return JSON.stringify({ endpoint: nodes.get(node)!.url, tls: spireTls(env.socket[socket]!, trusts) });
}

beforeAll(async () => {
  env = await startSpiffeEnv({
    'node-a': NODE_A,
    'node-a2': NODE_A,
    'node-b': NODE_B,
    'node-b2': NODE_B,
    alice: ALICE,
    bob: BOB,
    eve: 'spiffe://cluster-a.example/ns/default/sa/eve',
  });
  // a: accepts cluster-b. c: same domain, accepts only its own. b dials both and accepts
  // cluster-a. d (cluster-b) dials a but accepts only its own domain.
  await startNode({ id: 'a', group: 'cluster-a.example', socket: 'node-a', serverTrusts: ['cluster-b.example'] });
  await startNode({ id: 'c', group: 'cluster-a.example', socket: 'node-a2', serverTrusts: [] });
  await startNode({ id: 'b', group: 'cluster-b.example', socket: 'node-b', serverTrusts: [], clientTrusts: ['spiffe://cluster-a.example'], dial: ['a', 'c'] });
  await startNode({ id: 'd', group: 'cluster-b.example', socket: 'node-b2', serverTrusts: [], clientTrusts: [], dial: ['a'] });
}, 60_000);

afterAll(async () => {
  for (const app of apps) app.close();
  await group.stopAll();
  await env?.stop();
});

describe('SPIFFE mTLS between nodes of federated trust domains', () => {
  it('links two nodes only when each lists the other trust domain', async () => {
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((id) => nodes.get(id)!);
    // b ↔ a: both sides accept each other.
    await a!.process.waitForLine((l) => l.includes('"msg":"link up"') && l.includes('"link":"node b '));
    await b!.process.waitForLine((l) => l.includes('"msg":"link up"') && l.includes('"link":"node a '));
    // b → c: c accepts only cluster-a, so it refuses b, says why, counts it.
    const refusedAtC = await c!.process.waitForLine((l) => l.includes('refused peer') && l.includes(NODE_B));
    expect(JSON.parse(refusedAtC)).toMatchObject({ direction: 'inbound', reason: 'unauthorized', peer_id: NODE_B });
    expect(refusedAtC).toContain('is not in trust domain(s) cluster-a.example');
    await eventually(async () => (await metric(c!, 'slim_tls_refusals_total', { direction: 'inbound', reason: 'unauthorized' })) > 0);
    // ...and b learns the reason from c's GOAWAY.
    await b!.process.waitForLine((l) => l.includes('cannot link to peer node') && l.includes("refused this connection's certificate") && l.includes('is not in trust domain(s)'));
    // d → a: a would accept d, but d accepts only cluster-b and refuses a's certificate.
    const refusedAtD = await d!.process.waitForLine((l) => l.includes('refused peer') && l.includes(NODE_A));
    expect(JSON.parse(refusedAtD)).toMatchObject({ direction: 'outbound', reason: 'unauthorized', peer_id: NODE_A });
    await eventually(async () => (await metric(d!, 'slim_tls_refusals_total', { direction: 'outbound', reason: 'unauthorized' })) > 0);
    expect(c!.process.lines.some((l) => l.includes('"msg":"link up"'))).toBe(false);
  });

  it("stamps each app's proven SPIFFE ID on what it publishes, across the trust-domain boundary", async () => {
    const alice = await SlimApp.connect({ name: 'org/ns/alice', slim: slimFor('a', 'alice') });
    apps.push(alice);
    alice.onMessage((m) => alice.reply(m, `hi ${m.identity}`));
    // Bob's node accepts cluster-a; bob himself only needs his own domain (his node's).
    const bob = await SlimApp.connect({ name: 'org/ns/bob', slim: slimFor('b', 'bob') });
    apps.push(bob);
    // Alice's subscription reaches node b over the a–b link; retry until it has.
    let reply: Awaited<ReturnType<SlimApp['request']>> | undefined;
    await eventually(async () => {
      reply = await bob.request('org/ns/alice', 'hello', { timeoutMs: 1000 }).catch(() => undefined);
      return reply !== undefined;
    });
    expect(reply!.payload.toString()).toBe(`hi ${BOB}`);
    expect(reply!.identity).toBe(ALICE);
    // The instance id comes from the SVID, so a restarted workload keeps its name.
    expect(alice.name.instance).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe('node links need a node identity', () => {
  /** Negotiates with node a as a node; resolves with how node a ended the channel. */
  async function negotiateAsNode(socket: string, trusts: string[], group: string): Promise<StatusInfo> {
    const tls = (await ConnectionTls.create(normalizeTls(spireTls(env.socket[socket]!, trusts) as never), 'test'))!;
    const pool = new SessionPool();
    try {
      return await new Promise<StatusInfo>((resolve) => {
        const ch = pool.open({ url: nodes.get('a')!.url, tls: tls.clientOptions('127.0.0.1') }, DEFAULT_LIMITS, {
          onMessage: () => undefined,
          onClose: (status) => resolve(status),
        });
        ch.send({ kind: 'link', link: { linkId: 'x', nodeId: `posing-${socket}`, group, kind: LinkKind.PeerInGroup, protocolVersion: PROTOCOL_VERSION } });
      });
    } finally {
      pool.close();
      tls.close();
    }
  }

  it('refuses a workload of an accepted trust domain that negotiates as a node', async () => {
    // eve has a perfectly valid cluster-a SVID: good enough to be an app, not to relay stamps.
    const status = await negotiateAsNode('eve', [], 'cluster-a.example');
    expect(status.code).toBe(Status.PERMISSION_DENIED);
    expect(status.details).toMatch(/spiffe:\/\/cluster-a\.example\/ns\/default\/sa\/eve is not a node identity \(nodes run as \/ns\/slim\/sa\/slim\)/);
    await eventually(async () => (await metric(nodes.get('a')!, 'slim_link_refusals_total', { reason: 'not_a_node_identity' })) >= 1);
  });

  it("refuses a node whose claimed group is not its certificate's trust domain", async () => {
    const status = await negotiateAsNode('node-b2', ['cluster-a.example'], 'cluster-a.example');
    expect(status.code).toBe(Status.PERMISSION_DENIED);
    expect(status.details).toContain('claims group cluster-a.example but its identity spiffe://cluster-b.example/ns/slim/sa/slim is in trust domain cluster-b.example');
  });
});

describe('refused certificates', () => {
  let caA: MintedCa;
  let caB: MintedCa;

  beforeAll(() => {
    caA = env.issuer.authority.of('cluster-a.example').ca;
    caB = env.issuer.authority.of('cluster-b.example').ca;
  });

  /** Opens a channel to node a with this certificate; resolves with the GOAWAY reason. */
  function attempt(svid: MintedSvid): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = http2.connect(nodes.get('a')!.url, { cert: svid.certPem, key: svid.keyPem, rejectUnauthorized: false });
      const timer = setTimeout(() => reject(new Error('node a did not refuse')), 5000);
      s.on('goaway', (code, _last, data) => {
        clearTimeout(timer);
        resolve(`${code}: ${data?.toString() ?? ''}`);
        s.destroy();
      });
      s.on('error', () => undefined);
      const st = s.request({ ':method': 'POST', ':path': '/slim.dataplane.v1.DataPlaneService/OpenChannel', 'content-type': 'application/grpc' });
      st.on('error', () => undefined);
    });
  }

  const hour = 3600_000;
  const cases: [string, () => Promise<MintedSvid>, string, RegExp][] = [
    ['expired', () => mintSvid(caB, { uris: [BOB], notBefore: new Date(Date.now() - 2 * hour), notAfter: new Date(Date.now() - hour) }), 'expired', /expired/],
    ['not yet valid', () => mintSvid(caB, { uris: [BOB], notBefore: new Date(Date.now() + hour), notAfter: new Date(Date.now() + 2 * hour) }), 'not_yet_valid', /not valid before|not yet valid/],
    ['signed by another domain’s CA', () => mintSvid(caA, { uris: [BOB] }), 'untrusted_chain', /not signed by a CA of trust domain cluster-b\.example/],
    ['two URI SANs', () => mintSvid(caB, { uris: [BOB, 'spiffe://cluster-b.example/ns/default/sa/eve'] }), 'multiple_uri_sans', /URI SAN/],
    ['no URI SAN', () => mintSvid(caB, { uris: [], dnsNames: ['bob.example'] }), 'no_uri_san', /URI SAN/],
    ['a CA certificate as leaf', () => mintSvid(caB, { uris: [BOB], isCa: true, keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature }), 'leaf_is_ca', /CA/],
    ['a self-made CA', async () => mintSvid(await mintCa({ trustDomain: 'cluster-b.example' }), { uris: [BOB] }), 'untrusted_chain', /not signed by a CA/],
  ];

  for (const [what, mint, reason, message] of cases) {
    it(`refuses ${what} with reason ${reason}, and keeps serving`, async () => {
      const a = nodes.get('a')!;
      const before = await metric(a, 'slim_tls_refusals_total', { direction: 'inbound', reason });
      const goaway = await attempt(await mint());
      expect(goaway).toMatch(/^12: /); // INADEQUATE_SECURITY, with the reason as debug data
      expect(goaway).toMatch(message);
      const line = await a.process.waitForLine((l) => l.includes('refused peer') && l.includes(`"reason":"${reason}"`));
      expect(line).toMatch(message);
      expect(await metric(a, 'slim_tls_refusals_total', { direction: 'inbound', reason })).toBe(before + 1);
      // Everyone else is still served: bob reaches alice through node a.
      const bob = apps[1]!;
      const reply = await bob.request('org/ns/alice', `after ${what}`, { timeoutMs: 2000 });
      expect(reply.identity).toBe(ALICE);
    });
  }
});

describe('a node without its Workload API', () => {
  it('exits 2 naming the config key and the missing socket, before any port opens', { timeout: 30_000 }, async () => {
    const port = await freePort();
    const doc = localNodeConfig({ nodeId: 'lonely', group: 'cluster-a.example', port, serverTls: spireTls('/tmp/slim-no-such-dir/api.sock') });
    const proc = group.spawn('lonely', 'slim-node', ['--config', writeConfig(scratchDir('slim-id'), 'lonely.yaml', doc)]);
    const { code } = await proc.exited;
    expect(code).toBe(2);
    const out = proc.lines.join('\n');
    expect(out).toContain('services.slim/0.dataplane.servers[0].tls.source.socket_path');
    expect(out).toContain('unix:/tmp/slim-no-such-dir/api.sock');
    expect(out).toMatch(/no such socket/);
    expect(out).not.toContain('data-plane server listening');
  });
});
