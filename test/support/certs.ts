// Test PKI made with the openssl CLI: a CA per trust domain and EC P-256 leaves carrying a
// spiffe:// URI SAN (plus localhost names so hostname verification passes on loopback).
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'pipe' });
}

export interface TestCa {
  dir: string;
  name: string;
  cert: string;
  key: string;
}

export function makeCa(dir: string, name: string): TestCa {
  const key = join(dir, `${name}-ca.key`);
  const cert = join(dir, `${name}-ca.pem`);
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key], dir);
  openssl(
    ['req', '-x509', '-new', '-key', key, '-subj', `/CN=${name} test CA`, '-days', '2', '-out', cert,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    dir,
  );
  return { dir, name, cert, key };
}

export interface TestLeaf {
  cert: string;
  key: string;
  spiffeId: string;
}

/** A leaf for `spiffeId`, valid for localhost and 127.0.0.1, usable as client and server. */
export function makeLeaf(ca: TestCa, file: string, spiffeId: string): TestLeaf {
  const key = join(ca.dir, `${file}.key`);
  const csr = join(ca.dir, `${file}.csr`);
  const cert = join(ca.dir, `${file}.pem`);
  const ext = join(ca.dir, `${file}.ext`);
  writeFileSync(
    ext,
    [
      `subjectAltName=URI:${spiffeId},DNS:localhost,IP:127.0.0.1`,
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth,clientAuth',
    ].join('\n'),
  );
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key], ca.dir);
  openssl(['req', '-new', '-key', key, '-subj', `/CN=${file}`, '-out', csr], ca.dir);
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '1', '-out', cert, '-extfile', ext], ca.dir);
  return { cert, key, spiffeId };
}
