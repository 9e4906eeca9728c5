#!/usr/bin/env node
// slim-receiver (Alice): subscribes as --local and replies to every message it receives: plain
// publishes with a publish back, messages on a session (MLS or not) on that session.
import { Command } from 'commander';
import { onShutdownSignal, runProgram } from '../common/cli.js';
import { ErrorCode, formatName } from '../proto/dataplane.js';
import type { ReceivedMessage } from './received-message.js';
import { SlimApp, type DeliveryFailure } from './slim-app.js';
import { PointToPointSession } from './session/point-to-point.js';

const opts = new Command()
  .name('slim-receiver')
  .description('Sample receiver (Alice): subscribes to its name and replies to each message')
  .requiredOption('--local <name>', 'this app\'s name, org/namespace/service')
  .requiredOption('--slim <endpoint>', 'SLIM node: URL (http://host:46357) or JSON {"endpoint": ..., "tls": {...}}')
  .option('--instance <id>', 'instance id (default: derived from the identity, else random)')
  .option('--reply <text>', 'reply payload; "{message}" is replaced by the received text', '{message} from {name}')
  .option('--count <n>', 'exit 0 after replying to this many messages (default: run until stopped)', (v) => Number.parseInt(v, 10))
  .option('--route-wait <ms>', 'how long to retry a reply while the sender has no route yet', (v) => Number.parseInt(v, 10), 15000)
  .option('--enable-mls', 'accept only sessions encrypted end to end with MLS', false)
  .parse()
  .opts<{ local: string; slim: string; instance?: string; reply: string; count?: number; routeWait: number; enableMls: boolean }>();

await runProgram('slim-receiver', async () => {
  const app = await SlimApp.connect({ name: opts.local, slim: opts.slim, instance: opts.instance, sessions: { requireMls: opts.enableMls } });
  const me = formatName(app.name);
  process.stdout.write(`${me}: connected to ${app.endpoint.url}, waiting for messages\n`);
  app.on('disconnected', (why: string) => process.stdout.write(`${me}: connection lost (${why}); reconnecting\n`));
  app.on('connected', () => process.stdout.write(`${me}: connected again\n`));
  onShutdownSignal(async () => app.close());
  // A sender's first message can arrive before the route back to it exists: the controller
  // installs its routes when it subscribes, which may be a moment after it sent. Replies the
  // node reports as unroutable are sent again until --route-wait runs out.
  const unsent = new Map<number, { to: ReceivedMessage; text: string; since: number }>();
  const sendReply = (to: ReceivedMessage, text: string, since: number): void => {
    const id = app.reply(to, text);
    unsent.set(id, { to, text, since });
    // The node answers an unroutable publish at once; an entry still here later was delivered.
    setTimeout(() => unsent.delete(id), 5000).unref();
  };
  app.on('deliveryError', (failure: DeliveryFailure) => {
    const r = unsent.get(failure.messageId);
    unsent.delete(failure.messageId);
    if (!r || failure.code !== ErrorCode.NoRoute || Date.now() - r.since > opts.routeWait) {
      process.stdout.write(`${me}: a reply was not delivered: ${failure.message}\n`);
      return;
    }
    setTimeout(() => sendReply(r.to, r.text, r.since), 200);
  });
  let replied = 0;
  const counted = async (): Promise<void> => {
    replied++;
    if (opts.count !== undefined && replied >= opts.count) {
      await app.drained();
      await new Promise((r) => setTimeout(r, 100));
      app.close();
    }
  };
  app.sessions.on('session', (session) => {
    const peer = session instanceof PointToPointSession && session.peer ? formatName(session.peer) : '?';
    const kind = session.mls ? 'MLS session' : 'session';
    process.stdout.write(`${me}: new ${kind} ${session.id} from ${peer}${session.mls ? `, MLS epoch ${session.epoch}` : ''}\n`);
    session.on('closed', (why: string) => process.stdout.write(`${me}: ${kind} ${session.id} ended (${why})\n`));
    session.onMessage((msg) => {
      const text = msg.payload.toString('utf8');
      process.stdout.write(`${me}: received "${text}" from ${formatName(msg.source)} (identity ${msg.identity}) on ${kind} ${session.id}\n`);
      const reply = opts.reply.replaceAll('{message}', text).replaceAll('{name}', opts.local);
      // Acknowledged (or given up on) before counting, so --count exits only after the reply is out.
      session.send(reply).then(
        () => counted(),
        (err: Error) => process.stdout.write(`${me}: a reply on ${kind} ${session.id} was not delivered: ${err.message}\n`),
      );
    });
  });
  for await (const msg of app.messages()) {
    const text = msg.payload.toString('utf8');
    const from = msg.source ? formatName(msg.source) : '?';
    process.stdout.write(`${me}: received "${text}" from ${from}${msg.identity ? ` (identity ${msg.identity})` : ''}\n`);
    if (!msg.source) continue;
    const reply = opts.reply.replaceAll('{message}', text).replaceAll('{name}', opts.local);
    try {
      sendReply(msg, reply, Date.now());
    } catch (err) {
      process.stdout.write(`${me}: cannot reply to ${from}: ${(err as Error).message}\n`);
      continue;
    }
    await counted();
  }
});
