// What every slimctl command shares for printing and parsing: `-o table|json`, aligned tables
// and `key  value` blocks, compact times and spans, and the `--timeout` duration parser.

import { InvalidArgumentError, Option } from 'commander';
import { duration } from '../common/config-file.js';

export type OutputFormat = 'table' | 'json';

/** `-o table|json`, shared by every slimctl command that prints a result. */
export function outputOption(): Option {
  return new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table');
}

/** Columns padded to their widest cell; the last column is not padded, so lines carry no trailing blanks. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return `${[headers, ...rows].map(line).join('\n')}\n`;
}

/** `key  value` lines with the values aligned. */
export function formatFields(fields: readonly (readonly [string, string])[]): string {
  const width = Math.max(...fields.map(([k]) => k.length));
  return fields.map(([k, v]) => `${k.padEnd(width)}  ${v}`.trimEnd()).join('\n') + '\n';
}

/** ISO 8601 without the milliseconds: certificate times have none, and the column stays narrow. */
export function isoTime(d: Date): string {
  return d.toISOString().replace(/\.000Z$/, 'Z');
}

/** The two largest units of a span, e.g. `59m 58s`, `29d 23h`; `expired` when negative. */
export function formatSpan(ms: number): string {
  if (ms < 0) return 'expired';
  const units: [string, number][] = [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ];
  const parts: [number, string][] = [];
  let rest = ms;
  for (const [name, size] of units) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n > 0 || parts.length > 0) parts.push([n, name]);
    if (parts.length === 2) break;
  }
  const shown = parts.filter(([n], i) => i === 0 || n > 0).map(([n, name]) => `${n}${name}`);
  return shown.length === 0 ? '0s' : shown.join(' ');
}

/** `--timeout` values: a positive duration such as 500ms, 10s or 1m, in milliseconds. */
export function parseTimeout(value: string): number {
  const parsed = duration.safeParse(value);
  if (!parsed.success || parsed.data <= 0) throw new InvalidArgumentError('Expected a positive duration such as 500ms, 10s or 1m.');
  return parsed.data;
}
