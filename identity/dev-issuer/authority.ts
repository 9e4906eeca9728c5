// The signing material of every trust domain the dev issuer runs: one self-signed X.509 CA and
// one JWT signing key each, kept in memory for the life of the process (like a SPIRE server
// with an in-memory key manager), and what workloads and file-mode users need from them.

import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KeyObject } from 'node:crypto';
import { mintCa, mintSvid, type MintedCa, type MintedSvid } from '../x509-mint.js';
import { derToPem } from '../x509.js';
import { trustDomainId, type SpiffeId } from '../spiffe-id.js';
import { generateJwtKey, jwks, publicJwk, signJwtSvid, validateJwtSvid, type JwtKey, type ValidatedJwtSvid } from './jwt.js';

export interface TrustDomainAuthority {
  trustDomain: string;
  ca: MintedCa;
  jwtKey: JwtKey;
  /** The trust domain's JWKS as the Workload API serves it. */
  jwtBundle: Buffer;
  jwtKeys: ReadonlyMap<string, KeyObject>;
}

export class UnknownTrustDomainError extends Error {
  constructor(trustDomain: string) {
    super(`trust domain ${trustDomain} is not run by this dev issuer`);
    this.name = 'UnknownTrustDomainError';
  }
}

export class Authority {
  private constructor(private readonly byDomain: ReadonlyMap<string, TrustDomainAuthority>) {}

  static async create(trustDomains: readonly string[], caTtlMs: number): Promise<Authority> {
    const entries = await Promise.all(
      trustDomains.map(async (trustDomain): Promise<[string, TrustDomainAuthority]> => {
        const ca = await mintCa({ trustDomain, notAfter: new Date(Date.now() + caTtlMs) });
        const jwtKey = generateJwtKey();
        return [trustDomain, { trustDomain, ca, jwtKey, jwtBundle: jwks([jwtKey]), jwtKeys: new Map([[jwtKey.kid, jwtKey.publicKey]]) }];
      }),
    );
    return new Authority(new Map(entries));
  }

  get trustDomains(): string[] {
    return [...this.byDomain.keys()];
  }

  of(trustDomain: string): TrustDomainAuthority {
    const a = this.byDomain.get(trustDomain);
    if (!a) throw new UnknownTrustDomainError(trustDomain);
    return a;
  }

  has(trustDomain: string): boolean {
    return this.byDomain.has(trustDomain);
  }

  async mintX509Svid(id: SpiffeId, ttlMs: number, dnsNames: readonly string[] = []): Promise<MintedSvid> {
    return mintSvid(this.of(id.trustDomain).ca, { uris: [id.id], ttlMs, dnsNames: [...dnsNames] });
  }

  /** X.509 bundles keyed by trust domain SPIFFE ID, as both X.509 Workload API messages key them. */
  x509Bundles(trustDomains: Iterable<string>): Record<string, Buffer> {
    const out: Record<string, Buffer> = {};
    for (const td of trustDomains) out[trustDomainId(td)] = this.of(td).ca.der;
    return out;
  }

  jwtBundles(trustDomains: Iterable<string>): Record<string, Buffer> {
    const out: Record<string, Buffer> = {};
    for (const td of trustDomains) out[trustDomainId(td)] = this.of(td).jwtBundle;
    return out;
  }

  signJwtSvid(id: SpiffeId, audience: readonly string[], ttlMs: number, nowMs = Date.now()): string {
    const iat = Math.floor(nowMs / 1000);
    return signJwtSvid(this.of(id.trustDomain).jwtKey, { sub: id.id, aud: [...audience], exp: Math.floor((nowMs + ttlMs) / 1000), iat });
  }

  /** Validates as a workload trusting only `trusted` trust domains would. */
  validateJwtSvid(token: string, audience: string, trusted: ReadonlySet<string>, nowMs = Date.now()): ValidatedJwtSvid {
    return validateJwtSvid(token, audience, (td) => (trusted.has(td) ? this.byDomain.get(td)?.jwtKeys : undefined), nowMs);
  }

  /**
   * The SPIFFE bundle document (SPIFFE Trust Domain and Bundle standard): the CA as an
   * `x509-svid` key with its certificate in x5c, and the JWT authority as a `jwt-svid` key.
   */
  spiffeBundle(trustDomain: string, sequence = 1): string {
    const a = this.of(trustDomain);
    const caJwk = publicJwk(KeyObject.from(a.ca.keys.publicKey));
    const keys = [
      { use: 'x509-svid', ...caJwk, x5c: [a.ca.der.toString('base64')] },
      { use: 'jwt-svid', ...publicJwk(a.jwtKey.publicKey), kid: a.jwtKey.kid },
    ];
    return `${JSON.stringify({ keys, spiffe_sequence: sequence }, null, 2)}\n`;
  }

  /** Writes `<td>.pem` and `<td>.spiffe.json` for every trust domain; returns the files written. */
  writeBundles(dir: string): string[] {
    mkdirSync(dir, { recursive: true });
    const written: string[] = [];
    for (const td of this.trustDomains) {
      written.push(writeAtomically(join(dir, `${td}.pem`), derToPem(this.of(td).ca.der)));
      written.push(writeAtomically(join(dir, `${td}.spiffe.json`), this.spiffeBundle(td)));
    }
    return written;
  }
}

/** File-mode sources watch these files; a rename never lets them read half a bundle. */
function writeAtomically(file: string, content: string): string {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, content, { mode: 0o644 });
  renameSync(tmp, file);
  return file;
}
