// npm run bench:sessions — what a session costs on top of plain publishes, between two apps on
// two slim-node processes (node-b dials node-a, plaintext; apps in this process). In one run,
// so the figures compare (the box's absolute speed drifts):
//   publish      app.publish, one-way, no acknowledgement (the data plane alone)
//   best effort  a session without reliability (session frame, no acks)
//   reliable     acknowledgements, retransmission timers, in-order delivery
//   reliable+MLS the same, every payload an MLS PrivateMessage (the seed's Bob)
// and the time to open a session (handshake; with MLS: group, key package, welcome).
//
// Options: --messages 5000 --size 100 --window 256

import { ProcessGroup, freePort } from '../harness/processes.js';
import { localNodeConfig, scratchDir, writeConfig } from '../harness/node-config.js';
import { SlimApp } from '../client/slim-app.js';
import type { PointToPointSession } from '../client/session/point-to-point.js';
import { arg } from './args.js';

const MESSAGES = Number(arg('messages', '5000'));
const SIZE = Number(arg('size', '100'));
const WINDOW = Number(arg('window', '256'));
const progress = (msg: string): void => void process.stderr.write(`bench: ${msg}\n`);

async function main(): Promise<void> {
  const group = new ProcessGroup();
  const dir = scratchDir('slim-bench-sessions');
  try {
    const [pa, oa, pb, ob] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const na = group.spawn('node-a', 'slim-node', ['--config', writeConfig(dir, 'a.yaml', localNodeConfig({ nodeId: 'node-a', group: 'g', port: pa, opsPort: oa, logLevel: 'info' }))]);
    const nb = group.spawn('node-b', 'slim-node', [
      '--config',
      writeConfig(dir, 'b.yaml', localNodeConfig({ nodeId: 'node-b', group: 'g', port: pb, opsPort: ob, dial: [`http://127.0.0.1:${pa}`], logLevel: 'info' })),
    ]);
    await Promise.all([na.waitForLine(/slim-node started/), nb.waitForLine(/slim-node started/)]);
    const alice = await SlimApp.connect({ name: 'org/ns/alice', slim: `http://127.0.0.1:${pa}` });
    const bob = await SlimApp.connect({ name: 'org/ns/bob', slim: `http://127.0.0.1:${pb}` });
    await new Promise((r) => setTimeout(r, 500)); // subscriptions cross the link
    const payload = Buffer.alloc(SIZE, 0x61);
    const rows: [string, string, string][] = [];

    // publish: one way, counted at alice.
    {
      let got = 0;
      let done: () => void = () => undefined;
      const finished = new Promise<void>((r) => (done = r));
      alice.onMessage(() => {
        if (++got === MESSAGES) done();
      });
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < MESSAGES; i++) {
        bob.publish('org/ns/alice', payload);
        if (!bob.canSend) await bob.drained();
      }
      await finished;
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      rows.push(['publish', `${Math.round(MESSAGES / s).toLocaleString('en')}/s`, '-']);
    }

    let inbox: PointToPointSession | undefined;
    alice.sessions.on('session', (s) => (inbox = s as PointToPointSession));
    for (const [label, mls, reliable] of [
      ['best effort', false, false],
      ['reliable', false, true],
      ['reliable+MLS', true, true],
    ] as const) {
      progress(label);
      const t0 = process.hrtime.bigint();
      const s = await bob.sessions.openPointToPoint('org/ns/alice', { mls, reliability: { reliable, window: WINDOW } });
      const openMs = Number(process.hrtime.bigint() - t0) / 1e6;
      while (!inbox || inbox.id !== s.id) await new Promise((r) => setTimeout(r, 5));
      const rx = inbox;
      let got = 0;
      let done: () => void = () => undefined;
      const finished = new Promise<void>((r) => (done = r));
      rx.onMessage(() => {
        if (++got === MESSAGES) done();
      });
      const t1 = process.hrtime.bigint();
      // Keep the window full: each send resolves on its acknowledgement (at once for best effort).
      const inFlight = new Set<Promise<void>>();
      for (let i = 0; i < MESSAGES; i++) {
        const p = s.send(payload).finally(() => inFlight.delete(p));
        inFlight.add(p);
        if (inFlight.size >= WINDOW) await Promise.race(inFlight);
      }
      await Promise.all(inFlight);
      await finished;
      const secs = Number(process.hrtime.bigint() - t1) / 1e9;
      rows.push([label, `${Math.round(MESSAGES / secs).toLocaleString('en')}/s`, `${openMs.toFixed(1)} ms`]);
      await s.close();
    }
    alice.close();
    bob.close();
    const w = [14, 14];
    process.stdout.write(`\nsessions: ${MESSAGES} messages of ${SIZE} B, bob (node-b) → alice (node-a), window ${WINDOW}\n`);
    process.stdout.write(`${'mode'.padEnd(w[0]!)}${'throughput'.padEnd(w[1]!)}open\n`);
    for (const [m, t, o] of rows) process.stdout.write(`${m.padEnd(w[0]!)}${t.padEnd(w[1]!)}${o}\n`);
  } finally {
    await group.stopAll();
  }
}

await main();
