// Loads a YAML config file the way every SLIM-TS program does: parse, substitute
// ${env:VAR} / ${env:VAR:-default} / ${file:PATH} in string values, validate with a zod schema,
// and turn every problem into one line naming the key ("node config: services.slim/0.node_id
// is missing") instead of a stack trace.

import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type PathPart = string | number | symbol;

/** services.slim/0.dataplane.servers[0].endpoint */
export function formatPath(path: readonly PathPart[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || '(top level)';
}

const REF = /\$\{(env|file):([^}]*)\}/g;

function substitute(value: string, path: PathPart[], baseDir: string, env: NodeJS.ProcessEnv, problems: string[]): string {
  return value.replace(REF, (whole, kind: string, arg: string) => {
    if (kind === 'env') {
      const sep = arg.indexOf(':-');
      const name = sep >= 0 ? arg.slice(0, sep) : arg;
      const fallback = sep >= 0 ? arg.slice(sep + 2) : undefined;
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      problems.push(`${formatPath(path)}: environment variable ${name} is not set`);
      return whole;
    }
    const file = arg.startsWith('/') ? arg : `${baseDir}/${arg}`;
    try {
      return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      problems.push(`${formatPath(path)}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      return whole;
    }
  });
}

function walk(doc: unknown, baseDir: string, env: NodeJS.ProcessEnv, path: PathPart[], problems: string[]): unknown {
  if (typeof doc === 'string') return substitute(doc, path, baseDir, env, problems);
  if (Array.isArray(doc)) return doc.map((v, i) => walk(v, baseDir, env, [...path, i], problems));
  if (doc && typeof doc === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(doc)) out[k] = walk(v, baseDir, env, [...path, k], problems);
    return out;
  }
  return doc;
}

/** Replaces ${...} references in every string of a parsed document; reports every unresolved one. */
export function substituteRefs(doc: unknown, baseDir: string, env: NodeJS.ProcessEnv = process.env): unknown {
  const problems: string[] = [];
  const out = walk(doc, baseDir, env, [], problems);
  if (problems.length > 0) throw new ConfigError(problems.join('\n'));
  return out;
}

/** One line per zod issue, naming the key. */
export function describeIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const where = formatPath(issue.path);
    if (issue.code === 'invalid_type' && issue.input === undefined) return `${where} is missing`;
    if (issue.code === 'unrecognized_keys') {
      const keys = issue.keys.map((k) => (where === '(top level)' ? k : `${where}.${k}`));
      return `${keys.join(', ')}: not a known key`;
    }
    return `${where}: ${issue.message}`;
  });
}

/** Validates a parsed document; throws ConfigError listing every problem. */
export function validateConfig<S extends z.ZodType>(schema: S, doc: unknown, what: string): z.output<S> {
  // reportInput lets a missing key ("is missing") be told from a value of the wrong type.
  const result = schema.safeParse(doc, { reportInput: true });
  if (result.success) return result.data;
  const lines = describeIssues(result.error);
  throw new ConfigError(lines.map((l) => `${what}: ${l}`).join('\n'));
}

/** Parses YAML text, substitutes references, validates. `what` prefixes messages ("node config"). */
export function parseConfigText<S extends z.ZodType>(
  schema: S,
  text: string,
  what: string,
  baseDir: string,
  env: NodeJS.ProcessEnv = process.env,
): z.output<S> {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    if (err instanceof YAMLParseError) {
      const line = err.linePos?.[0];
      throw new ConfigError(`${what}: invalid YAML${line ? ` at line ${line.line}, column ${line.col}` : ''}: ${err.message.split('\n')[0]}`);
    }
    throw err;
  }
  if (doc === null || doc === undefined) throw new ConfigError(`${what}: the file is empty`);
  try {
    doc = substituteRefs(doc, baseDir, env);
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(err.message.split('\n').map((l) => `${what}: ${l}`).join('\n'));
    throw err;
  }
  return validateConfig(schema, doc, what);
}

export function loadConfigFile<S extends z.ZodType>(schema: S, file: string, what: string, env: NodeJS.ProcessEnv = process.env): z.output<S> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${what}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const baseDir = file.includes('/') ? file.slice(0, file.lastIndexOf('/')) : '.';
  return parseConfigText(schema, text, what, baseDir, env);
}

// -- value types shared by the programs' schemas ------------------------------------------------

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "10s", "500ms", "1m", "2h" or a number of milliseconds, as milliseconds. */
export const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') {
    if (v >= 0) return v;
    ctx.addIssue({ code: 'custom', message: `${v} is negative; a duration is e.g. 500ms, 10s, 1m` });
    return z.NEVER;
  }
  const m = DURATION.exec(v.trim());
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (use e.g. 500ms, 10s, 1m)` });
    return z.NEVER;
  }
  return Number(m[1]) * UNIT_MS[m[2]!]!;
});

const SIZE = /^(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/i;
const UNIT_BYTES: Record<string, number> = { b: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, kb: 1000, mb: 1000 ** 2, gb: 1000 ** 3 };

/** 4194304, "4MiB", "512KiB" as bytes. */
export const byteSize = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const m = typeof v === 'number' ? null : SIZE.exec(v.trim());
  const bytes = typeof v === 'number' ? v : m ? Number(m[1]) * UNIT_BYTES[(m[2] ?? 'b').toLowerCase()]! : NaN;
  if (!Number.isInteger(bytes) || bytes <= 0) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a positive size (use e.g. 4MiB, 512KiB, 1048576)` });
    return z.NEVER;
  }
  return bytes;
});

export interface HostPort {
  host: string;
  port: number;
}

/** "host:port", with an IPv6 host in brackets: the inverse of splitHostPort. */
export function joinHostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** Splits "host:port" / "[v6]:port"; undefined when malformed. */
export function splitHostPort(s: string): HostPort | undefined {
  const m = /^(\[[^\]]+\]|[^:/\s]+):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

function hostPortOf(v: string, ctx: z.RefinementCtx, allowEmpty: boolean): HostPort | '' {
  if (allowEmpty && v.trim() === '') return '';
  const hp = splitHostPort(v.trim());
  if (!hp) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not host:port (e.g. 0.0.0.0:46357)${allowEmpty ? ', or "" to disable' : ''}` });
    return z.NEVER;
  }
  return hp;
}

/** "host:port" with a port in 1..65535. */
export const hostPort = z.string().transform((v, ctx) => hostPortOf(v, ctx, false) as HostPort);

/** "host:port", or "" for "disabled". */
export const optionalHostPort = z.string().transform((v, ctx) => hostPortOf(v, ctx, true));
