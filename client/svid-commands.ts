// `slimctl svid`: the two questions an operator asks when mTLS between nodes fails. `show` answers
// "which identity and which trust bundles does this workload actually get from the agent?";
// `verify` answers "would a peer trusting this bundle accept this chain, and if not, why?" with the
// same verifier and refusal codes the nodes use, so its verdict matches what a node would decide.
//
// The identity modules pull in grpc-js and @peculiar/x509; they are imported inside the actions so
// that `slimctl --help` and the other command groups do not pay for loading them.

import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { EXIT_RUNTIME } from '../common/cli.js';
import { ConfigError } from '../common/config-file.js';
import type { X509Context } from '../identity/workload-api-client.js';
import { formatFields, formatSpan, formatTable, isoTime, outputOption, parseTimeout, type OutputFormat } from './output.js';

const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?)?$/;

/**
 * An ISO 8601 date or date-time; UTC when no offset is given, because a verdict that depends on the
 * time zone of the machine running slimctl would differ between an operator's laptop and a pod.
 * Out-of-range fields are refused rather than rolled over (JavaScript reads Feb 30 as Mar 2).
 */
export function parseIsoTime(value: string): Date | undefined {
  const m = ISO_8601.exec(value.trim());
  if (!m) return undefined;
  const [, y, mo, d, h = '00', mi = '00', s = '00', frac = '', offset = 'Z'] = m;
  const year = Number(y);
  const month = Number(mo);
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (month < 1 || month > 12 || Number(d) < 1 || Number(d) > daysInMonth) return undefined;
  if (Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) return undefined;
  let zone = offset.toUpperCase();
  if (zone !== 'Z') {
    const om = /^([+-])(\d{2}):?(\d{2})$/.exec(zone)!;
    if (Number(om[2]) > 23 || Number(om[3]) > 59) return undefined;
    zone = `${om[1]}${om[2]}:${om[3]}`;
  }
  const ms = frac === '' ? '' : frac.slice(0, 4).padEnd(4, '0');
  const t = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}${ms}${zone}`);
  return Number.isNaN(t.getTime()) ? undefined : t;
}

function parseAt(value: string): Date {
  const t = parseIsoTime(value);
  if (!t) throw new InvalidArgumentError('Expected an ISO 8601 time such as 2025-06-01T12:00:00Z (UTC unless an offset is given).');
  return t;
}

/** Adds `svid show` and `svid verify` under `program`. */
export function addSvidCommands(program: Command): Command {
  const svid = program.command('svid').description('X.509-SVIDs: what the Workload API issues, and whether a chain verifies');

  svid
    .command('show')
    .description("show this workload's X.509-SVIDs and trust bundles as the SPIFFE Workload API serves them")
    .option('--socket <address>', `Workload API socket: unix:/path, unix:///path or /path (default: $SPIFFE_ENDPOINT_SOCKET)`)
    .addOption(outputOption())
    .option('--timeout <duration>', 'how long to wait for the Workload API to answer', parseTimeout, 10_000)
    .action((opts: { socket?: string; output: OutputFormat; timeout: number }) => svidShow(opts));

  svid
    .command('verify')
    .description('verify an X.509-SVID chain against the trust bundle of a trust domain, as a SLIM node would')
    .requiredOption('--chain <file>', 'certificate chain, leaf first: PEM, or DER (one or concatenated)')
    .requiredOption('--bundle <file>', 'CA certificates of the trust domain: PEM, DER or SPIFFE bundle JSON')
    .requiredOption('--trust-domain <td>', 'trust domain the bundle belongs to, e.g. cluster-a.example')
    .option('--at <time>', 'verify at this ISO 8601 time instead of now', parseAt)
    .addOption(outputOption())
    .action((opts: { chain: string; bundle: string; trustDomain: string; at?: Date; output: OutputFormat }) => svidVerify(opts));

  return svid;
}

// ---- svid show ----

interface SvidReport {
  spiffe_id: string;
  hint: string;
  serial: string;
  not_before: string;
  not_after: string;
  /** Negative once expired. */
  time_left_seconds: number;
  chain_length: number;
}

interface BundleReport {
  trust_domain: string;
  /** `own` when an SVID of this workload is in the trust domain, else `federated`. */
  kind: 'own' | 'federated';
  cas: number;
  earliest_ca_expiry: string;
  time_left_seconds: number;
}

interface ShowReport {
  socket: string;
  svids: SvidReport[];
  bundles: BundleReport[];
}

async function svidShow(opts: { socket?: string; output: OutputFormat; timeout: number }): Promise<void> {
  const { WorkloadApiClient, WorkloadApiError, resolveWorkloadSocket, SPIFFE_ENDPOINT_SOCKET } = await import(
    '../identity/workload-api-client.js'
  );
  let target: string;
  try {
    target = resolveWorkloadSocket(opts.socket);
  } catch (err) {
    if (!(err instanceof WorkloadApiError)) throw err;
    // A malformed or absent address is a command-line problem, not an agent one.
    if (opts.socket !== undefined && opts.socket !== '') throw new ConfigError(`--socket: ${err.reason}`);
    if (process.env[SPIFFE_ENDPOINT_SOCKET]) throw new ConfigError(err.reason);
    throw new ConfigError(`no Workload API socket: pass --socket unix:/path or set ${SPIFFE_ENDPOINT_SOCKET}`);
  }
  const client = new WorkloadApiClient(target, { callTimeoutMs: opts.timeout });
  let ctx: X509Context;
  try {
    ctx = await client.fetchX509Context();
  } finally {
    client.close();
  }
  const report = showReport(client.target, ctx, new Date());
  process.stdout.write(opts.output === 'json' ? `${JSON.stringify(report)}\n` : showTable(report));
}

function showReport(socket: string, ctx: X509Context, now: Date): ShowReport {
  const left = (t: Date): number => Math.floor((t.getTime() - now.getTime()) / 1000);
  const svids = ctx.svids.map((s): SvidReport => {
    const leaf = new X509Certificate(s.chainDer[0]!);
    const notAfter = new Date(leaf.validTo);
    return {
      spiffe_id: s.id.id,
      hint: s.hint,
      serial: leaf.serialNumber.toLowerCase(),
      not_before: isoTime(new Date(leaf.validFrom)),
      not_after: isoTime(notAfter),
      time_left_seconds: left(notAfter),
      chain_length: s.chainDer.length,
    };
  });
  const own = new Set(ctx.svids.map((s) => s.id.trustDomain));
  const bundles = ctx.bundles.trustDomains().map((td): BundleReport => {
    const b = ctx.bundles.bundleFor(td)!;
    const earliest = new Date(Math.min(...b.authorities.map((a) => new Date(a.validTo).getTime())));
    return {
      trust_domain: td,
      kind: own.has(td) ? 'own' : 'federated',
      cas: b.certs.length,
      earliest_ca_expiry: isoTime(earliest),
      time_left_seconds: left(earliest),
    };
  });
  return { socket, svids, bundles };
}

function showTable(r: ShowReport): string {
  const span = (s: number): string => formatSpan(s * 1000);
  return [
    `Workload API ${r.socket}\n`,
    `X.509-SVIDs (${r.svids.length})\n`,
    formatTable(
      ['SPIFFE ID', 'HINT', 'SERIAL', 'NOT BEFORE', 'NOT AFTER', 'TIME LEFT', 'CHAIN'],
      r.svids.map((s) => [s.spiffe_id, s.hint || '-', s.serial, s.not_before, s.not_after, span(s.time_left_seconds), String(s.chain_length)]),
    ),
    `\nTrust bundles (${r.bundles.length})\n`,
    formatTable(
      ['TRUST DOMAIN', 'KIND', 'CAS', 'EARLIEST CA EXPIRY', 'TIME LEFT'],
      r.bundles.map((b) => [b.trust_domain, b.kind, String(b.cas), b.earliest_ca_expiry, span(b.time_left_seconds)]),
    ),
  ].join('');
}

// ---- svid verify ----

interface VerifyReport {
  verdict: 'valid' | 'invalid';
  /** The verified ID when valid; the claimed one, when readable, when invalid. */
  spiffe_id: string | null;
  reason: string | null;
  message: string | null;
  trust_domain: string;
  checked_at: string;
  chain_length: number;
}

async function svidVerify(opts: { chain: string; bundle: string; trustDomain: string; at?: Date; output: OutputFormat }): Promise<void> {
  const [{ parseSpiffeId, parseTrustDomain }, { BundleError, BundleSet, X509Bundle }, { verifyX509Svid, spiffeIdOfCertificate }, { pemBlocks, splitDerCertificates }] =
    await Promise.all([
      import('../identity/spiffe-id.js'),
      import('../identity/x509-bundle.js'),
      import('../identity/svid-verifier.js'),
      import('../identity/x509.js'),
    ]);

  let td: string;
  try {
    td = parseTrustDomain(opts.trustDomain);
  } catch (err) {
    throw new ConfigError(`--trust-domain: ${(err as Error).message}`);
  }

  const chainData = readArgFile('--chain', opts.chain);
  let chain: Buffer[];
  const chainText = chainData.toString('utf8').trimStart();
  if (chainText.startsWith('-----BEGIN')) {
    chain = pemBlocks(chainText);
    if (chain.length === 0) throw new ConfigError(`--chain ${opts.chain}: no CERTIFICATE block in the PEM (is it a key file?)`);
  } else {
    try {
      chain = splitDerCertificates(chainData);
    } catch (err) {
      throw new ConfigError(`--chain ${opts.chain}: neither PEM nor DER certificates (${(err as Error).message})`);
    }
  }

  const bundleData = readArgFile('--bundle', opts.bundle);
  let bundle: InstanceType<typeof X509Bundle>;
  try {
    bundle = X509Bundle.parse(td, bundleData, `--bundle ${opts.bundle}`);
  } catch (err) {
    if (!(err instanceof BundleError)) throw err;
    const msg = err.message.startsWith('--bundle ') ? err.message : `--bundle ${opts.bundle}: ${err.message}`;
    throw new ConfigError(msg);
  }

  const at = opts.at ?? new Date();
  const verdict = verifyX509Svid(chain, new BundleSet([bundle]), { at });
  const report: VerifyReport = {
    verdict: verdict.ok ? 'valid' : 'invalid',
    spiffe_id: verdict.ok ? verdict.id.id : (verdict.id ?? spiffeIdOfCertificate(chain[0]!) ?? null),
    reason: verdict.ok ? null : verdict.reason,
    message: verdict.ok ? null : verdict.message,
    trust_domain: td,
    checked_at: isoTime(at),
    chain_length: chain.length,
  };
  if (!verdict.ok && verdict.reason === 'no_bundle' && verdict.id !== undefined) {
    // The verifier only knows it has no bundle for the leaf's trust domain; here the operator
    // handed one bundle and named its domain, so the real problem is the mismatch.
    const claimed = parseSpiffeId(verdict.id).trustDomain;
    if (claimed !== td) {
      report.message = `${verdict.id}: the bundle given is for trust domain ${td}; the leaf claims ${claimed} (pass the bundle of ${claimed} with --trust-domain ${claimed})`;
    }
  }
  process.stdout.write(opts.output === 'json' ? `${JSON.stringify(report)}\n` : verifyTable(report));
  if (!verdict.ok) process.exitCode = EXIT_RUNTIME;
}

function verifyTable(r: VerifyReport): string {
  const fields: [string, string][] = [
    ['verdict', r.verdict],
    ['spiffe id', r.spiffe_id === null ? '-' : r.verdict === 'valid' ? r.spiffe_id : `${r.spiffe_id} (claimed)`],
  ];
  if (r.reason !== null) fields.push(['reason', r.reason]);
  if (r.message !== null) fields.push(['message', r.message]);
  fields.push(['trust domain', r.trust_domain], ['checked at', r.checked_at], ['chain', `${r.chain_length} certificate(s)`]);
  return formatFields(fields);
}

/** The file's bytes, or a ConfigError naming the flag and the path. */
function readArgFile(flag: string, file: string): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : code === 'EACCES' ? 'permission denied' : (code ?? (err as Error).message);
    throw new ConfigError(`${flag} ${file}: cannot read: ${why}`);
  }
  if (data.length === 0) throw new ConfigError(`${flag} ${file}: the file is empty`);
  return data;
}
