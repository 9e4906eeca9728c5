#!/usr/bin/env node
// slimctl: the operator's command line for a SLIM-TS deployment. One root command with a group per
// concern (svid; nodes, routes, connections, subscriptions, topology from the controller's admin
// API), all sharing one exit-status contract:
// 0 the answer is good, 1 the answer is bad (an invalid SVID, an unreachable agent), 2 the command
// line is (unknown flag, unreadable file, unparsable value).
import { Command } from 'commander';
import { EXIT_CONFIG, runProgram } from '../common/cli.js';
import { addAdminCommands } from './admin-commands.js';
import { addSvidCommands } from './svid-commands.js';

const program = new Command()
  .name('slimctl')
  .description('Inspect and troubleshoot a SLIM-TS deployment')
  // Same one-line `slimctl: ...` shape as the errors runProgram prints.
  .configureOutput({ outputError: (str, write) => write(`slimctl: ${str.replace(/^error: /, '')}`) })
  // Commander exits 1 on usage errors, which here means "the answer is bad"; scripts must be able
  // to tell a typo from an invalid SVID. Set before adding groups: subcommands inherit it.
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT_CONFIG));

addSvidCommands(program);
addAdminCommands(program);

await runProgram('slimctl', async () => {
  await program.parseAsync();
});
