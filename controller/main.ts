#!/usr/bin/env node
// slim-controller --config FILE
import { Command } from 'commander';
import { onShutdownSignal, runProgram } from '../common/cli.js';
import { ConfigError } from '../common/config-file.js';
import { createLogger } from '../common/logger.js';
import { ConnectionTls, TlsSetupError } from '../identity/connection-tls.js';
import { loadControllerConfig } from './config.js';
import { SlimController } from './controller.js';

const opts = new Command()
  .name('slim-controller')
  .description('SLIM-TS controller: node registration, route planning, admin API')
  .requiredOption('-c, --config <file>', 'controller configuration file (YAML, the chart values\' config/spire shape)')
  .option('--check', 'validate the configuration (and fetch its SVID) and exit')
  .parse()
  .opts<{ config: string; check?: boolean }>();

await runProgram('slim-controller', async () => {
  const cfg = loadControllerConfig(opts.config);
  if (opts.check) {
    try {
      const t = await ConnectionTls.create(cfg.southbound.tls, cfg.southbound.key);
      t?.close();
    } catch (err) {
      if (err instanceof TlsSetupError) throw new ConfigError(`controller config: ${err.message}`);
      throw err;
    }
    process.stdout.write(`controller config ok: southbound ${cfg.southbound.host}:${cfg.southbound.port}${cfg.northbound ? `, admin API ${cfg.northbound.host}:${cfg.northbound.port}` : ''}\n`);
    return;
  }
  const log = createLogger({ component: 'slim-controller', level: cfg.logLevel });
  const controller = new SlimController(cfg, log);
  try {
    await controller.start();
  } catch (err) {
    if (err instanceof TlsSetupError) throw new ConfigError(`controller config: ${err.message}`);
    throw err;
  }
  log.info({ southbound: controller.ports.southbound, northbound: controller.ports.northbound || undefined }, 'slim-controller started');
  onShutdownSignal(async (signal) => {
    log.info({ signal }, 'stopping');
    await controller.stop();
    log.info('stopped');
    log.flush();
  });
});
