// slimctl as a real process: `svid show` against the in-process dev issuer's Workload API, and
// `svid verify` on chains and bundles written to files in every format an operator may hold, with
// the exit statuses scripts rely on (0 valid, 1 invalid or agent trouble, 2 bad command line).

import { createPublicKey } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../harness/node-config.js';
import { ProcessGroup } from '../harness/processes.js';
import { mintCa, mintSvid, type MintedCa } from '../identity/x509-mint.js';
import { derToPem } from '../identity/x509.js';
import { startSpiffeEnv, type SpiffeEnv } from './support/spiffe-env.js';

const NODE_A = 'spiffe://cluster-a.example/slim/node-a';

let env: SpiffeEnv;
let dir: string;
let caA: MintedCa;
const group = new ProcessGroup();
/** Files written once for the verify cases, by name. */
const f: Record<string, string> = {};

interface Run {
  code: number | null;
  output: string;
  lines: string[];
}

async function slimctl(...args: string[]): Promise<Run> {
  const p = group.spawn('slimctl', 'slimctl', args, { env: { SPIFFE_ENDPOINT_SOCKET: '' } });
  const { code } = await p.exited;
  return { code, output: p.output, lines: p.lines };
}

/** The one JSON line the program printed with `-o json`. */
function json<T = Record<string, unknown>>(r: Run): T {
  const line = r.lines.find((l) => l.startsWith('{'));
  if (line === undefined) throw new Error(`no JSON line in:\n${r.output}`);
  return JSON.parse(line) as T;
}

/** A SPIFFE bundle document built here rather than by the issuer, so the parser is checked against the standard's shape. */
function spiffeBundleJson(ca: MintedCa): string {
  const jwk = createPublicKey(derToPem(ca.der)).export({ format: 'jwk' });
  return JSON.stringify({ keys: [{ use: 'x509-svid', ...jwk, x5c: [ca.der.toString('base64')] }], spiffe_sequence: 1 });
}

function write(name: string, data: string | Buffer): string {
  const file = join(dir, name);
  writeFileSync(file, data);
  f[name] = file;
  return file;
}

beforeAll(async () => {
  env = await startSpiffeEnv({ nodeA: NODE_A });
  dir = scratchDir('slimctl');
  caA = env.issuer.authority.of('cluster-a.example').ca;
  const caB = env.issuer.authority.of('cluster-b.example').ca;
  write('a.pem', derToPem(caA.der));
  write('a.der', caA.der);
  write('a.json', spiffeBundleJson(caA));
  write('b.pem', derToPem(caB.der));

  const now = Date.now();
  const valid = await mintSvid(caA, { uris: [NODE_A] });
  write('valid.pem', valid.certPem + valid.keyPem);
  const intermediate = await mintCa({ trustDomain: 'cluster-a.example', parent: caA });
  const viaIntermediate = await mintSvid(intermediate, { uris: [NODE_A] }, [intermediate]);
  write('chain2.der', Buffer.concat(viaIntermediate.chainDer));
  const expired = await mintSvid(caA, { uris: [NODE_A], notBefore: new Date(now - 2 * 3600_000), notAfter: new Date(now - 3600_000) });
  write('expired.pem', expired.certPem);
  const crossSigned = await mintSvid(caA, { uris: ['spiffe://cluster-b.example/slim/impostor'] });
  write('cross.pem', crossSigned.certPem);
  const twoIds = await mintSvid(caA, { uris: [NODE_A, 'spiffe://cluster-a.example/slim/other'] });
  write('two-uris.pem', twoIds.certPem);
});

afterAll(async () => {
  await group.stopAll();
  await env?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('slimctl svid show', () => {
  it('reports the SVID, its validity and the own and federated bundles as JSON', async () => {
    const r = await slimctl('svid', 'show', '--socket', `unix:${env.socket['nodeA']}`, '-o', 'json');
    expect(r.code, r.output).toBe(0);
    const doc = json<{
      socket: string;
      svids: { spiffe_id: string; not_after: string; not_before: string; time_left_seconds: number; chain_length: number; serial: string }[];
      bundles: { trust_domain: string; kind: string; cas: number; earliest_ca_expiry: string }[];
    }>(r);
    expect(doc.socket).toBe(`unix:${env.socket['nodeA']}`);
    expect(doc.svids).toHaveLength(1);
    const [svid] = doc.svids;
    expect(svid!.spiffe_id).toBe(NODE_A);
    expect(Date.parse(svid!.not_after)).toBeGreaterThan(Date.now());
    expect(Date.parse(svid!.not_before)).toBeLessThanOrEqual(Date.now());
    expect(svid!.time_left_seconds).toBeGreaterThan(0);
    expect(svid!.chain_length).toBe(1);
    expect(svid!.serial).toMatch(/^[0-9a-f]+$/);
    const kinds = Object.fromEntries(doc.bundles.map((b) => [b.trust_domain, b.kind]));
    expect(kinds).toEqual({ 'cluster-a.example': 'own', 'admin.example': 'federated', 'cluster-b.example': 'federated' });
    for (const b of doc.bundles) {
      expect(b.cas).toBe(1);
      expect(Date.parse(b.earliest_ca_expiry)).toBeGreaterThan(Date.now());
    }
  });

  it('prints a table with the SPIFFE ID and the trust domains, and reads SPIFFE_ENDPOINT_SOCKET', async () => {
    const p = group.spawn('slimctl', 'slimctl', ['svid', 'show'], { env: { SPIFFE_ENDPOINT_SOCKET: `unix://${env.socket['nodeA']}` } });
    const { code } = await p.exited;
    expect(code, p.output).toBe(0);
    expect(p.output).toContain(NODE_A);
    expect(p.output).toMatch(/cluster-b\.example\s+federated\s+1\s/);
    expect(p.output).toMatch(/cluster-a\.example\s+own\s+1\s/);
  });

  it('exits 1 with one line when the socket does not exist', async () => {
    const r = await slimctl('svid', 'show', '--socket', `unix:${dir}/absent.sock`);
    expect(r.code).toBe(1);
    expect(r.lines).toHaveLength(1);
    expect(r.output).toContain('no such socket');
    expect(r.output).toContain(`${dir}/absent.sock`);
  });

  it('exits 1 naming the timeout when the socket accepts connections but never answers', async () => {
    const path = join(dir, 'silent.sock');
    // Reads (so it sees the client leave and can close) but never answers.
    const silent: Server = createServer((conn) => conn.resume());
    await new Promise<void>((resolve) => silent.listen(path, resolve));
    try {
      const r = await slimctl('svid', 'show', '--socket', path, '--timeout', '1s');
      expect(r.code).toBe(1);
      expect(r.output).toMatch(/answered nothing within 1 s/);
    } finally {
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('exits 2 when no socket is given and SPIFFE_ENDPOINT_SOCKET is unset, or the timeout is not a duration', async () => {
    const [none, badTimeout] = await Promise.all([
      slimctl('svid', 'show'),
      slimctl('svid', 'show', '--socket', `unix:${env.socket['nodeA']}`, '--timeout', 'soon'),
    ]);
    expect(none.code).toBe(2);
    expect(none.output).toContain('--socket');
    expect(none.output).toContain('SPIFFE_ENDPOINT_SOCKET');
    expect(badTimeout.code).toBe(2);
    expect(badTimeout.output).toContain('--timeout');
  });
});

describe('slimctl svid verify', () => {
  const verify = (chain: string, bundle: string, td: string, ...more: string[]): Promise<Run> =>
    slimctl('svid', 'verify', '--chain', f[chain]!, '--bundle', f[bundle]!, '--trust-domain', td, '-o', 'json', ...more);

  it('accepts a valid chain with the bundle as PEM, DER or SPIFFE bundle JSON, and a DER chain with an intermediate', async () => {
    const runs = await Promise.all([
      verify('valid.pem', 'a.pem', 'cluster-a.example'),
      verify('valid.pem', 'a.der', 'cluster-a.example'),
      verify('valid.pem', 'a.json', 'spiffe://cluster-a.example'),
      verify('chain2.der', 'a.json', 'cluster-a.example'),
    ]);
    for (const r of runs) {
      expect(r.code, r.output).toBe(0);
      expect(json(r)).toMatchObject({ verdict: 'valid', spiffe_id: NODE_A, reason: null, trust_domain: 'cluster-a.example' });
    }
    expect(json(runs[3]!)['chain_length']).toBe(2);
  });

  it('prints the verdict and the SPIFFE ID as a table', async () => {
    const r = await slimctl('svid', 'verify', '--chain', f['valid.pem']!, '--bundle', f['a.pem']!, '--trust-domain', 'cluster-a.example');
    expect(r.code, r.output).toBe(0);
    expect(r.output).toMatch(/^verdict\s+valid$/m);
    expect(r.output).toMatch(new RegExp(`^spiffe id\\s+${NODE_A}$`, 'm'));
  });

  it('refuses bad chains with exit 1 and the reason code', async () => {
    const [expired, early, cross, twoUris, mismatch] = await Promise.all([
      verify('expired.pem', 'a.pem', 'cluster-a.example'),
      verify('valid.pem', 'a.pem', 'cluster-a.example', '--at', new Date(Date.now() - 86_400_000).toISOString()),
      verify('cross.pem', 'b.pem', 'cluster-b.example'),
      verify('two-uris.pem', 'a.pem', 'cluster-a.example'),
      verify('valid.pem', 'b.pem', 'cluster-b.example'),
    ]);
    for (const r of [expired, early, cross, twoUris, mismatch]) expect(r.code, r.output).toBe(1);
    expect(json(expired)).toMatchObject({ verdict: 'invalid', reason: 'expired', spiffe_id: NODE_A });
    expect(json(early)).toMatchObject({ verdict: 'invalid', reason: 'not_yet_valid' });
    expect(json(cross)).toMatchObject({ verdict: 'invalid', reason: 'untrusted_chain', spiffe_id: 'spiffe://cluster-b.example/slim/impostor' });
    expect(json(twoUris)).toMatchObject({ verdict: 'invalid', reason: 'multiple_uri_sans' });
    expect(json(mismatch)).toMatchObject({ verdict: 'invalid', reason: 'no_bundle', spiffe_id: NODE_A });
    expect(json(mismatch)['message']).toContain('the bundle given is for trust domain cluster-b.example; the leaf claims cluster-a.example');
  });

  it('prints the reason in the table of an invalid chain', async () => {
    const r = await slimctl('svid', 'verify', '--chain', f['expired.pem']!, '--bundle', f['a.pem']!, '--trust-domain', 'cluster-a.example');
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/^verdict\s+invalid$/m);
    expect(r.output).toMatch(/^reason\s+expired$/m);
    expect(r.output).toContain(`${NODE_A} (claimed)`);
  });

  it('exits 2 naming the flag for a missing file, an unparsable --at, a bad trust domain or a non-certificate chain', async () => {
    const missing = join(dir, 'missing.pem');
    const [noChain, badAt, badTd, notCert, noBundle] = await Promise.all([
      slimctl('svid', 'verify', '--chain', missing, '--bundle', f['a.pem']!, '--trust-domain', 'cluster-a.example'),
      verify('valid.pem', 'a.pem', 'cluster-a.example', '--at', '2025-02-30T00:00:00Z'),
      verify('valid.pem', 'a.pem', 'Cluster_A:8080'),
      verify('a.json', 'a.pem', 'cluster-a.example'),
      slimctl('svid', 'verify', '--chain', f['valid.pem']!, '--bundle', missing, '--trust-domain', 'cluster-a.example'),
    ]);
    for (const r of [noChain, badAt, badTd, notCert, noBundle]) {
      expect(r.code, r.output).toBe(2);
      expect(r.lines, r.output).toHaveLength(1);
    }
    expect(noChain.output).toContain(`--chain ${missing}: cannot read: no such file`);
    expect(badAt.output).toContain('--at');
    expect(badTd.output).toContain('--trust-domain');
    expect(notCert.output).toContain(`--chain ${f['a.json']}`);
    expect(noBundle.output).toContain(`--bundle ${missing}`);
  });
});
