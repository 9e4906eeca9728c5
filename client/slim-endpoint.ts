// The --slim argument of the sample apps and SlimApp's `slim` option: a URL
// ("http://127.0.0.1:46357") or, as the seed's client pods pass it, a JSON object
// ({"endpoint": "https://slim:46357", "tls": {...}}) with the same tls block as node configs.

import { z } from 'zod';
import { ConfigError, describeIssues, joinHostPort, splitHostPort } from '../common/config-file.js';
import { normalizeTls, tlsSchema, type TlsSettings } from '../common/tls-config.js';

export interface SlimEndpoint {
  url: string;
  host: string;
  port: number;
  tls: TlsSettings;
}

const jsonSchema = z.strictObject({ endpoint: z.string(), tls: tlsSchema.optional() });

export function parseSlimEndpoint(arg: string | { endpoint: string; tls?: unknown }): SlimEndpoint {
  let endpoint: string;
  let tls: TlsSettings;
  if (typeof arg === 'string' && !arg.trim().startsWith('{')) {
    endpoint = arg.trim();
    tls = { insecure: !endpoint.startsWith('https://'), skipVerify: false };
  } else {
    let raw: unknown = arg;
    if (typeof arg === 'string') {
      try {
        raw = JSON.parse(arg);
      } catch (err) {
        throw new ConfigError(`--slim: not a URL and not valid JSON: ${(err as Error).message}`);
      }
    }
    const parsed = jsonSchema.safeParse(raw);
    if (!parsed.success) throw new ConfigError(describeIssues(parsed.error).map((l) => `--slim: ${l}`).join('\n'));
    endpoint = parsed.data.endpoint.trim();
    tls = normalizeTls(parsed.data.tls);
    if (endpoint.startsWith('http://')) tls.insecure = true;
  }
  const m = /^(https?):\/\/([^/]+)\/?$/.exec(endpoint);
  const hp = m ? splitHostPort(m[2]!) : splitHostPort(endpoint);
  if (!hp) throw new ConfigError(`--slim: "${endpoint}" is not an endpoint (e.g. http://127.0.0.1:46357)`);
  const scheme = m ? m[1] : tls.insecure ? 'http' : 'https';
  if (scheme === 'https' && tls.insecure) throw new ConfigError(`--slim: https endpoint with tls.insecure: true; use http:// for plaintext`);
  return { url: `${scheme}://${joinHostPort(hp.host, hp.port)}`, host: hp.host, port: hp.port, tls };
}
