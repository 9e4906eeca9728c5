#!/usr/bin/env node
// slim-receiver (Alice): subscribes as --local and replies to every message it receives.
import { Command } from 'commander';
import { onShutdownSignal, runProgram } from '../common/cli.js';
import { formatName } from '../proto/dataplane.js';
import { SlimApp } from './slim-app.js';

const opts = new Command()
  .name('slim-receiver')
  .description('Sample receiver (Alice): subscribes to its name and replies to each message')
  .requiredOption('--local <name>', 'this app\'s name, org/namespace/service')
  .requiredOption('--slim <endpoint>', 'SLIM node: URL (http://host:46357) or JSON {"endpoint": ..., "tls": {...}}')
  .option('--instance <id>', 'instance id (default: derived from the identity, else random)')
  .option('--reply <text>', 'reply payload; "{message}" is replaced by the received text', '{message} from {name}')
  .option('--count <n>', 'exit 0 after replying to this many messages (default: run until stopped)', (v) => Number.parseInt(v, 10))
  .parse()
  .opts<{ local: string; slim: string; instance?: string; reply: string; count?: number }>();

await runProgram('slim-receiver', async () => {
  const app = await SlimApp.connect({ name: opts.local, slim: opts.slim, instance: opts.instance });
  const me = formatName(app.name);
  process.stdout.write(`${me}: connected to ${app.endpoint.url}, waiting for messages\n`);
  app.on('disconnected', (why: string) => process.stdout.write(`${me}: connection lost (${why}); reconnecting\n`));
  app.on('connected', () => process.stdout.write(`${me}: connected again\n`));
  onShutdownSignal(async () => app.close());
  let replied = 0;
  for await (const msg of app.messages()) {
    const text = msg.payload.toString('utf8');
    const from = msg.source ? formatName(msg.source) : '?';
    process.stdout.write(`${me}: received "${text}" from ${from}${msg.identity ? ` (identity ${msg.identity})` : ''}\n`);
    if (!msg.source) continue;
    const reply = opts.reply.replaceAll('{message}', text).replaceAll('{name}', opts.local);
    try {
      app.reply(msg, reply);
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
