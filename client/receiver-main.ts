#!/usr/bin/env node
// slim-receiver (Alice): subscribes as --local and replies to every message it receives.
import { Command } from 'commander';
import { onShutdownSignal, runProgram } from '../common/cli.js';
import { ErrorCode, formatName } from '../proto/dataplane.js';
import type { ReceivedMessage } from './received-message.js';
import { SlimApp, type DeliveryFailure } from './slim-app.js';

const opts = new Command()
  .name('slim-receiver')
  .description('Sample receiver (Alice): subscribes to its name and replies to each message')
  .requiredOption('--local <name>', 'this app\'s name, org/namespace/service')
  .requiredOption('--slim <endpoint>', 'SLIM node: URL (http://host:46357) or JSON {"endpoint": ..., "tls": {...}}')
  .option('--instance <id>', 'instance id (default: derived from the identity, else random)')
  .option('--reply <text>', 'reply payload; "{message}" is replaced by the received text', '{message} from {name}')
  .option('--count <n>', 'exit 0 after replying to this many messages (default: run until stopped)', (v) => Number.parseInt(v, 10))
  .option('--route-wait <ms>', 'how long to retry a reply while the sender has no route yet', (v) => Number.parseInt(v, 10), 15000)
  .parse()
  .opts<{ local: string; slim: string; instance?: string; reply: string; count?: number; routeWait: number }>();

await runProgram('slim-receiver', async () => {
  const app = await SlimApp.connect({ name: opts.local, slim: opts.slim, instance: opts.instance });
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
  for await (const msg of app.messages()) {
    const text = msg.payload.toString('utf8');
    const from = msg.source ? formatName(msg.source) : '?';
    process.stdout.write(`${me}: received "${text}" from ${from}${msg.identity ? ` (identity ${msg.identity})` : ''}\n`);
    if (!msg.source) continue;
    const reply = opts.reply.replaceAll('{message}', text).replaceAll('{name}', opts.local);
    try {
      sendReply(msg, reply, Date.now());
      replied++;
    } catch (err) {
      process.stdout.write(`${me}: cannot reply to ${from}: ${(err as Error).message}\n`);
    }
    if (opts.count !== undefined && replied >= opts.count) {
      await app.drained();
      await new Promise((r) => setTimeout(r, 100));
      app.close();
    }
  }
});
