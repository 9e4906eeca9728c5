// What every SLIM-TS program does around its main work: print config errors as one readable
// block and exit non-zero, and stop gracefully on SIGTERM/SIGINT.

import { ConfigError } from './config-file.js';

export const EXIT_CONFIG = 2;
export const EXIT_RUNTIME = 1;

/** Runs `main`; a ConfigError (or any error at startup) becomes a message and an exit code. */
export async function runProgram(name: string, main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${name}: ${err.message.split('\n').join(`\n${name}: `)}\n`);
      process.exit(EXIT_CONFIG);
    }
    process.stderr.write(`${name}: ${(err as Error).message}\n`);
    process.exit(EXIT_RUNTIME);
  }
}

/** Calls `stop` once on SIGTERM or SIGINT; a second signal exits at once. */
export function onShutdownSignal(stop: (signal: string) => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string): void => {
    if (stopping) process.exit(EXIT_RUNTIME);
    stopping = true;
    stop(signal).then(
      () => process.exit(0),
      (err: Error) => {
        process.stderr.write(`shutdown failed: ${err.message}\n`);
        process.exit(EXIT_RUNTIME);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
