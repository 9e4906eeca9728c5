// Node TLS options from a `tls` block whose material lives in PEM files.
// (SPIFFE Workload API sources are served by the identity layer.)

import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { SecureServerOptions } from 'node:http2';
import type { ConnectionOptions } from 'node:tls';
import type { TlsSettings } from '../common/tls-config.js';

export class TlsSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsSetupError';
  }
}

function read(path: string, what: string, where: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new TlsSetupError(`${where}: cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function unsupported(where: string, key: string): never {
  throw new TlsSetupError(
    `${where}.${key}: type "spire" needs the SPIFFE Workload API support, which this build of slim-ts does not include yet; use type "file" or tls.insecure: true`,
  );
}

/** Server options, or undefined for plaintext. `where` names the config key in errors. */
export function serverTlsFromFiles(t: TlsSettings, where: string): SecureServerOptions | undefined {
  if (t.insecure) return undefined;
  if (!t.cert) throw new TlsSetupError(`${where}: TLS needs tls.source (a certificate and key), or tls.insecure: true for plaintext`);
  if (t.cert.type === 'spire') unsupported(where, 'source');
  const opts: SecureServerOptions = {
    cert: read(t.cert.cert, 'certificate', `${where}.${t.cert.flat ? 'cert_file' : 'source.cert'}`),
    key: read(t.cert.key, 'key', `${where}.${t.cert.flat ? 'key_file' : 'source.key'}`),
  };
  if (t.ca) {
    if (t.ca.type === 'spire') unsupported(where, 'ca_source');
    // A CA for clients means mutual TLS: every peer must present a certificate it signed.
    opts.ca = read(t.ca.path, 'CA bundle', `${where}.${t.ca.flat ? 'ca_file' : 'ca_source.path'}`);
    opts.requestCert = true;
    opts.rejectUnauthorized = !t.skipVerify;
  }
  return opts;
}

/** Client options for an https endpoint at `host`. */
export function clientTlsFromFiles(t: TlsSettings, host: string, where: string): ConnectionOptions {
  const opts: ConnectionOptions = { rejectUnauthorized: !t.skipVerify };
  if (!isIP(host)) opts.servername = host;
  if (t.cert) {
    if (t.cert.type === 'spire') unsupported(where, 'source');
    opts.cert = read(t.cert.cert, 'certificate', `${where}.${t.cert.flat ? 'cert_file' : 'source.cert'}`);
    opts.key = read(t.cert.key, 'key', `${where}.${t.cert.flat ? 'key_file' : 'source.key'}`);
  }
  if (t.ca) {
    if (t.ca.type === 'spire') unsupported(where, 'ca_source');
    opts.ca = read(t.ca.path, 'CA bundle', `${where}.${t.ca.flat ? 'ca_file' : 'ca_source.path'}`);
  }
  return opts;
}
