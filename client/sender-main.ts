#!/usr/bin/env node
// slim-sender (Bob): sends --iterations messages to --remote and waits for each reply, either
// as plain request/reply publishes or, with --enable-mls, on a point-to-point session encrypted
// end to end with MLS (as the seed's Bob does). Exits 0 only when every message got its reply.
import { Command } from 'commander';
import { runProgram } from '../common/cli.js';
import { ErrorCode, formatName } from '../proto/dataplane.js';
import { DeliveryFailure, SlimApp } from './slim-app.js';
import type { PointToPointSession } from './session/point-to-point.js';
import type { SessionMessage } from './session/session.js';

const int = (v: string): number => Number.parseInt(v, 10);
const opts = new Command()
  .name('slim-sender')
  .description('Sample sender (Bob): sends messages to a remote name and waits for each reply')
  .requiredOption('--local <name>', 'this app\'s name, org/namespace/service')
  .requiredOption('--remote <name>', 'destination name, org/namespace/service[/instance]')
  .requiredOption('--slim <endpoint>', 'SLIM node: URL (http://host:46357) or JSON {"endpoint": ..., "tls": {...}}')
  .option('--message <text>', 'payload of each message', 'hello')
  .option('--iterations <n>', 'number of messages', int, 10)
  .option('--interval <ms>', 'pause between messages', int, 0)
  .option('--timeout <ms>', 'how long to wait for each reply', int, 5000)
  .option('--route-wait <ms>', 'how long to retry while the destination has no route yet', int, 15000)
  .option('--instance <id>', 'instance id (default: derived from the identity, else random)')
  .option('--enable-mls', 'open an MLS-encrypted point-to-point session and send on it', false)
  .option('--session', 'use a point-to-point session without MLS (reliable, in order)', false)
  .parse()
  .opts<{
    local: string;
    remote: string;
    slim: string;
    message: string;
    iterations: number;
    interval: number;
    timeout: number;
    routeWait: number;
    instance?: string;
    enableMls: boolean;
    session: boolean;
  }>();

await runProgram('slim-sender', async () => {
  const app = await SlimApp.connect({ name: opts.local, slim: opts.slim, instance: opts.instance, requestTimeoutMs: opts.timeout });
  const me = formatName(app.name);
  process.stdout.write(`${me}: connected to ${app.endpoint.url}, sending ${opts.iterations} message(s) to ${opts.remote}\n`);
  if (opts.enableMls || opts.session) {
    await overSession(app, me);
    return;
  }
  let ok = 0;
  const routeDeadline = Date.now() + opts.routeWait;
  for (let i = 1; i <= opts.iterations; i++) {
    const text = opts.message;
    try {
      const started = process.hrtime.bigint();
      const reply = await requestWithRouteWait(app, text, routeDeadline);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const from = reply.source ? formatName(reply.source) : '?';
      process.stdout.write(`${me}: ${i}/${opts.iterations} sent "${text}", reply "${reply.payload.toString('utf8')}" from ${from}${reply.identity ? ` (identity ${reply.identity})` : ''} in ${ms.toFixed(2)} ms\n`);
      ok++;
    } catch (err) {
      process.stdout.write(`${me}: ${i}/${opts.iterations} sent "${text}", no reply: ${(err as Error).message}\n`);
    }
    if (opts.interval > 0 && i < opts.iterations) await new Promise((r) => setTimeout(r, opts.interval));
  }
  app.close();
  process.stdout.write(`${me}: ${ok}/${opts.iterations} replies received\n`);
  if (ok !== opts.iterations) process.exitCode = 1;
});

/** The seed's Bob: one point-to-point session (MLS with --enable-mls), each message answered on it. */
async function overSession(app: SlimApp, me: string): Promise<void> {
  const kind = opts.enableMls ? 'MLS session' : 'session';
  let session: PointToPointSession;
  try {
    session = await app.sessions.openPointToPoint(opts.remote, { mls: opts.enableMls, timeoutMs: opts.routeWait });
  } catch (err) {
    process.stdout.write(`${me}: cannot open the ${kind} with ${opts.remote}: ${(err as Error).message}\n`);
    app.close();
    process.exitCode = 1;
    return;
  }
  const peer = session.peer ? formatName(session.peer) : opts.remote;
  process.stdout.write(`${me}: opened ${kind} ${session.id} with ${peer}${session.remoteIdentity ? ` (identity ${session.remoteIdentity})` : ''}${opts.enableMls ? `, MLS epoch ${session.epoch}` : ''}\n`);
  const nextReply = replyReader(session.messages());
  let ok = 0;
  for (let i = 1; i <= opts.iterations; i++) {
    const text = opts.message;
    const started = process.hrtime.bigint();
    try {
      await session.send(text);
      const reply = await nextReply(opts.timeout);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      process.stdout.write(`${me}: ${i}/${opts.iterations} sent "${text}", reply "${reply.payload.toString('utf8')}" from ${formatName(reply.source)} (identity ${reply.identity}) in ${ms.toFixed(2)} ms\n`);
      ok++;
    } catch (err) {
      process.stdout.write(`${me}: ${i}/${opts.iterations} sent "${text}", no reply: ${(err as Error).message}\n`);
    }
    if (opts.interval > 0 && i < opts.iterations) await new Promise((r) => setTimeout(r, opts.interval));
  }
  await session.close();
  app.close();
  process.stdout.write(`${me}: ${ok}/${opts.iterations} replies received\n`);
  if (ok !== opts.iterations) process.exitCode = 1;
}

/**
 * Reads the next message with a timeout. A read that timed out stays pending: the late reply it
 * gets is the next one taken, not lost.
 */
function replyReader(it: AsyncIterator<SessionMessage>): (ms: number) => Promise<SessionMessage> {
  let pending: Promise<IteratorResult<SessionMessage>> | undefined;
  return async (ms) => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no reply within ${ms} ms`)), ms);
    });
    try {
      const r = await Promise.race([(pending ??= it.next()), timeout]);
      pending = undefined;
      if (r.done) throw new Error('the session closed');
      return r.value;
    } finally {
      clearTimeout(timer);
    }
  };
}

/** A fresh route may still be on its way (the receiver just subscribed): retry "no route" until the deadline. */
async function requestWithRouteWait(app: SlimApp, text: string, deadline: number) {
  let announced = false;
  while (true) {
    try {
      return await app.request(opts.remote, text, { timeoutMs: opts.timeout });
    } catch (err) {
      if (!(err instanceof DeliveryFailure) || err.code !== ErrorCode.NoRoute || Date.now() > deadline) throw err;
      if (!announced) {
        process.stdout.write(`${formatName(app.name)}: no route to ${opts.remote} yet; waiting\n`);
        announced = true;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
