// Config-file fields holding SPIFFE names, validated with the SPIFFE ID parser so a config error
// names the key and the rule the value breaks.

import { z } from 'zod';
import { parseSpiffeId, parseTrustDomain } from './spiffe-id.js';

/** A trust domain, bare or spiffe://; yields the bare name. */
export const trustDomainField = z.string().transform((v, ctx) => {
  try {
    return parseTrustDomain(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

/** A SPIFFE ID; yields the parsed ID. */
export const spiffeIdField = z.string().transform((v, ctx) => {
  try {
    return parseSpiffeId(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});
