// X.509-SVID verification as the SPIFFE X.509-SVID standard defines it. It runs inside TLS
// handshake hooks, which are synchronous, so signatures are checked with node:crypto rather than
// WebCrypto; @peculiar/x509 is used only to read extensions, which node:crypto does not expose.
// Every refusal carries a code for metrics and a one-line message for the operator who has to find
// which certificate is wrong and why.

import { X509Certificate, type KeyObject } from 'node:crypto';
import type { Authorizer } from './authorizer.js';
import { parseSpiffeId, type SpiffeId } from './spiffe-id.js';
import type { BundleSource, X509Bundle } from './x509-bundle.js';
import { x509 } from './x509.js';

export type RefusalReason =
  | 'no_certificate'
  | 'no_uri_san'
  | 'multiple_uri_sans'
  | 'bad_spiffe_id'
  | 'leaf_is_ca'
  | 'leaf_key_usage'
  | 'ca_key_usage'
  | 'expired'
  | 'not_yet_valid'
  | 'no_bundle'
  | 'untrusted_chain'
  | 'unauthorized'
  | 'malformed_certificate';

export type SvidVerdict =
  | { ok: true; id: SpiffeId }
  | { ok: false; reason: RefusalReason; message: string; /** The claimed ID when one was readable. */ id?: string };

export interface VerifyOptions {
  /** The instant validity is checked at (default: now). */
  at?: Date;
  /** Policy applied once the SVID is verified. */
  authorizer?: Authorizer;
}

/**
 * Peers present leaf + intermediates; a longer path than this is either a misconfiguration or an
 * attempt to make us loop, and SPIRE deployments rarely nest more than two or three CAs.
 */
const MAX_PATH_DEPTH = 8;
/**
 * Checked before anything is parsed: verification runs on the event loop of a server that has
 * not authenticated the peer yet, and parsing one unseen certificate costs ~2 ms here, so an
 * unbounded chain (a TLS certificate list holds ~190 small ones) is a cheap way to stall a node.
 */
const MAX_CHAIN_CERTS = MAX_PATH_DEPTH + 2;
const MAX_CHAIN_BYTES = 64 * 1024;
const CACHE_SIZE = 256;

/**
 * Extensions this verifier understands. RFC 5280 says a certificate with a critical extension
 * the verifier does not process must be rejected; name constraints are among those (as in
 * go-spiffe, which refuses what Go's path validation refuses).
 */
const KNOWN_EXTENSIONS = new Set([
  '2.5.29.19', // basicConstraints
  '2.5.29.15', // keyUsage
  '2.5.29.17', // subjectAltName
  '2.5.29.37', // extKeyUsage
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.35', // authorityKeyIdentifier
]);

const KU = x509.KeyUsageFlags;

interface ParsedCert {
  readonly node: X509Certificate;
  readonly publicKey: KeyObject;
  /** node:crypto's multi-line forms, compared to match a certificate with its issuer. */
  readonly subject: string;
  readonly issuer: string;
  /** One-line forms for messages. */
  readonly subjectText: string;
  readonly issuerText: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Undefined when the certificate has no basicConstraints extension. */
  readonly basicConstraints: { ca: boolean; pathLength: number | undefined } | undefined;
  readonly keyUsage: { flags: number; critical: boolean } | undefined;
  readonly uriSans: readonly string[];
  /** Issuers whose signature over this certificate already checked out (a handshake repeats them). */
  readonly verifiedIssuers: WeakSet<X509Certificate>;
}

// LRU by insertion order: a hit is re-inserted, so the CAs every handshake touches stay while
// one-off leaves age out.
const cache = new Map<string, ParsedCert>();

function parseCertificate(der: Uint8Array): ParsedCert {
  const key = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('latin1');
  const hit = cache.get(key);
  if (hit) {
    cache.delete(key);
    cache.set(key, hit);
    return hit;
  }
  const node = new X509Certificate(der);
  const px = new x509.X509Certificate(der);
  // RFC 5280 allows one instance of an extension; with two, which one a checker reads decides
  // what it sees, so such a certificate is refused rather than interpreted.
  for (const [ext, name] of [
    [x509.BasicConstraintsExtension, 'basicConstraints'],
    [x509.KeyUsagesExtension, 'keyUsage'],
    [x509.SubjectAlternativeNameExtension, 'subjectAltName'],
  ] as const) {
    const n = px.getExtensions<x509.Extension>(ext).length;
    if (n > 1) throw new Error(`certificate has ${n} ${name} extensions`);
  }
  for (const ext of px.extensions) {
    if (ext.critical && !KNOWN_EXTENSIONS.has(ext.type)) throw new Error(`certificate has a critical extension this verifier does not process (${ext.type})`);
  }
  const bc = px.getExtension(x509.BasicConstraintsExtension);
  const ku = px.getExtension(x509.KeyUsagesExtension);
  const san = px.getExtension(x509.SubjectAlternativeNameExtension);
  const parsed: ParsedCert = {
    node,
    publicKey: node.publicKey,
    subject: node.subject,
    issuer: node.issuer,
    subjectText: oneLine(px.subject, 160),
    issuerText: oneLine(px.issuer, 160),
    notBefore: px.notBefore,
    notAfter: px.notAfter,
    basicConstraints: bc ? { ca: bc.ca, pathLength: bc.pathLength } : undefined,
    keyUsage: ku ? { flags: ku.usages, critical: ku.critical } : undefined,
    uriSans: san ? san.names.items.filter((n) => n.type === 'url').map((n) => n.value) : [],
    verifiedIssuers: new WeakSet(),
  };
  cache.set(key, parsed);
  if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return parsed;
}

/** The certificate's single SPIFFE ID URI SAN, without verifying anything: for display only. */
export function spiffeIdOfCertificate(der: Uint8Array): string | undefined {
  let cert: ParsedCert;
  try {
    cert = parseCertificate(der);
  } catch {
    return undefined;
  }
  const [uri, ...more] = cert.uriSans;
  if (uri === undefined || more.length > 0) return undefined;
  try {
    return parseSpiffeId(uri).id;
  } catch {
    return undefined;
  }
}

/**
 * Verifies a peer's X.509-SVID chain (leaf first, then whatever intermediates it presented)
 * against the bundle of the trust domain its SPIFFE ID names, then applies the authorizer.
 */
export function verifyX509Svid(chainDer: readonly Buffer[], bundles: BundleSource, opts: VerifyOptions = {}): SvidVerdict {
  if (chainDer.length === 0) return refuse('no_certificate', 'peer presented no certificate');
  if (chainDer.length > MAX_CHAIN_CERTS) {
    return refuse('malformed_certificate', `peer presented ${chainDer.length} certificates; an X.509-SVID chain has at most ${MAX_CHAIN_CERTS}`);
  }
  const bytes = chainDer.reduce((n, d) => n + d.length, 0);
  if (bytes > MAX_CHAIN_BYTES) return refuse('malformed_certificate', `peer presented ${bytes} bytes of certificates; at most ${MAX_CHAIN_BYTES} are read`);
  const chain: ParsedCert[] = [];
  for (const [i, der] of chainDer.entries()) {
    try {
      chain.push(parseCertificate(der));
    } catch (err) {
      const what = i === 0 ? 'leaf certificate' : `certificate ${i + 1} of the presented chain`;
      const claimed = chain[0]?.uriSans.length === 1 ? chain[0].uriSans[0] : undefined;
      const whose = claimed === undefined ? '' : `${oneLine(claimed)}: `;
      return refuse('malformed_certificate', `${whose}${what} cannot be parsed: ${oneLine((err as Error).message)}`, claimed);
    }
  }
  const leaf = chain[0]!;

  const [uri, ...moreUris] = leaf.uriSans;
  if (uri === undefined) return refuse('no_uri_san', 'leaf certificate has no URI SAN, so it carries no SPIFFE ID');
  if (moreUris.length > 0) {
    const list = leaf.uriSans.map((u) => oneLine(u, 100)).join(', ');
    return refuse(
      'multiple_uri_sans',
      `leaf certificate has ${leaf.uriSans.length} URI SANs (${oneLine(list)}); an X.509-SVID carries exactly one SPIFFE ID`,
    );
  }
  let id: SpiffeId;
  try {
    id = parseSpiffeId(uri);
  } catch (err) {
    return refuse('bad_spiffe_id', `leaf certificate's URI SAN is not a SPIFFE ID: ${oneLine((err as Error).message)}`, uri);
  }
  const fail = (reason: RefusalReason, problem: string): SvidVerdict => refuse(reason, `${id.id}: ${problem}`, id.id);
  // X.509-SVID §5.2: the ID of a trust domain itself names no workload.
  if (id.path === '') return fail('bad_spiffe_id', 'a leaf SVID must name a workload: its SPIFFE ID has no path');

  if (leaf.basicConstraints?.ca === true) return fail('leaf_is_ca', 'leaf certificate is a CA (basicConstraints CA=true)');
  const leafKu = leafKeyUsageProblem(leaf);
  if (leafKu) return fail('leaf_key_usage', leafKu);
  const at = opts.at ?? new Date();
  const leafValidity = validityProblem(leaf, at, 'leaf certificate');
  if (leafValidity) return fail(leafValidity[0], leafValidity[1]);

  const bundle = bundles.bundleFor(id.trustDomain);
  if (!bundle || bundle.certs.length === 0) return fail('no_bundle', `no trust bundle for trust domain ${id.trustDomain}`);
  const anchors = anchorsOf(bundle);

  // Walk up from the leaf. At each step a CA of the bundle ends the walk; otherwise a presented
  // intermediate takes the next step. Among several certificates that signed the current one, the
  // first that passes its checks wins, and when none does the first failure is what the operator
  // sees: that is the certificate the peer most likely meant.
  const used = new Set<ParsedCert>([leaf]);
  let current = leaf;
  for (let intermediates = 0; intermediates < MAX_PATH_DEPTH; intermediates++) {
    let failure: [RefusalReason, string] | undefined;
    for (const anchor of anchors) {
      if (!signedBy(current, anchor)) continue;
      const what = `bundle certificate "${anchor.subjectText}" of trust domain ${id.trustDomain}`;
      const problem = caProblem(anchor, what, intermediates, false) ?? validityProblem(anchor, at, what);
      if (!problem) return authorize(id, opts.authorizer);
      failure ??= problem;
    }
    let next: ParsedCert | undefined;
    for (const cand of chain) {
      if (used.has(cand) || !signedBy(current, cand)) continue;
      const what = `intermediate "${cand.subjectText}"`;
      const problem = caProblem(cand, what, intermediates, true) ?? validityProblem(cand, at, what);
      if (!problem) {
        next = cand;
        break;
      }
      failure ??= problem;
    }
    if (failure && !next) return fail(failure[0], failure[1]);
    if (!next) {
      const top = current === leaf ? 'the leaf' : `"${current.subjectText}"`;
      return fail(
        'untrusted_chain',
        `chain is not signed by a CA of trust domain ${id.trustDomain} (${top} was issued by "${current.issuerText}", which is neither in the bundle nor among the presented intermediates)`,
      );
    }
    used.add(next);
    current = next;
  }
  return fail('untrusted_chain', `no CA of trust domain ${id.trustDomain} within ${MAX_PATH_DEPTH} intermediates`);
}

function authorize(id: SpiffeId, authorizer: Authorizer | undefined): SvidVerdict {
  if (!authorizer) return { ok: true, id };
  let reason: string | undefined;
  try {
    reason = authorizer(id);
  } catch (err) {
    // A policy that cannot decide must not let the peer in.
    reason = `${id.id}: authorizer failed: ${(err as Error).message}`;
  }
  return reason === undefined ? { ok: true, id } : refuse('unauthorized', oneLine(reason), id.id);
}

// Bundles are long-lived and their certificates are in the cache, so this only costs map lookups.
// A bundle certificate @peculiar/x509 cannot read cannot anchor anything; the chain then fails as
// untrusted, which is the safe outcome.
function anchorsOf(bundle: X509Bundle): ParsedCert[] {
  const out: ParsedCert[] = [];
  for (const der of bundle.certs) {
    try {
      out.push(parseCertificate(der));
    } catch {
      continue;
    }
  }
  return out;
}

function signedBy(child: ParsedCert, issuer: ParsedCert): boolean {
  if (child.verifiedIssuers.has(issuer.node)) return true;
  // Name match first to skip signature checks against unrelated CAs. checkIssued is only the
  // fallback because OpenSSL's version also rejects issuers without keyCertSign, which would turn
  // "your intermediate lacks keyCertSign" into a vague "untrusted chain".
  if (child.issuer !== issuer.subject && !child.node.checkIssued(issuer.node)) return false;
  let ok: boolean;
  try {
    ok = child.node.verify(issuer.publicKey);
  } catch {
    ok = false;
  }
  if (ok) child.verifiedIssuers.add(issuer.node);
  return ok;
}

function leafKeyUsageProblem(leaf: ParsedCert): string | undefined {
  const ku = leaf.keyUsage;
  if (!ku) return 'leaf certificate has no key usage extension (an X.509-SVID needs a critical one with digitalSignature)';
  if (!ku.critical) return 'leaf certificate key usage extension is not marked critical';
  if (!(ku.flags & KU.digitalSignature)) return 'leaf certificate key usage lacks digitalSignature';
  if (ku.flags & KU.keyCertSign) return 'leaf certificate key usage has keyCertSign, which only a CA may have';
  if (ku.flags & KU.cRLSign) return 'leaf certificate key usage has cRLSign, which only a CA may have';
  return undefined;
}

/**
 * CA rules for a certificate that signed part of the path. `below` is how many intermediates sit
 * between it and the leaf, for its pathLenConstraint. Intermediates must carry key usage with
 * keyCertSign; for a bundle CA the standard asks it only when key usage is present.
 */
function caProblem(ca: ParsedCert, what: string, below: number, mustHaveKeyUsage: boolean): [RefusalReason, string] | undefined {
  if (ca.basicConstraints?.ca !== true) return ['ca_key_usage', `${what} is not a CA (basicConstraints CA is not true)`];
  if (!ca.keyUsage) {
    if (mustHaveKeyUsage) return ['ca_key_usage', `${what} has no key usage extension (a CA needs keyCertSign)`];
  } else if (!(ca.keyUsage.flags & KU.keyCertSign)) {
    return ['ca_key_usage', `${what} key usage lacks keyCertSign`];
  }
  const maxBelow = ca.basicConstraints.pathLength;
  if (maxBelow !== undefined && below > maxBelow) {
    return ['untrusted_chain', `${what} allows ${maxBelow} intermediate(s) below it (pathLenConstraint) but the path has ${below}`];
  }
  return undefined;
}

function validityProblem(cert: ParsedCert, at: Date, what: string): [RefusalReason, string] | undefined {
  const t = at.getTime();
  if (t > cert.notAfter.getTime()) {
    return ['expired', `${what} expired at ${cert.notAfter.toISOString()} (checked at ${at.toISOString()})`];
  }
  if (t < cert.notBefore.getTime()) {
    return ['not_yet_valid', `${what} is not valid before ${cert.notBefore.toISOString()} (checked at ${at.toISOString()})`];
  }
  return undefined;
}

function refuse(reason: RefusalReason, message: string, id?: string): SvidVerdict {
  return id === undefined ? { ok: false, reason, message } : { ok: false, reason, message, id };
}

/** Certificate fields are peer-controlled: keep them to one bounded line in logs. */
function oneLine(s: string, max = 300): string {
  const flat = s.replace(/\p{Cc}+/gu, ' ');
  return flat.length > max ? `${flat.slice(0, max - 3)}...` : flat;
}
