// The `tls` block of every connection in SLIM-TS configs (node servers and clients, the SDK's
// --slim JSON, later the controller): plaintext, certificate files, or a SPIFFE Workload API.

import { z } from 'zod';
import { spiffeIdProblem } from '../identity/spiffe-id.js';
import { trustDomainField } from '../identity/spiffe-schema.js';

const spireSocket = z
  .string()
  .min(1)
  .refine((v) => v.startsWith('unix:') || v.startsWith('/'), { message: 'must be unix:/path, unix:///path or an absolute path of the SPIFFE Workload API socket' });


const certSource = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('file'), cert: z.string().min(1), key: z.string().min(1) }),
  z.strictObject({
    type: z.literal('spire'),
    socket_path: spireSocket.optional(),
    /** Which of the workload's SVIDs to present; the first one by default. */
    target_spiffe_id: z
      .string()
      .superRefine((v, ctx) => {
        const problem = spiffeIdProblem(v);
        if (problem) ctx.addIssue({ code: 'custom', message: `not a SPIFFE ID: ${problem}` });
      })
      .optional(),
  }),
]);

const caSource = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('file'), path: z.string().min(1) }),
  z.strictObject({
    type: z.literal('spire'),
    socket_path: spireSocket.optional(),
    /** Trust domains accepted besides the workload's own (bare or spiffe:// form). */
    trust_domains: z.array(trustDomainField).default([]),
  }),
]);

export const tlsSchema = z
  .strictObject({
    insecure: z.boolean().default(false),
    insecure_skip_verify: z.boolean().default(false),
    source: certSource.optional(),
    ca_source: caSource.optional(),
    // Older flat spelling, still used by the seed's client pods.
    cert_file: z.string().min(1).optional(),
    key_file: z.string().min(1).optional(),
    ca_file: z.string().min(1).optional(),
  })
  .superRefine((t, ctx) => {
    if (t.source && (t.cert_file || t.key_file)) {
      ctx.addIssue({ code: 'custom', message: 'set either source or cert_file/key_file, not both' });
    }
    if (t.ca_source && t.ca_file) ctx.addIssue({ code: 'custom', message: 'set either ca_source or ca_file, not both' });
    if (Boolean(t.cert_file) !== Boolean(t.key_file)) {
      ctx.addIssue({ code: 'custom', message: 'cert_file and key_file go together' });
    }
  });

export type TlsConfigInput = z.output<typeof tlsSchema>;

/** TLS settings after the two spellings are merged. */
export interface TlsSettings {
  insecure: boolean;
  skipVerify: boolean;
  /** `flat`: written as cert_file/key_file/ca_file, so errors name those keys. */
  cert?: { type: 'file'; cert: string; key: string; flat?: boolean } | { type: 'spire'; socketPath?: string; spiffeId?: string };
  ca?: { type: 'file'; path: string; flat?: boolean } | { type: 'spire'; socketPath?: string; trustDomains: string[] };
}

export function normalizeTls(t: TlsConfigInput | undefined): TlsSettings {
  if (!t) return { insecure: false, skipVerify: false };
  const out: TlsSettings = { insecure: t.insecure, skipVerify: t.insecure_skip_verify };
  if (t.source?.type === 'file') out.cert = { type: 'file', cert: t.source.cert, key: t.source.key };
  else if (t.source?.type === 'spire') out.cert = { type: 'spire', socketPath: t.source.socket_path, spiffeId: t.source.target_spiffe_id };
  else if (t.cert_file && t.key_file) out.cert = { type: 'file', cert: t.cert_file, key: t.key_file, flat: true };
  if (t.ca_source?.type === 'file') out.ca = { type: 'file', path: t.ca_source.path };
  else if (t.ca_source?.type === 'spire') {
    out.ca = { type: 'spire', socketPath: t.ca_source.socket_path, trustDomains: t.ca_source.trust_domains };
  } else if (t.ca_file) out.ca = { type: 'file', path: t.ca_file, flat: true };
  return out;
}

