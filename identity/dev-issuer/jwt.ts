// JWT-SVIDs (SPIFFE JWT-SVID standard): ES256 tokens whose `sub` is a SPIFFE ID and whose `aud`
// lists the intended receivers. node:crypto does all of the cryptography (ECDSA P-256 signing and
// verification, JWK export); this file is only the compact JWS encoding around it and the claim
// checks that the standard asks of a validator.

import { createPublicKey, generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { parseSpiffeId } from '../spiffe-id.js';

/** A signing key of one trust domain; `kid` lets validators pick it out of the JWKS. */
export interface JwtKey {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export interface JwtSvidClaims {
  sub: string;
  aud: string[];
  exp: number;
  iat: number;
  [claim: string]: unknown;
}

/** Why a token was refused; the message is what the Workload API answers. */
export class JwtSvidError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JwtSvidError';
  }
}

export function generateJwtKey(): JwtKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  // SPIRE's key ids are 32 random characters; base64url of 24 bytes is exactly that.
  return { kid: randomBytes(24).toString('base64url'), privateKey, publicKey };
}

const b64json = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

export function signJwtSvid(key: JwtKey, claims: JwtSvidClaims): string {
  const input = `${b64json({ alg: 'ES256', kid: key.kid, typ: 'JWT' })}.${b64json(claims)}`;
  // JWS wants r||s (IEEE P1363), not the DER SEQUENCE that node signs by default.
  const signature = sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

/** A JWK of a public key as the SPIFFE bundle and the JWT bundle carry it. */
export interface PublicJwk {
  kty: string;
  crv: string;
  x: string;
  y: string;
  kid?: string;
  use?: string;
  x5c?: string[];
}

export function publicJwk(publicKey: KeyObject): PublicJwk {
  const jwk = publicKey.export({ format: 'jwk' });
  if (jwk.kty !== 'EC' || !jwk.crv || !jwk.x || !jwk.y) throw new Error(`expected an EC public key, got ${jwk.kty ?? 'an unknown key type'}`);
  return { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y };
}

/** The JWKS document of a trust domain's JWT authorities (the Workload API's JWT bundle). */
export function jwks(keys: readonly JwtKey[]): Buffer {
  return Buffer.from(JSON.stringify({ keys: keys.map((k) => ({ ...publicJwk(k.publicKey), kid: k.kid, use: 'jwt-svid' })) }));
}

/** Public keys by kid, read back from a JWKS document. */
export function keysFromJwks(doc: Buffer | string): Map<string, KeyObject> {
  const parsed = JSON.parse(doc.toString()) as { keys?: (PublicJwk & { kid?: string })[] };
  const out = new Map<string, KeyObject>();
  for (const k of parsed.keys ?? []) {
    if (k.kid && k.use !== 'x509-svid') out.set(k.kid, createPublicKey({ key: { kty: k.kty, crv: k.crv, x: k.x, y: k.y }, format: 'jwk' }));
  }
  return out;
}

interface ParsedJwt {
  header: { alg?: unknown; kid?: unknown; typ?: unknown };
  claims: Record<string, unknown>;
  signingInput: string;
  signature: Buffer;
}

function decodePart(part: string, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new JwtSvidError(`token ${what} is not base64url JSON`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new JwtSvidError(`token ${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

function parseCompact(token: string): ParsedJwt {
  const parts = token.split('.');
  if (parts.length !== 3) throw new JwtSvidError(`token is not a compact JWS (expected 3 dot-separated parts, got ${parts.length})`);
  const [h, c, s] = parts as [string, string, string];
  return { header: decodePart(h, 'header'), claims: decodePart(c, 'claims'), signingInput: `${h}.${c}`, signature: Buffer.from(s, 'base64url') };
}

export interface ValidatedJwtSvid {
  spiffeId: string;
  claims: Record<string, unknown>;
}

/**
 * Validates a JWT-SVID: ES256, signed by a key of the bundle of the trust domain in `sub`, not
 * expired, and meant for `audience`. `keysFor` returns the JWT authorities the validator trusts
 * for a trust domain, or undefined when it does not trust that domain at all.
 */
export function validateJwtSvid(
  token: string,
  audience: string,
  keysFor: (trustDomain: string) => ReadonlyMap<string, KeyObject> | undefined,
  nowMs = Date.now(),
): ValidatedJwtSvid {
  const { header, claims, signingInput, signature } = parseCompact(token);
  if (header.alg !== 'ES256') throw new JwtSvidError(`unsupported token signature algorithm ${JSON.stringify(header.alg)} (JWT-SVIDs here are ES256)`);
  if (typeof header.kid !== 'string' || header.kid === '') throw new JwtSvidError('token header has no key ID (kid)');
  if (typeof claims.sub !== 'string') throw new JwtSvidError('token has no subject (sub) claim');
  let trustDomain: string;
  try {
    trustDomain = parseSpiffeId(claims.sub).trustDomain;
  } catch (err) {
    throw new JwtSvidError(`token subject is not a SPIFFE ID: ${(err as Error).message}`);
  }
  const keys = keysFor(trustDomain);
  if (!keys) throw new JwtSvidError(`no bundle for trust domain ${trustDomain}: it is neither this workload's nor federated with it`);
  const key = keys.get(header.kid);
  if (!key) throw new JwtSvidError(`no JWT authority ${JSON.stringify(header.kid)} in the bundle of trust domain ${trustDomain}`);
  if (signature.length !== 64 || !verify('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' }, signature)) {
    throw new JwtSvidError('token signature does not verify');
  }
  if (typeof claims.exp !== 'number') throw new JwtSvidError('token has no expiry (exp) claim');
  const now = Math.floor(nowMs / 1000);
  if (claims.exp <= now) throw new JwtSvidError(`token has expired (exp ${new Date(claims.exp * 1000).toISOString()})`);
  if (typeof claims.nbf === 'number' && claims.nbf > now) throw new JwtSvidError(`token is not valid yet (nbf ${new Date(claims.nbf * 1000).toISOString()})`);
  const aud = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : [];
  if (!aud.includes(audience)) throw new JwtSvidError(`expected audience ${JSON.stringify(audience)}, token is for ${JSON.stringify(aud)}`);
  return { spiffeId: claims.sub, claims };
}
