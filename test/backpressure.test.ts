// Backpressure end to end: a receiver that stops consuming must push back through its node to
// the sender, so the node's memory stays bounded and nothing is dropped, and once the receiver
// consumes again every message arrives, in order, and the sender can send again.
//
// node-a is a real slim-node process (connection_queue_limit 1MiB, so its hard drop limit is
// 4MiB); both apps are SlimApps in this process. The receiver buffers 200 messages before it
// pauses reading; the sender publishes 4 KiB messages only while canSend, otherwise it waits on
// drained().

import { setImmediate as yieldTurn } from 'node:timers/promises';
import { afterEach, expect, it } from 'vitest';
import { SlimApp, type ReceivedMessage } from '../client/slim-app.js';
import { ProcessGroup } from '../harness/processes.js';
import { eventually, metric, startNodes, type StartedNode } from './support/local-nodes.js';

const MiB = 1024 * 1024;
const QUEUE_LIMIT = 1 * MiB;
const MESSAGE_SIZE = 4 * 1024;
const SEND_MS = 3000;

let group: ProcessGroup | undefined;
const apps: SlimApp[] = [];

afterEach(async () => {
  for (const a of apps.splice(0)) a.close();
  await group?.stopAll();
  group = undefined;
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

async function rss(node: StartedNode): Promise<number> {
  const prefixed = await metric(node, 'slim_node_process_resident_memory_bytes');
  return prefixed > 0 ? prefixed : metric(node, 'process_resident_memory_bytes');
}

interface Sample {
  at: number;
  sent: number;
  queueBytes: number;
  pausedLinks: number;
  rss: number;
}

it('bounds node memory under a slow consumer, blocks the sender, drops nothing, then delivers everything in order', async () => {
  group = new ProcessGroup();
  const nodes = await startNodes(group, [{ id: 'node-a', extraDataplane: { connection_queue_limit: '1MiB' } }]);
  const a = nodes.get('node-a')!;
  const receiver = await SlimApp.connect({ name: 'org/ns/slow', slim: a.url, receiveBuffer: 200 });
  apps.push(receiver);
  const sender = await SlimApp.connect({ name: 'org/ns/fast', slim: a.url });
  apps.push(sender);
  const rssBefore = await rss(a);
  expect(rssBefore).toBeGreaterThan(0);

  // -- phase 1: the receiver never reads; the sender sends while it may for ~3 s -------------------
  let sent = 0;
  let blockedWaits = 0;
  let drainedWhileBlocked = 0;
  const samples: Sample[] = [];
  const started = Date.now();
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const [queueBytes, pausedLinks, r] = await Promise.all([metric(a, 'slim_queue_bytes'), metric(a, 'slim_links_paused'), rss(a)]);
      samples.push({ at: Date.now() - started, sent, queueBytes, pausedLinks, rss: r });
      await sleep(250);
    }
  })();

  const payload = (seq: number): Buffer => {
    const b = Buffer.alloc(MESSAGE_SIZE, 0x61);
    b.writeUInt32BE(seq, 0);
    return b;
  };
  const deadline = started + SEND_MS;
  while (Date.now() < deadline) {
    if (sender.canSend) {
      sender.publish('org/ns/slow', payload(sent));
      sent++;
      // Let the batch go out (and the sampler run) now and then.
      if (sent % 64 === 0) await yieldTurn();
      continue;
    }
    blockedWaits++;
    const left = Math.max(1, Math.min(250, deadline - Date.now()));
    const how = await Promise.race([sender.drained().then(() => 'drained' as const), sleep(left).then(() => 'timeout' as const)]);
    if (how === 'drained') drainedWhileBlocked++;
  }
  const canSendAtEnd = sender.canSend;
  sampling = false;
  await sampler;

  const sentBytes = sent * MESSAGE_SIZE;
  const maxQueue = Math.max(...samples.map((s) => s.queueBytes));
  const maxPaused = Math.max(...samples.map((s) => s.pausedLinks));
  const maxRss = Math.max(...samples.map((s) => s.rss));
  const dropped = await metric(a, 'slim_messages_dropped_total', { reason: 'queue_full' });
  // The numbers, for whoever reads the test output when this fails or regresses.
  console.log(
    JSON.stringify({
      sent,
      sentMB: +(sentBytes / 1e6).toFixed(1),
      blockedWaits,
      drainedWhileBlocked,
      canSendAtEnd,
      maxQueueBytes: maxQueue,
      maxPausedLinks: maxPaused,
      rssBeforeMB: +(rssBefore / 1e6).toFixed(1),
      rssMaxMB: +(maxRss / 1e6).toFixed(1),
      samples: samples.map((s) => `${s.at}ms sent=${s.sent} q=${s.queueBytes} paused=${s.pausedLinks}`),
    }),
  );

  // The sender was pushed back: a consuming receiver takes hundreds of MB in 3 s on loopback.
  expect(blockedWaits).toBeGreaterThan(0);
  expect(canSendAtEnd).toBe(false);
  expect(sentBytes).toBeLessThan(40e6);
  // ...and stayed blocked: over the last second nothing more could be sent.
  const lateSamples = samples.filter((s) => s.at >= SEND_MS - 1000);
  expect(lateSamples.length).toBeGreaterThan(0);
  expect(sent).toBe(lateSamples[0]!.sent);
  // node-a's memory stayed bounded and it paused reading from the sender instead of dropping.
  expect(samples.length).toBeGreaterThanOrEqual(5);
  for (const s of samples) expect(s.queueBytes, `slim_queue_bytes at ${s.at} ms`).toBeLessThan(4 * QUEUE_LIMIT);
  expect(maxPaused).toBeGreaterThanOrEqual(1);
  expect(await metric(a, 'slim_links_paused')).toBeGreaterThanOrEqual(1);
  expect(maxRss - rssBefore).toBeLessThan(150 * MiB);
  expect(dropped).toBe(0);

  // -- phase 2: the receiver consumes; everything arrives in order and the sender is released ----
  const it = receiver.messages();
  const next = async (): Promise<ReceivedMessage> => {
    const r = await withTimeout(it.next(), 5000, 'next message');
    if (r.done) throw new Error('receiver ended');
    return r.value;
  };
  let outOfOrder = 0;
  for (let i = 0; i < sent; i++) {
    const m = await next();
    if (m.payload.length !== MESSAGE_SIZE || m.payload.readUInt32BE(0) !== i) outOfOrder++;
  }
  expect(outOfOrder).toBe(0);

  await withTimeout(sender.drained(), 5000, 'sender drained');
  expect(sender.canSend).toBe(true);
  for (let i = 0; i < 10; i++) sender.publish('org/ns/slow', payload(sent + i));
  for (let i = 0; i < 10; i++) expect((await next()).payload.readUInt32BE(0)).toBe(sent + i);

  await eventually(async () => (await metric(a, 'slim_links_paused')) === 0, 5000, 'no link paused any more');
  expect(await metric(a, 'slim_messages_dropped_total')).toBe(0);
  expect(await metric(a, 'slim_messages_received_total', { type: 'publish' })).toBe(sent + 10);
});
