// X.509-SVID verification: each rule of the SPIFFE X.509-SVID standard refused with its own
// reason code and a message naming the certificate and the problem, plus the authorizers.

import { beforeAll, describe, expect, it } from 'vitest';
import { authorizeAny, authorizeId, authorizeMemberOf, authorizeOneOf, type Authorizer } from '../identity/authorizer.js';
import { parseSpiffeId } from '../identity/spiffe-id.js';
import { spiffeIdOfCertificate, verifyX509Svid, type RefusalReason, type SvidVerdict } from '../identity/svid-verifier.js';
import { BundleSet, X509Bundle } from '../identity/x509-bundle.js';
import { generateKeys, mintCa, mintSvid, type MintedCa, type MintedSvid } from '../identity/x509-mint.js';
import { EC_P256, x509 } from '../identity/x509.js';

const A = 'cluster-a.example';
const B = 'cluster-b.example';
const OLD = 'old.example';
const KU = x509.KeyUsageFlags;
const DAY = 24 * 3600_000;

let caA: MintedCa;
let caB: MintedCa;
let caOld: MintedCa;
let interA: MintedCa;
let bundles: BundleSet;
const svids: Record<string, MintedSvid> = {};
let leafWithoutKeyUsage: Buffer;

beforeAll(async () => {
  const now = Date.now();
  [caA, caB, caOld] = await Promise.all([
    // Valid since well before the expired leaf, so checking that leaf in its past still finds the root valid.
    mintCa({ trustDomain: A, notBefore: new Date(now - 3 * DAY) }),
    mintCa({ trustDomain: B }),
    mintCa({ trustDomain: OLD, notBefore: new Date(now - 3 * DAY), notAfter: new Date(now - DAY) }),
  ]);
  const [inter, interNotCa, interNoCertSign, interExpired] = await Promise.all([
    mintCa({ trustDomain: A, parent: caA }),
    mintCa({ trustDomain: A, parent: caA, isCa: false }),
    mintCa({ trustDomain: A, parent: caA, keyUsage: KU.digitalSignature | KU.cRLSign }),
    mintCa({ trustDomain: A, parent: caA, notBefore: new Date(now - 3 * DAY), notAfter: new Date(now - DAY) }),
  ]);
  interA = inter!;
  bundles = new BundleSet([new X509Bundle(A, [caA.der]), new X509Bundle(B, [caB.der]), new X509Bundle(OLD, [caOld.der])]);

  const entries: [string, Promise<MintedSvid>][] = [
    ['valid', mintSvid(caA, { uris: [`spiffe://${A}/workload`] })],
    ['validB', mintSvid(caB, { uris: [`spiffe://${B}/workload`] })],
    ['withDns', mintSvid(caA, { uris: [`spiffe://${A}/dns`], dnsNames: ['slim.cluster-a.example'] })],
    ['viaIntermediate', mintSvid(interA, { uris: [`spiffe://${A}/nested`] }, [interA])],
    ['intermediateNotSent', mintSvid(interA, { uris: [`spiffe://${A}/nested`] })],
    ['viaNotCa', mintSvid(interNotCa!, { uris: [`spiffe://${A}/x`] }, [interNotCa!])],
    ['viaNoCertSign', mintSvid(interNoCertSign!, { uris: [`spiffe://${A}/x`] }, [interNoCertSign!])],
    [
      'viaExpired',
      mintSvid(interExpired!, { uris: [`spiffe://${A}/x`], notBefore: new Date(now - 2 * DAY) }, [interExpired!]),
    ],
    ['underExpiredRoot', mintSvid(caOld, { uris: [`spiffe://${OLD}/x`], notBefore: new Date(now - 2 * DAY) })],
    [
      'expired',
      mintSvid(caA, { uris: [`spiffe://${A}/old`], notBefore: new Date(now - 2 * 3600_000), notAfter: new Date(now - 3600_000) }),
    ],
    [
      'future',
      mintSvid(caA, { uris: [`spiffe://${A}/new`], notBefore: new Date(now + 3600_000), notAfter: new Date(now + 2 * 3600_000) }),
    ],
    ['noUri', mintSvid(caA, { uris: [], dnsNames: ['only-dns.example'] })],
    ['twoUris', mintSvid(caA, { uris: [`spiffe://${A}/one`, `spiffe://${A}/two`] })],
    ['spiffeAndHttps', mintSvid(caA, { uris: [`spiffe://${A}/one`, 'https://cluster-a.example/x'] })],
    ['httpsOnly', mintSvid(caA, { uris: ['https://cluster-a.example/x'] })],
    ['badSpiffe', mintSvid(caA, { uris: [`spiffe://${A}/a//b`] })],
    ['caLeaf', mintSvid(caA, { uris: [`spiffe://${A}/ca`], isCa: true })],
    ['kuNotCritical', mintSvid(caA, { uris: [`spiffe://${A}/x`], keyUsageCritical: false })],
    ['kuNoDigitalSignature', mintSvid(caA, { uris: [`spiffe://${A}/x`], keyUsage: KU.keyEncipherment | KU.keyAgreement })],
    ['kuCertSign', mintSvid(caA, { uris: [`spiffe://${A}/x`], keyUsage: KU.digitalSignature | KU.keyCertSign })],
    ['kuCrlSign', mintSvid(caA, { uris: [`spiffe://${A}/x`], keyUsage: KU.digitalSignature | KU.cRLSign })],
    ['claimsBSignedByA', mintSvid(caA, { uris: [`spiffe://${B}/impostor`] })],
    ['unknownDomain', mintSvid(caA, { uris: ['spiffe://cluster-c.example/x'] })],
  ];
  const minted = await Promise.all(entries.map(([, p]) => p));
  entries.forEach(([name], i) => (svids[name] = minted[i]!));

  // mintSvid always adds key usage, so the one leaf without it is built by hand.
  const keys = await generateKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01',
    subject: 'CN=no key usage',
    issuer: caA.cert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3600_000),
    publicKey: keys.publicKey,
    signingKey: caA.keys.privateKey,
    signingAlgorithm: EC_P256,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${A}/noku` }]),
    ],
  });
  leafWithoutKeyUsage = Buffer.from(cert.rawData);
});

function verify(name: string, opts?: { at?: Date; authorizer?: Authorizer }): SvidVerdict {
  return verifyX509Svid(svids[name]!.chainDer, bundles, opts);
}

function expectOk(v: SvidVerdict, id: string): void {
  if (!v.ok) throw new Error(`expected ok, got ${v.reason}: ${v.message}`);
  expect(v.id.id).toBe(id);
}

function expectRefused(v: SvidVerdict, reason: RefusalReason, ...fragments: string[]): void {
  if (v.ok) throw new Error(`expected ${reason}, got ok for ${v.id.id}`);
  expect(v.reason).toBe(reason);
  for (const f of fragments) expect(v.message).toContain(f);
  expect(v.message).not.toMatch(/[\r\n]/);
}

describe('verifyX509Svid: accepted', () => {
  it('a leaf signed by the root of its trust domain', () => {
    const v = verify('valid');
    expectOk(v, `spiffe://${A}/workload`);
    if (v.ok) expect(v.id).toMatchObject({ trustDomain: A, path: '/workload' });
  });

  it('a leaf of a federated trust domain, checked against that domain bundle', () => {
    expectOk(verify('validB'), `spiffe://${B}/workload`);
  });

  it('a leaf with DNS SANs besides its SPIFFE ID', () => {
    expectOk(verify('withDns'), `spiffe://${A}/dns`);
  });

  it('a leaf signed by an intermediate the peer presents', () => {
    expectOk(verify('viaIntermediate'), `spiffe://${A}/nested`);
  });

  it('a chain with the root itself, another domain CA and duplicates among the intermediates', () => {
    const [leaf, inter] = svids['viaIntermediate']!.chainDer;
    const chain = [leaf!, caB.der, caA.der, inter!, inter!];
    expectOk(verifyX509Svid(chain, bundles), `spiffe://${A}/nested`);
  });

  it('an expired leaf when checked at an instant inside its validity', () => {
    expectOk(verify('expired', { at: new Date(svids['expired']!.notAfter.getTime() - 60_000) }), `spiffe://${A}/old`);
  });

  it('a bundle with several CAs, the signer not first', () => {
    const set = new BundleSet([new X509Bundle(A, [caB.der, caOld.der, caA.der])]);
    expectOk(verifyX509Svid(svids['valid']!.chainDer, set), `spiffe://${A}/workload`);
  });
});

describe('verifyX509Svid: refused', () => {
  it('no certificate', () => {
    expectRefused(verifyX509Svid([], bundles), 'no_certificate', 'no certificate');
  });

  it('garbage bytes as the leaf', () => {
    expectRefused(verifyX509Svid([Buffer.from('not a certificate')], bundles), 'malformed_certificate', 'leaf certificate cannot be parsed');
  });

  it('garbage bytes as an intermediate, naming the claimed ID', () => {
    const v = verifyX509Svid([svids['valid']!.chainDer[0]!, Buffer.from([0x30, 0x03, 1, 2, 3])], bundles);
    expectRefused(v, 'malformed_certificate', `spiffe://${A}/workload`, 'certificate 2 of the presented chain');
    expect(v.ok || v.id).toBe(`spiffe://${A}/workload`);
  });

  it('no URI SAN', () => {
    expectRefused(verify('noUri'), 'no_uri_san', 'no URI SAN');
  });

  it('two URI SANs', () => {
    expectRefused(verify('twoUris'), 'multiple_uri_sans', '2 URI SANs', `spiffe://${A}/one`, `spiffe://${A}/two`);
  });

  it('a SPIFFE URI plus a non-SPIFFE URI', () => {
    expectRefused(verify('spiffeAndHttps'), 'multiple_uri_sans', 'https://cluster-a.example/x');
  });

  it('a non-SPIFFE URI as the only URI SAN', () => {
    const v = verify('httpsOnly');
    expectRefused(v, 'bad_spiffe_id', 'not a SPIFFE ID', 'scheme is missing or invalid');
    expect(v.ok || v.id).toBe('https://cluster-a.example/x');
  });

  it('a malformed SPIFFE ID', () => {
    expectRefused(verify('badSpiffe'), 'bad_spiffe_id', `spiffe://${A}/a//b`, 'empty segments');
  });

  it('a CA certificate as the leaf', () => {
    expectRefused(verify('caLeaf'), 'leaf_is_ca', `spiffe://${A}/ca`, 'is a CA');
  });

  it('a leaf without key usage', () => {
    expectRefused(verifyX509Svid([leafWithoutKeyUsage], bundles), 'leaf_key_usage', `spiffe://${A}/noku`, 'no key usage');
  });

  it('a leaf key usage that is not critical', () => {
    expectRefused(verify('kuNotCritical'), 'leaf_key_usage', 'not marked critical');
  });

  it('a leaf key usage without digitalSignature', () => {
    expectRefused(verify('kuNoDigitalSignature'), 'leaf_key_usage', 'lacks digitalSignature');
  });

  it('a leaf key usage with keyCertSign', () => {
    expectRefused(verify('kuCertSign'), 'leaf_key_usage', 'keyCertSign');
  });

  it('a leaf key usage with cRLSign', () => {
    expectRefused(verify('kuCrlSign'), 'leaf_key_usage', 'cRLSign');
  });

  it('an expired leaf', () => {
    const v = verify('expired');
    expectRefused(v, 'expired', `spiffe://${A}/old`, 'leaf certificate expired at', svids['expired']!.notAfter.toISOString());
    expect(v.ok || v.id).toBe(`spiffe://${A}/old`);
  });

  it('a leaf not yet valid', () => {
    expectRefused(verify('future'), 'not_yet_valid', `spiffe://${A}/new`, 'leaf certificate is not valid before');
  });

  it('a valid leaf checked at an instant after or before its validity', () => {
    const { notAfter } = svids['valid']!;
    const later = new Date(notAfter.getTime() + 1000);
    expectRefused(verify('valid', { at: later }), 'expired', `checked at ${later.toISOString()}`);
    expectRefused(verify('valid', { at: new Date(Date.now() - DAY) }), 'not_yet_valid', 'leaf certificate');
  });

  it('an expired intermediate', () => {
    expectRefused(verify('viaExpired'), 'expired', 'intermediate "', 'expired at');
  });

  it('an expired root CA of the bundle', () => {
    expectRefused(verify('underExpiredRoot'), 'expired', `bundle certificate "${caOld.cert.subject}" of trust domain ${OLD} expired at`);
  });

  it('an intermediate without keyCertSign', () => {
    expectRefused(verify('viaNoCertSign'), 'ca_key_usage', 'intermediate "', 'lacks keyCertSign');
  });

  it('an intermediate that is not a CA', () => {
    expectRefused(verify('viaNotCa'), 'ca_key_usage', 'intermediate "', 'is not a CA');
  });

  it('a bundle CA that is not a CA', () => {
    // The leaf signed by a non-CA "intermediate" becomes trusted only through that certificate.
    const [leaf, notCa] = svids['viaNotCa']!.chainDer;
    const set = new BundleSet([new X509Bundle(A, [notCa!])]);
    expectRefused(verifyX509Svid([leaf!], set), 'ca_key_usage', `of trust domain ${A}`, 'is not a CA');
  });

  it('an intermediate the peer did not present', () => {
    expectRefused(verify('intermediateNotSent'), 'untrusted_chain', `chain is not signed by a CA of trust domain ${A}`);
  });

  it('a leaf claiming one trust domain signed by the CA of another', () => {
    const v = verify('claimsBSignedByA');
    expectRefused(v, 'untrusted_chain', `spiffe://${B}/impostor`, `chain is not signed by a CA of trust domain ${B}`, `root ${A}`);
    expect(v.ok || v.id).toBe(`spiffe://${B}/impostor`);
  });

  it('the same, with the other domain root presented as an intermediate', () => {
    const chain = [...svids['claimsBSignedByA']!.chainDer, caA.der];
    expectRefused(verifyX509Svid(chain, bundles), 'untrusted_chain', `trust domain ${B}`);
  });

  it('no bundle for the leaf trust domain', () => {
    expectRefused(verify('unknownDomain'), 'no_bundle', 'spiffe://cluster-c.example/x', 'no trust bundle for trust domain cluster-c.example');
  });
});

describe('authorizers', () => {
  it('authorizeAny allows every verified ID', () => {
    expectOk(verify('valid', { authorizer: authorizeAny() }), `spiffe://${A}/workload`);
  });

  it('authorizeId allows that ID and refuses another', () => {
    expectOk(verify('valid', { authorizer: authorizeId(`spiffe://${A}/workload`) }), `spiffe://${A}/workload`);
    expectRefused(
      verify('valid', { authorizer: authorizeId(`spiffe://${A}/other`) }),
      'unauthorized',
      `spiffe://${A}/workload is not spiffe://${A}/other`,
    );
  });

  it('authorizeOneOf allows listed IDs and refuses others', () => {
    const authorizer = authorizeOneOf(`spiffe://${A}/dns`, `spiffe://${A}/workload`);
    expectOk(verify('valid', { authorizer }), `spiffe://${A}/workload`);
    expectRefused(verify('validB', { authorizer }), 'unauthorized', `spiffe://${B}/workload is not one of spiffe://${A}/dns, spiffe://${A}/workload`);
  });

  it('authorizeMemberOf allows members of the trust domains and refuses others', () => {
    expectOk(verify('validB', { authorizer: authorizeMemberOf(A, `spiffe://${B}`) }), `spiffe://${B}/workload`);
    const v = verify('validB', { authorizer: authorizeMemberOf(A) });
    expectRefused(v, 'unauthorized', `spiffe://${B}/workload is not in trust domain(s) ${A}`);
    expect(v.ok || v.id).toBe(`spiffe://${B}/workload`);
  });

  it('runs only on a verified SVID', () => {
    let called = false;
    const v = verify('expired', { authorizer: () => ((called = true), undefined) });
    expectRefused(v, 'expired');
    expect(called).toBe(false);
  });

  it('a throwing authorizer refuses', () => {
    const authorizer: Authorizer = () => {
      throw new Error('policy store down');
    };
    expectRefused(verify('valid', { authorizer }), 'unauthorized', 'authorizer failed: policy store down');
  });

  it('validate their inputs when built', () => {
    expect(() => authorizeId('spiffe://A/x')).toThrow('invalid SPIFFE ID');
    expect(() => authorizeOneOf(`spiffe://${A}/ok`, 'spiffe://td/a/')).toThrow('trailing slash');
    expect(() => authorizeOneOf()).toThrow('at least one');
    expect(() => authorizeMemberOf('spiffe://td/path')).toThrow('a trust domain has no path');
    expect(() => authorizeMemberOf('Upper.example')).toThrow('invalid trust domain');
    expect(() => authorizeMemberOf()).toThrow('at least one');
  });

  it('keep long allow-lists to one short line', () => {
    const ids = Array.from({ length: 20 }, (_, i) => `spiffe://${A}/w${i}`);
    const reason = authorizeOneOf(...ids)(parseSpiffeId(`spiffe://${B}/x`));
    expect(reason).toContain('and 15 more');
  });
});

describe('spiffeIdOfCertificate', () => {
  it('reads the single SPIFFE ID', () => {
    expect(spiffeIdOfCertificate(svids['valid']!.chainDer[0]!)).toBe(`spiffe://${A}/workload`);
    expect(spiffeIdOfCertificate(caA.der)).toBe(`spiffe://${A}`);
  });

  it('is undefined without exactly one valid SPIFFE ID URI SAN or for garbage', () => {
    expect(spiffeIdOfCertificate(svids['twoUris']!.chainDer[0]!)).toBeUndefined();
    expect(spiffeIdOfCertificate(svids['noUri']!.chainDer[0]!)).toBeUndefined();
    expect(spiffeIdOfCertificate(svids['httpsOnly']!.chainDer[0]!)).toBeUndefined();
    expect(spiffeIdOfCertificate(Buffer.from('garbage'))).toBeUndefined();
  });
});

describe('limits and extension rules', () => {
  let root: MintedSvid;
  let criticalUnknown: MintedSvid;
  let nonCriticalUnknown: MintedSvid;

  beforeAll(async () => {
    [root, criticalUnknown, nonCriticalUnknown] = await Promise.all([
      mintSvid(caA, { uris: [`spiffe://${A}`] }),
      mintSvid(caA, { uris: [`spiffe://${A}/x`], extraExtensions: [new x509.Extension('1.3.6.1.4.1.99999.1', true, new Uint8Array([5, 0]))] }),
      mintSvid(caA, { uris: [`spiffe://${A}/x`], extraExtensions: [new x509.Extension('1.3.6.1.4.1.99999.1', false, new Uint8Array([5, 0]))] }),
    ]);
  });

  it('refuses a leaf whose SPIFFE ID is the trust domain itself (no path)', () => {
    const v = verifyX509Svid(root.chainDer, bundles);
    expect(v).toMatchObject({ ok: false, reason: 'bad_spiffe_id' });
    expect(!v.ok && v.message).toMatch(/no path/);
  });

  it('refuses a critical extension it does not process, and ignores a non-critical one', () => {
    const v = verifyX509Svid(criticalUnknown.chainDer, bundles);
    expect(v).toMatchObject({ ok: false, reason: 'malformed_certificate' });
    expect(!v.ok && v.message).toMatch(/critical extension .*1\.3\.6\.1\.4\.1\.99999\.1/);
    expect(verifyX509Svid(nonCriticalUnknown.chainDer, bundles).ok).toBe(true);
  });

  it('refuses an overlong chain before parsing any of it', () => {
    const garbage = Buffer.alloc(100, 0x30);
    const v = verifyX509Svid([svids['valid']!.chainDer[0]!, ...Array.from({ length: 20 }, () => garbage)], bundles);
    expect(v).toMatchObject({ ok: false, reason: 'malformed_certificate' });
    expect(!v.ok && v.message).toMatch(/21 certificates; an X\.509-SVID chain has at most 10/);
    const big = verifyX509Svid([svids['valid']!.chainDer[0]!, Buffer.alloc(70_000, 0x30)], bundles);
    expect(!big.ok && big.message).toMatch(/bytes of certificates/);
  });
});
