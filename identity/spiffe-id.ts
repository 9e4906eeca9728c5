// SPIFFE IDs and trust domains, parsed exactly as the SPIFFE ID standard defines them
// (spiffe://trust-domain/path). Every error names what is wrong, because these strings come from
// config files and certificates that an operator has to fix.

const SCHEME = 'spiffe://';
/** The standard caps a SPIFFE ID at 2048 bytes and a trust domain at 255 characters. */
export const MAX_SPIFFE_ID_LENGTH = 2048;
export const MAX_TRUST_DOMAIN_LENGTH = 255;

export class SpiffeIdError extends Error {
  constructor(
    readonly input: string,
    readonly reason: string,
  ) {
    super(`invalid SPIFFE ID ${JSON.stringify(input.length > 120 ? `${input.slice(0, 117)}...` : input)}: ${reason}`);
    this.name = 'SpiffeIdError';
  }
}

export class TrustDomainError extends Error {
  constructor(
    readonly input: string,
    readonly reason: string,
  ) {
    super(`invalid trust domain ${JSON.stringify(input.length > 120 ? `${input.slice(0, 117)}...` : input)}: ${reason}`);
    this.name = 'TrustDomainError';
  }
}

export interface SpiffeId {
  /** e.g. `cluster-a.example` */
  readonly trustDomain: string;
  /** `''` or `/seg/seg...` */
  readonly path: string;
  /** The canonical `spiffe://td/path` form. */
  readonly id: string;
}

function isTrustDomainChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x5f;
}

function isPathChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x5f
  );
}

/** Why `td` is not a trust domain name, or undefined when it is one. */
function trustDomainProblem(td: string): string | undefined {
  if (td.length === 0) return 'trust domain is missing';
  if (td.length > MAX_TRUST_DOMAIN_LENGTH) return `trust domain is longer than ${MAX_TRUST_DOMAIN_LENGTH} characters`;
  for (let i = 0; i < td.length; i++) {
    const c = td.charCodeAt(i);
    if (isTrustDomainChar(c)) continue;
    if (c === 0x3a) return 'trust domain cannot contain a port';
    if (c === 0x40) return 'trust domain cannot contain userinfo';
    return 'trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores';
  }
  return undefined;
}

function pathProblem(path: string): string | undefined {
  if (path === '') return undefined;
  if (path[0] !== '/') return 'path must start with a slash';
  let segStart = 1;
  for (let i = 1; i <= path.length; i++) {
    if (i < path.length && path.charCodeAt(i) !== 0x2f) {
      const c = path.charCodeAt(i);
      if (c === 0x3f) return 'SPIFFE ID cannot contain a query';
      if (c === 0x23) return 'SPIFFE ID cannot contain a fragment';
      if (c === 0x25) return 'path cannot contain percent-encoded characters';
      if (!isPathChar(c)) return 'path segment characters are limited to letters, numbers, dots, dashes, and underscores';
      continue;
    }
    const seg = path.slice(segStart, i);
    if (seg === '') return i === path.length ? 'path cannot have a trailing slash' : 'path cannot contain empty segments';
    if (seg === '.' || seg === '..') return 'path cannot contain dot segments';
    segStart = i + 1;
  }
  return undefined;
}

/** Parses `spiffe://td[/path]`; throws SpiffeIdError naming the rule that the input breaks. */
export function parseSpiffeId(input: string): SpiffeId {
  if (input === '') throw new SpiffeIdError(input, 'SPIFFE ID is empty');
  if (Buffer.byteLength(input) > MAX_SPIFFE_ID_LENGTH) {
    throw new SpiffeIdError(input, `SPIFFE ID is longer than ${MAX_SPIFFE_ID_LENGTH} bytes`);
  }
  if (!input.startsWith(SCHEME)) throw new SpiffeIdError(input, 'scheme is missing or invalid (must be "spiffe://")');
  const rest = input.slice(SCHEME.length);
  let end = rest.length;
  for (let i = 0; i < rest.length; i++) {
    const c = rest.charCodeAt(i);
    if (c === 0x2f || c === 0x3f || c === 0x23) {
      end = i;
      break;
    }
  }
  const td = rest.slice(0, end);
  const tail = rest.slice(end);
  if (tail.startsWith('?')) throw new SpiffeIdError(input, 'SPIFFE ID cannot contain a query');
  if (tail.startsWith('#')) throw new SpiffeIdError(input, 'SPIFFE ID cannot contain a fragment');
  const tdProblem = trustDomainProblem(td);
  if (tdProblem) throw new SpiffeIdError(input, tdProblem);
  const pProblem = pathProblem(tail);
  if (pProblem) throw new SpiffeIdError(input, pProblem);
  return Object.freeze({ trustDomain: td, path: tail, id: input });
}

/** Undefined when valid, else the reason. */
export function spiffeIdProblem(input: string): string | undefined {
  try {
    parseSpiffeId(input);
    return undefined;
  } catch (err) {
    return (err as SpiffeIdError).reason;
  }
}

/**
 * A trust domain name, written either bare (`cluster-a.example`, as in node configs) or as its
 * SPIFFE ID (`spiffe://cluster-a.example`, as in the charts' spire.trustedDomains).
 */
export function parseTrustDomain(input: string): string {
  let td = input;
  if (/^spiffe:/i.test(input) && !input.includes('://')) {
    throw new TrustDomainError(input, 'write a trust domain bare (example.org) or as spiffe://example.org');
  }
  if (input.includes('://')) {
    let id: SpiffeId;
    try {
      id = parseSpiffeId(input);
    } catch (err) {
      throw new TrustDomainError(input, (err as SpiffeIdError).reason);
    }
    if (id.path !== '') throw new TrustDomainError(input, 'a trust domain has no path');
    td = id.trustDomain;
  }
  const problem = trustDomainProblem(td);
  if (problem) throw new TrustDomainError(input, problem);
  return td;
}

export function trustDomainId(td: string): string {
  return `${SCHEME}${td}`;
}
