#!/usr/bin/env -S node --no-memory-reducer
// (Why the flag: V8's memory reducer runs a full mark-compact 8 s after start and whenever the
// allocation rate drops; on the 2-core bench box it paused both nodes of a path at once for
// 13-18 ms, the largest RTT outliers. A data plane with bounded queues gives up idle-time heap
// shrinking for latency. V8 reads the flag when the heap is set up, so it must be on the command
// line: the shebang carries it for `npx slim-node`, and the harness and image pass it too.)
// slim-node --config FILE
import { Command } from 'commander';
import { onShutdownSignal, runProgram } from '../common/cli.js';
import { ConfigError } from '../common/config-file.js';
import { createLogger } from '../common/logger.js';
import { ConnectionTls, TlsSetupError } from '../identity/connection-tls.js';
import { loadNodeConfig, type NodeConfig } from './config.js';
import { SlimNode } from './node.js';

const program = new Command()
  .name('slim-node')
  .description('SLIM-TS data-plane node')
  .requiredOption('-c, --config <file>', 'node configuration file (YAML)')
  .option('--check', 'validate the configuration and exit')
  .parse();

const opts = program.opts<{ config: string; check?: boolean }>();

await runProgram('slim-node', async () => {
  const cfg = loadNodeConfig(opts.config);
  if (opts.check) {
    try {
      await checkTlsMaterial(cfg);
    } catch (err) {
      if (err instanceof TlsSetupError) throw new ConfigError(`node config: ${err.message}`);
      throw err;
    }
    process.stdout.write(`node config ok: node ${cfg.nodeId} in group ${cfg.group}, ${cfg.servers.length} server(s), ${cfg.clients.length} client(s)\n`);
    return;
  }
  const log = createLogger({ component: 'slim-node', level: cfg.logLevel, base: { node_id: cfg.nodeId, group: cfg.group } });
  const node = new SlimNode(cfg, log);
  try {
    await node.start();
  } catch (err) {
    // TLS material problems are configuration problems: same exit code, same one-line style.
    if (err instanceof TlsSetupError) throw new ConfigError(`node config: ${err.message}`);
    throw err;
  }
  log.info({ servers: node.addresses.map((a) => `${a.host}:${a.port}`) }, 'slim-node started');
  onShutdownSignal(async (signal) => {
    log.info({ signal }, 'draining');
    await node.stop();
    log.info('stopped');
    log.flush();
  });
});

/** Reads every certificate, key and CA file and fetches every SVID the config names, as starting would. */
async function checkTlsMaterial(cfg: NodeConfig): Promise<void> {
  const at = `services.${cfg.serviceId}`;
  const made: ConnectionTls[] = [];
  try {
    for (const [i, s] of cfg.servers.entries()) {
      const t = await ConnectionTls.create(s.tls, `${at}.dataplane.servers[${i}].tls`);
      if (t) {
        made.push(t);
        t.serverOptions();
      }
    }
    for (const [i, c] of cfg.clients.entries()) {
      if (!c.url.startsWith('https:')) continue;
      const t = await ConnectionTls.create(c.tls, `${at}.dataplane.clients[${i}].tls`);
      if (t) made.push(t);
    }
    for (const [i, c] of cfg.controllerClients.entries()) {
      if (!c.url.startsWith('https:')) continue;
      const t = await ConnectionTls.create(c.tls, `${at}.controller.clients[${i}].tls`);
      if (t) made.push(t);
    }
  } finally {
    // Closing the last user of a Workload API stream closes the stream.
    for (const t of made) t.close();
  }
}
