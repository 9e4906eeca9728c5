// An in-process dev issuer for tests: the seed's three federated trust domains, one Workload API
// socket per named workload. In-process so tests can also mint deliberately bad certificates
// with the same CAs.

import { pino } from 'pino';
import { stringify } from 'yaml';
import { DevIssuer } from '../../identity/dev-issuer/dev-issuer.js';
import { parseDevIssuerConfig } from '../../identity/dev-issuer/config.js';
import { scratchDir } from '../../harness/node-config.js';

export const TRUST_DOMAINS = ['admin.example', 'cluster-a.example', 'cluster-b.example'];

export interface SpiffeEnv {
  issuer: DevIssuer;
  dir: string;
  /** Socket path of each workload, by the name given. */
  socket: Record<string, string>;
  stop(): Promise<void>;
}

/** `workloads`: name → SPIFFE ID. */
export async function startSpiffeEnv(workloads: Record<string, string>, opts: { svidTtl?: string } = {}): Promise<SpiffeEnv> {
  const dir = scratchDir('slim-spiffe');
  const doc = {
    trust_domains: TRUST_DOMAINS,
    svid_ttl: opts.svidTtl ?? '1h',
    log_level: 'warn',
    workloads: Object.entries(workloads).map(([name, id]) => ({ socket: `${name}.sock`, spiffe_id: id })),
  };
  const cfg = parseDevIssuerConfig(stringify(doc), dir);
  const issuer = await DevIssuer.start(cfg, pino({ level: 'silent' }));
  const socket: Record<string, string> = {};
  for (const name of Object.keys(workloads)) socket[name] = `${dir}/${name}.sock`;
  return { issuer, dir, socket, stop: () => issuer.stop() };
}
