// X.509 bundles: the CA certificates of one trust domain, and the set of bundles (own and
// federated) keyed by trust domain name that the verifier picks from.

import { X509Certificate } from 'node:crypto';
import { parseTrustDomain } from './spiffe-id.js';
import { derToPem, pemBlocks, splitDerCertificates } from './x509.js';

export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BundleError';
  }
}

export class X509Bundle {
  /** Parsed once: the verifier checks signatures against these on every handshake. */
  readonly authorities: readonly X509Certificate[];

  constructor(
    readonly trustDomain: string,
    /** DER of each CA certificate. */
    readonly certs: readonly Buffer[],
  ) {
    this.authorities = certs.map((der, i) => {
      try {
        return new X509Certificate(der);
      } catch (err) {
        throw new BundleError(`bundle for ${trustDomain}: certificate ${i + 1} cannot be parsed: ${(err as Error).message}`);
      }
    });
  }

  pem(): string {
    return this.certs.map((c) => derToPem(c)).join('');
  }

  equals(other: X509Bundle | undefined): boolean {
    return (
      other !== undefined &&
      other.trustDomain === this.trustDomain &&
      other.certs.length === this.certs.length &&
      other.certs.every((c, i) => c.equals(this.certs[i]!))
    );
  }

  /**
   * A bundle for trust domain `td` read from a file: PEM certificates, DER (one or concatenated)
   * or a SPIFFE bundle (JWKS whose `x509-svid` keys carry the certificate in `x5c`).
   */
  static parse(td: string, data: Buffer | string, what = 'bundle'): X509Bundle {
    const trustDomain = parseTrustDomain(td);
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    const text = buf.toString('utf8').trimStart();
    let certs: Buffer[];
    if (text.startsWith('{')) certs = spiffeBundleCerts(text, what);
    else if (text.startsWith('-----BEGIN')) {
      certs = pemBlocks(text);
      if (certs.length === 0) throw new BundleError(`${what}: no CERTIFICATE block in the PEM`);
    } else {
      try {
        certs = splitDerCertificates(buf);
      } catch (err) {
        throw new BundleError(`${what}: neither PEM, SPIFFE bundle JSON nor DER (${(err as Error).message})`);
      }
      if (certs.length === 0) throw new BundleError(`${what}: empty`);
    }
    return new X509Bundle(trustDomain, certs);
  }
}

function spiffeBundleCerts(text: string, what: string): Buffer[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new BundleError(`${what}: not valid JSON: ${(err as Error).message}`);
  }
  const keys = (doc as { keys?: unknown }).keys;
  if (!Array.isArray(keys)) throw new BundleError(`${what}: SPIFFE bundle has no "keys" array`);
  const certs: Buffer[] = [];
  keys.forEach((k: { use?: unknown; x5c?: unknown }, i) => {
    if (k.use !== 'x509-svid') return;
    if (!Array.isArray(k.x5c) || k.x5c.length !== 1 || typeof k.x5c[0] !== 'string') {
      throw new BundleError(`${what}: keys[${i}] (x509-svid) must have exactly one certificate in x5c`);
    }
    certs.push(Buffer.from(k.x5c[0], 'base64'));
  });
  if (certs.length === 0) throw new BundleError(`${what}: SPIFFE bundle has no x509-svid keys`);
  return certs;
}

/** What the verifier needs: the bundle of a given trust domain. */
export interface BundleSource {
  bundleFor(trustDomain: string): X509Bundle | undefined;
}

/** Bundles keyed by trust domain: the workload's own and every federated one. */
export class BundleSet implements BundleSource {
  private readonly byDomain = new Map<string, X509Bundle>();

  constructor(bundles: Iterable<X509Bundle> = []) {
    for (const b of bundles) this.byDomain.set(b.trustDomain, b);
  }

  bundleFor(trustDomain: string): X509Bundle | undefined {
    return this.byDomain.get(trustDomain);
  }

  trustDomains(): string[] {
    return [...this.byDomain.keys()].sort();
  }

  get size(): number {
    return this.byDomain.size;
  }

  [Symbol.iterator](): Iterator<X509Bundle> {
    return this.byDomain.values();
  }

  /** PEM of the CA certificates of the given trust domains (all when omitted). */
  pem(trustDomains?: Iterable<string>): string {
    const tds = trustDomains ? [...trustDomains] : this.trustDomains();
    return tds.map((td) => this.byDomain.get(td)?.pem() ?? '').join('');
  }

  equals(other: BundleSet): boolean {
    if (other.size !== this.size) return false;
    for (const b of this) if (!b.equals(other.bundleFor(b.trustDomain))) return false;
    return true;
  }
}
