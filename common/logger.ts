// Structured JSON logs (pino) carrying the program's identity on every line.
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  component: string;
  level?: string;
  base?: Record<string, unknown>;
  /** File descriptor or path; defaults to stdout. */
  destination?: number | string;
}

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export function normalizeLevel(level: string | undefined): LevelWithSilent {
  const l = (level ?? process.env.SLIM_LOG_LEVEL ?? 'info').toLowerCase();
  return (LEVELS.has(l) ? l : 'info') as LevelWithSilent;
}

export function createLogger(opts: LoggerOptions): Logger {
  return pino(
    {
      level: normalizeLevel(opts.level),
      base: { component: opts.component, pid: process.pid, ...opts.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: opts.destination ?? 1, sync: false }),
  );
}
