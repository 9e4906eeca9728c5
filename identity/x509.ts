// The one import of @peculiar/x509 in the project. The library resolves its ASN.1 parsers through
// tsyringe, which needs the reflect-metadata polyfill loaded first, and it signs through WebCrypto,
// which we point at Node's implementation.

import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };

/** ECDSA P-256 with SHA-256: what SPIRE issues by default. */
export const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

const DER_SEQUENCE = 0x30;

/**
 * Splits concatenated DER certificates (the Workload API's x509_svid and bundle fields) into one
 * buffer per certificate. Throws on a truncated or non-SEQUENCE element.
 */
export function splitDerCertificates(der: Uint8Array): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  while (pos < der.length) {
    if (der[pos] !== DER_SEQUENCE) throw new Error(`DER certificate list: expected a SEQUENCE at byte ${pos}`);
    const lenByte = der[pos + 1];
    if (lenByte === undefined) throw new Error(`DER certificate list: truncated at byte ${pos}`);
    let len: number;
    let header: number;
    if (lenByte < 0x80) {
      len = lenByte;
      header = 2;
    } else {
      const n = lenByte & 0x7f;
      if (n === 0 || n > 4) throw new Error(`DER certificate list: unsupported length encoding at byte ${pos}`);
      len = 0;
      for (let i = 0; i < n; i++) {
        const b = der[pos + 2 + i];
        if (b === undefined) throw new Error(`DER certificate list: truncated at byte ${pos}`);
        len = len * 256 + b;
      }
      header = 2 + n;
    }
    const end = pos + header + len;
    if (end > der.length) throw new Error(`DER certificate list: certificate at byte ${pos} is truncated`);
    out.push(Buffer.from(der.subarray(pos, end)));
    pos = end;
  }
  return out;
}

export function derToPem(der: Uint8Array, label = 'CERTIFICATE'): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Every PEM block with the given label, as DER. */
export function pemBlocks(pem: string, label = 'CERTIFICATE'): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`, 'g');
  const out: Buffer[] = [];
  for (const m of pem.matchAll(re)) out.push(Buffer.from((m[1] ?? '').replace(/\s+/g, ''), 'base64'));
  return out;
}
