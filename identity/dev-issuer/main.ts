#!/usr/bin/env node
// slim-dev-issuer --config FILE: the development SPIFFE Workload API server (see dev-issuer.ts).
import { Command } from 'commander';
import { onShutdownSignal, runProgram } from '../../common/cli.js';
import { createLogger } from '../../common/logger.js';
import { loadDevIssuerConfig } from './config.js';
import { DevIssuer } from './dev-issuer.js';

const program = new Command()
  .name('slim-dev-issuer')
  .description('development SPIFFE Workload API server: one socket per workload, federated trust domains, short-lived rotating SVIDs')
  .requiredOption('-c, --config <file>', 'dev issuer configuration file (YAML)')
  .option('--check', 'validate the configuration and exit')
  .parse();

const opts = program.opts<{ config: string; check?: boolean }>();

await runProgram('slim-dev-issuer', async () => {
  const cfg = loadDevIssuerConfig(opts.config);
  if (opts.check) {
    process.stdout.write(`dev issuer config ok: ${cfg.trustDomains.length} trust domain(s), ${cfg.workloads.length} workload(s)\n`);
    return;
  }
  const log = createLogger({ component: 'slim-dev-issuer', level: cfg.logLevel });
  const issuer = await DevIssuer.start(cfg, log);
  onShutdownSignal(async (signal) => {
    log.info({ signal }, 'stopping');
    await issuer.stop();
    log.flush();
  });
});
