// SPIFFE ID parsing against the SPIFFE ID standard: each rule accepted or refused with a reason an
// operator can act on.

import { describe, expect, it } from 'vitest';
import {
  MAX_SPIFFE_ID_LENGTH,
  MAX_TRUST_DOMAIN_LENGTH,
  SpiffeIdError,
  TrustDomainError,
  parseSpiffeId,
  parseTrustDomain,
  spiffeIdProblem,
  trustDomainId,
} from '../identity/spiffe-id.js';

function reasonOf(input: string): string {
  try {
    parseSpiffeId(input);
  } catch (err) {
    expect(err).toBeInstanceOf(SpiffeIdError);
    return (err as SpiffeIdError).reason;
  }
  throw new Error(`${input} unexpectedly parsed`);
}

describe('parseSpiffeId: valid IDs', () => {
  it.each([
    ['spiffe://example.org', 'example.org', ''],
    ['spiffe://cluster-a.example/ns/default/sa/slim', 'cluster-a.example', '/ns/default/sa/slim'],
    ['spiffe://td_1-x.y/Path.With-Mixed_Case09', 'td_1-x.y', '/Path.With-Mixed_Case09'],
    ['spiffe://td/a/...', 'td', '/a/...'],
    ['spiffe://td/.hidden/a.b', 'td', '/.hidden/a.b'],
    ['spiffe://123/4', '123', '/4'],
  ])('%s', (input, trustDomain, path) => {
    const id = parseSpiffeId(input);
    expect(id).toEqual({ trustDomain, path, id: input });
    expect(Object.isFrozen(id)).toBe(true);
    expect(spiffeIdProblem(input)).toBeUndefined();
  });

  it('accepts a trust domain of exactly the maximum length', () => {
    const td = 'a'.repeat(MAX_TRUST_DOMAIN_LENGTH);
    expect(parseSpiffeId(`spiffe://${td}/x`).trustDomain).toBe(td);
  });

  it('accepts an ID of exactly the maximum byte length', () => {
    const prefix = 'spiffe://td/';
    const input = prefix + 'p'.repeat(MAX_SPIFFE_ID_LENGTH - prefix.length);
    expect(Buffer.byteLength(input)).toBe(MAX_SPIFFE_ID_LENGTH);
    expect(parseSpiffeId(input).id).toBe(input);
  });
});

describe('parseSpiffeId: refusals', () => {
  it.each([
    ['empty', '', 'SPIFFE ID is empty'],
    ['wrong scheme', 'https://td/x', 'scheme is missing or invalid'],
    ['uppercase scheme', 'SPIFFE://td/x', 'scheme is missing or invalid'],
    ['mixed-case scheme', 'Spiffe://td/x', 'scheme is missing or invalid'],
    ['missing scheme', 'td/x', 'scheme is missing or invalid'],
    ['scheme without slashes', 'spiffe:td/x', 'scheme is missing or invalid'],
    ['empty trust domain', 'spiffe://', 'trust domain is missing'],
    ['empty trust domain with path', 'spiffe:///x', 'trust domain is missing'],
    ['uppercase trust domain', 'spiffe://Example.org/x', 'trust domain characters are limited'],
    ['port', 'spiffe://td:8443/x', 'trust domain cannot contain a port'],
    ['userinfo', 'spiffe://user@td/x', 'trust domain cannot contain userinfo'],
    ['bad trust domain char', 'spiffe://t%64/x', 'trust domain characters are limited'],
    ['space in trust domain', 'spiffe://t d/x', 'trust domain characters are limited'],
    ['query after trust domain', 'spiffe://td?x=1', 'cannot contain a query'],
    ['query in path', 'spiffe://td/x?y=1', 'cannot contain a query'],
    ['fragment after trust domain', 'spiffe://td#f', 'cannot contain a fragment'],
    ['fragment in path', 'spiffe://td/x#f', 'cannot contain a fragment'],
    ['percent-encoding', 'spiffe://td/a%20b', 'percent-encoded'],
    ['empty segment', 'spiffe://td/a//b', 'empty segments'],
    ['trailing slash', 'spiffe://td/a/', 'trailing slash'],
    ['bare trailing slash', 'spiffe://td/', 'trailing slash'],
    ['dot segment', 'spiffe://td/a/./b', 'dot segments'],
    ['dot-dot segment', 'spiffe://td/a/../b', 'dot segments'],
    ['final dot segment', 'spiffe://td/a/.', 'dot segments'],
    ['final dot-dot segment', 'spiffe://td/..', 'dot segments'],
    ['space in path', 'spiffe://td/a b', 'path segment characters are limited'],
    ['colon in path', 'spiffe://td/a:b', 'path segment characters are limited'],
    ['tilde in path', 'spiffe://td/~a', 'path segment characters are limited'],
    ['non-ASCII path', 'spiffe://td/caf\u00e9', 'path segment characters are limited'],
  ])('%s: %s', (_what, input, reason) => {
    expect(reasonOf(input)).toContain(reason);
    expect(spiffeIdProblem(input)).toContain(reason);
  });

  it('refuses a trust domain longer than 255 characters', () => {
    const td = 'a'.repeat(MAX_TRUST_DOMAIN_LENGTH + 1);
    expect(reasonOf(`spiffe://${td}/x`)).toBe('trust domain is longer than 255 characters');
  });

  it('refuses an ID longer than 2048 bytes, counting bytes rather than characters', () => {
    const prefix = 'spiffe://td/';
    expect(reasonOf(prefix + 'p'.repeat(MAX_SPIFFE_ID_LENGTH - prefix.length + 1))).toBe('SPIFFE ID is longer than 2048 bytes');
    // 1024 two-byte characters: 2048 bytes of them alone, under 2048 characters in all.
    const multiByte = prefix + '\u00e9'.repeat(1024);
    expect(multiByte.length).toBeLessThan(MAX_SPIFFE_ID_LENGTH);
    expect(reasonOf(multiByte)).toBe('SPIFFE ID is longer than 2048 bytes');
  });

  it('names the input in the error message, shortened when long', () => {
    expect(() => parseSpiffeId('spiffe://td/a//b')).toThrow('invalid SPIFFE ID "spiffe://td/a//b": path cannot contain empty segments');
    const long = `spiffe://td/${'x'.repeat(300)}?q`;
    const err = (() => {
      try {
        parseSpiffeId(long);
      } catch (e) {
        return e as SpiffeIdError;
      }
      throw new Error('parsed');
    })();
    expect(err.input).toBe(long);
    expect(err.message.length).toBeLessThan(200);
    expect(err.message).toContain('...');
  });
});

describe('parseTrustDomain', () => {
  it.each([
    ['cluster-a.example', 'cluster-a.example'],
    ['spiffe://cluster-a.example', 'cluster-a.example'],
    ['td_1', 'td_1'],
  ])('%s', (input, td) => {
    expect(parseTrustDomain(input)).toBe(td);
  });

  it.each([
    ['empty', '', 'trust domain is missing'],
    ['uppercase', 'Cluster-A.example', 'trust domain characters are limited'],
    ['port', 'td:443', 'trust domain cannot contain a port'],
    ['userinfo', 'me@td', 'trust domain cannot contain userinfo'],
    ['slash in bare form', 'td/x', 'trust domain characters are limited'],
    ['too long', 'a'.repeat(MAX_TRUST_DOMAIN_LENGTH + 1), 'longer than 255 characters'],
    ['SPIFFE ID with a path', 'spiffe://td/workload', 'a trust domain has no path'],
    ['empty SPIFFE ID form', 'spiffe://', 'trust domain is missing'],
    ['other scheme', 'https://td', 'scheme is missing or invalid'],
    ['uppercase scheme', 'SPIFFE://td', 'scheme is missing or invalid'],
    ['SPIFFE ID form with a port', 'spiffe://td:8443', 'trust domain cannot contain a port'],
  ])('refuses %s', (_what, input, reason) => {
    let err: unknown;
    try {
      parseTrustDomain(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TrustDomainError);
    expect((err as TrustDomainError).reason).toContain(reason);
    expect((err as TrustDomainError).message).toContain(`invalid trust domain "${input.slice(0, 117)}`);
  });

  it('round-trips through trustDomainId', () => {
    expect(trustDomainId('cluster-a.example')).toBe('spiffe://cluster-a.example');
    expect(parseTrustDomain(trustDomainId('cluster-a.example'))).toBe('cluster-a.example');
  });
});

describe('parseTrustDomain with a mangled scheme', () => {
  it('says how to write it instead of blaming a port', () => {
    expect(() => parseTrustDomain('spiffe:/cluster-a.example')).toThrow(/write a trust domain bare \(example\.org\) or as spiffe:\/\/example\.org/);
    expect(parseTrustDomain('cluster-a.example')).toBe('cluster-a.example');
  });
});
