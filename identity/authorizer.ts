// Which verified SPIFFE IDs may talk to us. An authorizer runs only after the X.509-SVID has been
// verified, so it sees a well-formed ID whose trust domain vouched for it; its job is policy.
// Inputs are validated when the authorizer is built, so a typo in a config fails at startup
// instead of silently refusing every peer.

import { parseSpiffeId, parseTrustDomain, type SpiffeId } from './spiffe-id.js';

/** Undefined when the peer is allowed, else a one-line reason naming the peer. */
export type Authorizer = (id: SpiffeId) => string | undefined;

const allowAll: Authorizer = () => undefined;

export const authorizeAny = (): Authorizer => allowAll;

export function authorizeId(id: string): Authorizer {
  const want = parseSpiffeId(id).id;
  return (peer) => (peer.id === want ? undefined : `${peer.id} is not ${want}`);
}

export function authorizeOneOf(...ids: string[]): Authorizer {
  // An empty allow-list would refuse everyone; that is a config mistake, not a policy.
  if (ids.length === 0) throw new Error('authorizeOneOf: at least one SPIFFE ID is required');
  const allowed = new Set(ids.map((i) => parseSpiffeId(i).id));
  const list = summarize([...allowed]);
  return (peer) => (allowed.has(peer.id) ? undefined : `${peer.id} is not one of ${list}`);
}

export function authorizeMemberOf(...trustDomains: string[]): Authorizer {
  if (trustDomains.length === 0) throw new Error('authorizeMemberOf: at least one trust domain is required');
  const allowed = new Set(trustDomains.map((td) => parseTrustDomain(td)));
  const list = summarize([...allowed]);
  return (peer) => (allowed.has(peer.trustDomain) ? undefined : `${peer.id} is not in trust domain(s) ${list}`);
}

/** Keeps refusal messages to one readable line even for long allow-lists. */
function summarize(items: string[], max = 5): string {
  if (items.length <= max) return items.join(', ');
  return `${items.slice(0, max).join(', ')} and ${items.length - max} more`;
}
