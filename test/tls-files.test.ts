// File-based TLS on every link: mTLS between apps and nodes and between nodes, the identity an
// app's certificate proves stamped on its messages, and refusals of peers that prove nothing.

import { X509Certificate } from 'node:crypto';
import { readFileSync, renameSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { SlimApp, defaultInstanceId, type ReceivedMessage } from '../client/slim-app.js';
import { ProcessGroup, freePort } from '../harness/processes.js';
import { scratchDir, writeConfig } from '../harness/node-config.js';
import { parseNodeConfig } from '../node/config.js';
import { SlimNode } from '../node/node.js';
import { LinkKind, parseName } from '../proto/dataplane.js';
import { DEFAULT_LIMITS } from '../transport/channel.js';
import { SessionPool } from '../transport/session-pool.js';
import { makeCa, makeLeaf, type TestCa, type TestLeaf } from './support/certs.js';

let group: ProcessGroup | undefined;
const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await group?.stopAll();
  group = undefined;
});

function tlsBlock(leaf: TestLeaf, ca: TestCa): Record<string, unknown> {
  return { source: { type: 'file', cert: leaf.cert, key: leaf.key }, ca_source: { type: 'file', path: ca.cert } };
}

function nodeYaml(id: string, port: number, leaf: TestLeaf, ca: TestCa, dial: string[] = []): Record<string, unknown> {
  return {
    tracing: { log_level: 'info' },
    observability: { endpoint: '' },
    services: {
      'slim/0': {
        node_id: id,
        group_name: 'cluster-a.example',
        dataplane: {
          servers: [{ endpoint: `127.0.0.1:${port}`, tls: tlsBlock(leaf, ca) }],
          clients: dial.map((endpoint) => ({ endpoint, tls: tlsBlock(leaf, ca) })),
          // Each node here has its own SPIFFE ID (spiffe://cluster-a.example/slim/node-a, ...).
          node_spiffe_paths: ['/slim/*'],
        },
      },
    },
  };
}

describe('file TLS', () => {
  it('runs alice and bob over mTLS on both nodes and the node link, with identities stamped', async () => {
    const dir = scratchDir('slim-tls');
    const ca = makeCa(dir, 'cluster');
    const [nodeA, nodeB] = [makeLeaf(ca, 'node-a', 'spiffe://cluster-a.example/slim/node-a'), makeLeaf(ca, 'node-b', 'spiffe://cluster-a.example/slim/node-b')];
    const alice = makeLeaf(ca, 'alice', 'spiffe://cluster-a.example/ns/default/sa/alice');
    const bob = makeLeaf(ca, 'bob', 'spiffe://cluster-a.example/ns/default/sa/bob');
    const [pa, pb] = [await freePort(), await freePort()];
    group = new ProcessGroup();
    const a = group.spawn('node-a', 'slim-node', ['--config', writeConfig(dir, 'a.yaml', nodeYaml('node-a', pa, nodeA, ca))]);
    await a.waitForLine(/slim-node started/);
    const b = group.spawn('node-b', 'slim-node', ['--config', writeConfig(dir, 'b.yaml', nodeYaml('node-b', pb, nodeB, ca, [`https://localhost:${pa}`]))]);
    // The node link proves node-b's identity to node-a.
    await a.waitForLine((l) => l.includes('"msg":"link up"') && l.includes('spiffe://cluster-a.example/slim/node-b'));

    const slimArg = (port: number, leaf: TestLeaf): string => JSON.stringify({ endpoint: `https://localhost:${port}`, tls: tlsBlock(leaf, ca) });
    const receiver = group.spawn('alice', 'slim-receiver', ['--local', 'org/ns/alice', '--slim', slimArg(pa, alice)]);
    await receiver.waitForLine(/waiting for messages/);
    // The instance id comes from the certificate's SPIFFE ID: stable across restarts.
    expect(receiver.output).toContain(`org/ns/alice/${defaultInstanceId(alice.spiffeId)}`);
    const sender = group.spawn('bob', 'slim-sender', ['--local', 'org/ns/bob', '--remote', 'org/ns/alice', '--slim', slimArg(pb, bob), '--iterations', '10']);
    const { code } = await sender.exited;
    expect(sender.output).toContain('10/10 replies received');
    expect(code).toBe(0);
    expect(receiver.lines.filter((l) => l.includes(`(identity ${bob.spiffeId})`))).toHaveLength(10);
    expect(sender.lines.filter((l) => l.includes(`(identity ${alice.spiffeId})`))).toHaveLength(10);
    void b;
  });

  it('refuses an app that presents no certificate to an mTLS node, and keeps serving others', async () => {
    const dir = scratchDir('slim-tls');
    const ca = makeCa(dir, 'cluster');
    const nodeLeaf = makeLeaf(ca, 'node', 'spiffe://cluster-a.example/slim/node');
    const good = makeLeaf(ca, 'good', 'spiffe://cluster-a.example/ns/default/sa/good');
    const port = await freePort();
    const node = new SlimNode(parseNodeConfig(JSON.stringify(nodeYaml('n1', port, nodeLeaf, ca))), pino({ level: 'silent' }));
    await node.start();
    cleanups.push(() => node.stop());

    const anonymous = SlimApp.connect({
      name: 'org/ns/anon',
      slim: JSON.stringify({ endpoint: `https://localhost:${port}`, tls: { ca_source: { type: 'file', path: ca.cert } } }),
      connectTimeoutMs: 1500,
    });
    // The node says why in its GOAWAY, so the app's error names the cause, not "stream error".
    await expect(anonymous).rejects.toThrow(/cannot connect to SLIM node .* within 1500 ms: .*refused this connection's certificate: the peer presented no certificate/);
    expect(node.stats.tlsRefusals.get('inbound/no_certificate') ?? 0).toBeGreaterThan(0);

    const slim = JSON.stringify({ endpoint: `https://localhost:${port}`, tls: tlsBlock(good, ca) });
    const echo = await SlimApp.connect({ name: 'org/ns/echo', slim });
    cleanups.push(() => echo.close());
    echo.onMessage((m) => echo.reply(m, m.payload));
    const client = await SlimApp.connect({ name: 'org/ns/client', slim });
    cleanups.push(() => client.close());
    const reply = await client.request('org/ns/echo', 'still here');
    expect(reply.payload.toString()).toBe('still here');
    expect(reply.identity).toBe(good.spiffeId);
  });

  it('refuses a node certificate signed by a CA the server does not trust', async () => {
    const dir = scratchDir('slim-tls');
    const ca = makeCa(dir, 'cluster');
    const other = makeCa(dir, 'other');
    const nodeLeaf = makeLeaf(ca, 'node', 'spiffe://cluster-a.example/slim/node');
    const stranger = makeLeaf(other, 'stranger', 'spiffe://cluster-a.example/ns/default/sa/stranger');
    const port = await freePort();
    const node = new SlimNode(parseNodeConfig(JSON.stringify(nodeYaml('n1', port, nodeLeaf, ca))), pino({ level: 'silent' }));
    await node.start();
    cleanups.push(() => node.stop());
    const attempt = SlimApp.connect({
      name: 'org/ns/stranger',
      // It trusts the node's CA, but its own certificate comes from another CA.
      slim: JSON.stringify({ endpoint: `https://localhost:${port}`, tls: { source: { type: 'file', cert: stranger.cert, key: stranger.key }, ca_source: { type: 'file', path: ca.cert } } }),
      connectTimeoutMs: 1500,
    });
    await expect(attempt).rejects.toThrow(/cannot connect/);
    expect(node.links.size).toBe(0);
  });
  it('keeps retrying, without crashing, when its certificate cannot be read during a reconnect', async () => {
    const dir = scratchDir('slim-tls');
    const ca = makeCa(dir, 'cluster');
    const nodeLeaf = makeLeaf(ca, 'node', 'spiffe://cluster-a.example/slim/node');
    const appLeaf = makeLeaf(ca, 'app', 'spiffe://cluster-a.example/ns/default/sa/app');
    const port = await freePort();
    const cfg = parseNodeConfig(JSON.stringify(nodeYaml('n1', port, nodeLeaf, ca)));
    let node = new SlimNode(cfg, pino({ level: 'silent' }));
    await node.start();
    const app = await SlimApp.connect({ name: 'org/ns/app', slim: JSON.stringify({ endpoint: `https://localhost:${port}`, tls: tlsBlock(appLeaf, ca) }) });
    cleanups.push(() => app.close());
    const moved = `${appLeaf.cert}.away`;
    renameSync(appLeaf.cert, moved); // e.g. a certificate being rotated
    await node.stop();
    await new Promise((r) => setTimeout(r, 800)); // several failed redials happen here
    expect(app.isReady).toBe(false);
    renameSync(moved, appLeaf.cert);
    node = new SlimNode(cfg, pino({ level: 'silent' }));
    await node.start();
    cleanups.push(() => node.stop());
    await app.ready(10_000);
    expect(app.isReady).toBe(true);
  });
});

describe('certificate files rewritten', () => {
  it('are picked up by new handshakes while established links carry on', async () => {
    const dir = scratchDir('slim-tls');
    const ca = makeCa(dir, 'cluster');
    const first = makeLeaf(ca, 'node', 'spiffe://cluster-a.example/slim/node');
    const appLeaf = makeLeaf(ca, 'app', 'spiffe://cluster-a.example/ns/default/sa/app');
    const port = await freePort();
    const node = new SlimNode(parseNodeConfig(JSON.stringify(nodeYaml('n1', port, first, ca))), pino({ level: 'silent' }));
    await node.start();
    cleanups.push(() => node.stop());
    const slim = JSON.stringify({ endpoint: `https://localhost:${port}`, tls: tlsBlock(appLeaf, ca) });
    const echo = await SlimApp.connect({ name: 'org/ns/echo', slim });
    cleanups.push(() => echo.close());
    echo.onMessage((m) => echo.reply(m, m.payload));
    const servedSerial = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const s = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(ca.cert), servername: 'localhost', rejectUnauthorized: false }, () => {
          resolve(s.getPeerCertificate().serialNumber);
          s.destroy();
        });
        s.on('error', reject);
      });
    const before = await servedSerial();
    // Rotate the node's certificate the way a secret update does: new files swapped in.
    const second = makeLeaf(ca, 'node-2', 'spiffe://cluster-a.example/slim/node');
    renameSync(second.cert, first.cert);
    renameSync(second.key, first.key);
    const deadline = Date.now() + 5000;
    let after = before;
    while (after === before && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      after = await servedSerial();
    }
    expect(after).not.toBe(before);
    expect(after).toBe(new X509Certificate(readFileSync(first.cert)).serialNumber);
    // The app connected before the rotation still works, and so does a new one.
    const client = await SlimApp.connect({ name: 'org/ns/client', slim });
    cleanups.push(() => client.close());
    expect((await client.request('org/ns/echo', 'after rotation')).payload.toString()).toBe('after rotation');
    expect(echo.isReady).toBe(true);
  });
});

describe('stamped identity', () => {
  it('replaces an identity an app writes into its own publish with the one its connection proved', async () => {
    const port = await freePort();
    const cfg = parseNodeConfig(`services:\n  slim/0:\n    node_id: n1\n    dataplane:\n      servers:\n        - endpoint: "127.0.0.1:${port}"\n          tls: { insecure: true }\nobservability: { endpoint: "" }\n`);
    const node = new SlimNode(cfg, pino({ level: 'silent' }));
    await node.start();
    cleanups.push(() => node.stop());
    const alice = await SlimApp.connect({ name: 'org/ns/alice', slim: `http://127.0.0.1:${port}` });
    cleanups.push(() => alice.close());
    const got: ReceivedMessage[] = [];
    alice.onMessage((m) => got.push(m));

    // A hand-made client that claims to be someone it is not.
    const pool = new SessionPool();
    cleanups.push(() => pool.destroy());
    const forger = pool.open({ url: `http://127.0.0.1:${port}` }, DEFAULT_LIMITS, { onMessage: () => undefined, onClose: () => undefined });
    forger.send({ kind: 'link', link: { linkId: 'f', nodeId: '', group: '', kind: LinkKind.App, app: parseName('org/ns/forger/1'), protocolVersion: 1 } });
    for (const ttl of [8, 0]) {
      forger.send({
        kind: 'publish',
        publish: {
          header: { source: parseName('org/ns/forger/1'), destination: alice.name, identity: 'spiffe://cluster-a.example/ns/default/sa/admin', fanout: 0, ttl, messageId: 1 },
          payload: Buffer.from(`forged ttl ${ttl}`),
          contentType: '',
        },
      });
    }
    const deadline = Date.now() + 3000;
    while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(got.map((m) => m.payload.toString()).sort()).toEqual(['forged ttl 0', 'forged ttl 8']);
    // Plaintext proves no identity: the claim is erased, not passed on.
    for (const m of got) expect(m.identity).toBe('');
  });

});
