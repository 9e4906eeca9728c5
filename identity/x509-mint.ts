// Minting of SPIFFE CA certificates and X.509-SVIDs, for the dev issuer and for tests that need
// certificates with exactly the properties under test (expired, two URI SANs, a CA as leaf...).
// Defaults follow what SPIRE issues: EC P-256, a self-signed CA carrying the trust domain's
// SPIFFE ID, leaves with a critical key usage of digitalSignature|keyEncipherment|keyAgreement.

import { randomBytes, webcrypto } from 'node:crypto';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
import { EC_P256, derToPem, x509 } from './x509.js';

export interface MintedCa {
  trustDomain: string;
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
  /** DER of the CA certificate. */
  der: Buffer;
}

export interface MintedSvid {
  spiffeId: string;
  /** Leaf first, then any intermediates. */
  chainDer: Buffer[];
  /** PKCS#8 DER private key. */
  keyDer: Buffer;
  certPem: string;
  keyPem: string;
  notAfter: Date;
}

export interface CaOptions {
  trustDomain: string;
  notBefore?: Date;
  notAfter?: Date;
  /** Sign with this CA instead of self-signing (an intermediate). */
  parent?: MintedCa;
  /** Override key usage flags (tests of CA rules). */
  keyUsage?: number;
  /** Mark the certificate as a CA (default true). */
  isCa?: boolean;
}

export interface SvidOptions {
  /** URI SANs; SPIRE puts exactly one, the SPIFFE ID. */
  uris: string[];
  notBefore?: Date;
  notAfter?: Date;
  ttlMs?: number;
  keyUsage?: number;
  keyUsageCritical?: boolean;
  isCa?: boolean;
  dnsNames?: string[];
  /** Further extensions (tests of extension rules). */
  extraExtensions?: x509.Extension[];
}

// X.509 times have whole seconds: notBefore rounds down and notAfter up, so a certificate is
// never shorter-lived than asked (a 2 s SVID rounded down could live barely 1 s).
const ms = (d: Date): Date => new Date(Math.floor(d.getTime() / 1000) * 1000);
const msUp = (d: Date): Date => new Date(Math.ceil(d.getTime() / 1000) * 1000);

function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f; // positive
  return b.toString('hex');
}

export async function generateKeys(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
}

export async function mintCa(opts: CaOptions): Promise<MintedCa> {
  const keys = await generateKeys();
  const now = Date.now();
  const notBefore = ms(opts.notBefore ?? new Date(now - 60_000));
  const notAfter = msUp(opts.notAfter ?? new Date(now + 30 * 24 * 3600_000));
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(opts.isCa ?? true, undefined, true),
    new x509.KeyUsagesExtension(
      opts.keyUsage ?? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
      true,
    ),
    new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${opts.trustDomain}` }]),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  const name = `C=US, O=SPIFFE, CN=${opts.parent ? 'intermediate' : 'root'} ${opts.trustDomain} ${serial().slice(0, 8)}`;
  let cert: x509.X509Certificate;
  if (opts.parent) {
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(opts.parent.cert));
    cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: name,
      issuer: opts.parent.cert.subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: opts.parent.keys.privateKey,
      signingAlgorithm: EC_P256,
      extensions,
    });
  } else {
    cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name,
      notBefore,
      notAfter,
      keys,
      signingAlgorithm: EC_P256,
      extensions,
    });
  }
  return { trustDomain: opts.trustDomain, cert, keys, der: Buffer.from(cert.rawData) };
}

/** Mints a leaf signed by `issuer`; `chain` is appended after the leaf (intermediates). */
export async function mintSvid(issuer: MintedCa, opts: SvidOptions, chain: MintedCa[] = []): Promise<MintedSvid> {
  const keys = await generateKeys();
  const now = Date.now();
  const notBefore = ms(opts.notBefore ?? new Date(now - 10_000));
  const notAfter = opts.notAfter ?? new Date(now + (opts.ttlMs ?? 3600_000));
  const names: { type: 'url' | 'dns'; value: string }[] = opts.uris.map((value) => ({ type: 'url' as const, value }));
  for (const dns of opts.dnsNames ?? []) names.push({ type: 'dns', value: dns });
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(opts.isCa ?? false, undefined, true),
    new x509.KeyUsagesExtension(
      opts.keyUsage ??
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.keyAgreement,
      opts.keyUsageCritical ?? true,
    ),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(issuer.cert),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names));
  extensions.push(...(opts.extraExtensions ?? []));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: 'C=US, O=SPIRE',
    issuer: issuer.cert.subject,
    notBefore,
    notAfter: msUp(notAfter),
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: EC_P256,
    extensions,
  });
  const keyDer = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const chainDer = [Buffer.from(cert.rawData), ...chain.map((c) => c.der)];
  return {
    spiffeId: opts.uris[0] ?? '',
    chainDer,
    keyDer,
    certPem: chainDer.map((d) => derToPem(d)).join(''),
    keyPem: derToPem(keyDer, 'PRIVATE KEY'),
    notAfter: msUp(notAfter),
  };
}
