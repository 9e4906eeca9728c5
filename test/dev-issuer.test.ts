// The dev issuer, in-process, spoken to with a raw grpc-js client of the Workload API: it must
// behave like a SPIRE agent where our client code can tell (header check, status codes, bundle
// keys, rotation on the open stream, JWT-SVID validation through federation).

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../common/config-file.js';
import { freePort } from '../harness/processes.js';
import { scratchDir } from '../harness/node-config.js';
import { loadDevIssuerConfig, parseDevIssuerConfig, type DevIssuerConfig } from '../identity/dev-issuer/config.js';
import { DevIssuer } from '../identity/dev-issuer/dev-issuer.js';
import { keysFromJwks } from '../identity/dev-issuer/jwt.js';
import { X509Bundle } from '../identity/x509-bundle.js';
import { splitDerCertificates } from '../identity/x509.js';
import {
  WORKLOAD_HEADER,
  fromStruct,
  workloadClientConstructor,
  type JwtBundlesResponseMsg,
  type JwtSvidResponseMsg,
  type ValidateJwtSvidResponseMsg,
  type X509BundlesResponseMsg,
  type X509SvidResponseMsg,
} from '../proto/workload.js';

const ALICE = 'spiffe://cluster-a.example/ns/default/sa/alice';
const BOB = 'spiffe://cluster-b.example/ns/default/sa/bob';
const CONTROLLER = 'spiffe://admin.example/ns/slim/sa/slim-control-plane';
const TD = (td: string): string => `spiffe://${td}`;

const CONFIG = `
trust_domains: [admin.example, cluster-a.example, cluster-b.example]
svid_ttl: 2s
socket_dir: sockets
bundle_dir: bundles
log_level: debug
workloads:
  - socket: alice.sock
    spiffe_id: ${ALICE}
    federates_with: [cluster-b.example]
    dns_names: [alice.cluster-a.example]
  - socket: unix:bob.sock
    spiffe_id: ${BOB}
  - socket: ctl/controller.sock
    spiffe_id: ${CONTROLLER}
    federates_with: [cluster-a.example]
`;

/** A pino logger whose JSON lines the test can read back. */
function memoryLogger(): { log: Logger; lines: () => Record<string, unknown>[] } {
  let text = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  });
  const log = pino({ level: 'debug' }, sink);
  return { log, lines: () => text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

type WorkloadClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;
const clients: grpc.Client[] = [];

function client(socket: string): WorkloadClient {
  const Ctor = workloadClientConstructor();
  const c = new Ctor(`unix:${socket}`, grpc.credentials.createInsecure()) as unknown as WorkloadClient;
  clients.push(c);
  return c;
}

function header(): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(WORKLOAD_HEADER, 'true');
  return md;
}

/** Collects messages from a server stream; `next()` resolves with the next one. */
function openStream<T>(c: WorkloadClient, method: string, md = header()) {
  const call = c[method]!({}, md) as grpc.ClientReadableStream<T>;
  const queue: T[] = [];
  let waiting: ((m: T) => void) | undefined;
  let failure: grpc.ServiceError | undefined;
  let failed: ((e: grpc.ServiceError) => void) | undefined;
  call.on('data', (m: T) => {
    if (waiting) {
      const w = waiting;
      waiting = undefined;
      w(m);
    } else queue.push(m);
  });
  call.on('error', (e: grpc.ServiceError) => {
    failure = e;
    failed?.(e);
  });
  return {
    call,
    next(timeoutMs = 5000): Promise<T> {
      const queued = queue.shift();
      if (queued !== undefined) return Promise.resolve(queued);
      return new Promise<T>((resolve, reject) => {
        if (failure) return reject(failure);
        const timer = setTimeout(() => reject(new Error(`no ${method} message within ${timeoutMs} ms`)), timeoutMs);
        waiting = (m) => {
          clearTimeout(timer);
          resolve(m);
        };
        failed = (e) => {
          clearTimeout(timer);
          reject(e);
        };
      });
    },
    error(): Promise<grpc.ServiceError> {
      return failure ? Promise.resolve(failure) : new Promise((resolve) => (failed = resolve));
    },
  };
}

async function firstX509(socket: string): Promise<X509SvidResponseMsg> {
  const s = openStream<X509SvidResponseMsg>(client(socket), 'FetchX509SVID');
  const m = await s.next();
  s.call.cancel();
  return m;
}

function unary<Res>(c: WorkloadClient, method: string, req: unknown, md = header()): Promise<Res> {
  return new Promise((resolve, reject) => {
    c[method]!(req, md, (err: grpc.ServiceError | null, res: Res) => (err ? reject(err) : resolve(res)));
  });
}

async function rejection(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

const fetchJwt = async (socket: string, audience: string[], spiffeId = ''): Promise<string> =>
  (await unary<JwtSvidResponseMsg>(client(socket), 'FetchJWTSVID', { audience, spiffe_id: spiffeId })).svids[0]!.svid;
const validateJwt = (socket: string, svid: string, audience: string): Promise<ValidateJwtSvidResponseMsg> =>
  unary<ValidateJwtSvidResponseMsg>(client(socket), 'ValidateJWTSVID', { audience, svid });

function decodeJwtPart(token: string, i: number): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[i]!, 'base64url').toString()) as Record<string, unknown>;
}

let dir: string;
let cfg: DevIssuerConfig;
let issuer: DevIssuer;
let logs: ReturnType<typeof memoryLogger>;
let sock: { alice: string; bob: string; ctl: string };

beforeAll(async () => {
  dir = scratchDir('slim-dev-issuer');
  cfg = parseDevIssuerConfig(CONFIG, dir);
  logs = memoryLogger();
  issuer = await DevIssuer.start(cfg, logs.log);
  sock = { alice: join(dir, 'sockets/alice.sock'), bob: join(dir, 'sockets/bob.sock'), ctl: join(dir, 'sockets/ctl/controller.sock') };
});

afterAll(async () => {
  for (const c of clients) c.close();
  await issuer?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('dev issuer startup', () => {
  it('resolves sockets against socket_dir and defaults federation to every other trust domain', () => {
    expect(cfg.workloads.map((w) => w.socketPath)).toEqual([sock.alice, sock.bob, sock.ctl]);
    expect(cfg.workloads.map((w) => w.federatesWith)).toEqual([['cluster-b.example'], ['admin.example', 'cluster-a.example'], ['cluster-a.example']]);
    expect(cfg.svidTtlMs).toBe(2000);
    expect(cfg.caTtlMs).toBe(30 * 24 * 3_600_000);
    expect(issuer.socketOf(BOB)).toBe(sock.bob);
  });

  it('logs one line per workload and then "dev issuer ready" with the trust domains', () => {
    const lines = logs.lines();
    expect(lines.map((l) => l.msg)).toContain(`serving ${ALICE} on ${sock.alice}`);
    const ready = lines.find((l) => l.msg === 'dev issuer ready');
    expect(ready?.trust_domains).toEqual(['admin.example', 'cluster-a.example', 'cluster-b.example']);
    expect(ready?.workloads).toContainEqual({ spiffe_id: BOB, socket: sock.bob });
    const readyAt = lines.indexOf(ready!);
    expect(lines.findIndex((l) => l.msg === `serving ${CONTROLLER} on ${sock.ctl}`)).toBeLessThan(readyAt);
  });

  it('opens each socket to every local user', () => {
    for (const s of Object.values(sock)) expect(lstatSync(s).mode & 0o777).toBe(0o777);
  });

  it('writes a PEM and a SPIFFE bundle per trust domain to bundle_dir', async () => {
    const own = (await firstX509(sock.alice)).svids[0]!.bundle;
    const pem = readFileSync(join(dir, 'bundles/cluster-a.example.pem'));
    const json = readFileSync(join(dir, 'bundles/cluster-a.example.spiffe.json'), 'utf8');
    expect(X509Bundle.parse('cluster-a.example', pem).certs[0]).toEqual(own);
    expect(X509Bundle.parse('cluster-a.example', json).certs[0]).toEqual(own);
    const doc = JSON.parse(json) as { keys: Record<string, unknown>[]; spiffe_sequence: number };
    expect(doc.spiffe_sequence).toBe(1);
    expect(doc.keys[0]).toMatchObject({ use: 'x509-svid', kty: 'EC', crv: 'P-256' });
    // The CA key in the JWK is the certificate's key.
    const ca = new X509Certificate(own);
    expect(ca.publicKey.export({ format: 'jwk' })).toMatchObject({ x: doc.keys[0]!.x, y: doc.keys[0]!.y });
    for (const td of ['admin.example', 'cluster-b.example']) expect(existsSync(join(dir, `bundles/${td}.spiffe.json`))).toBe(true);
  });
});

describe('the security header', () => {
  it('is required on streams and unary calls, with SPIRE\'s message', async () => {
    const s = openStream<X509SvidResponseMsg>(client(sock.alice), 'FetchX509SVID', new grpc.Metadata());
    const err = await s.error();
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toBe('security header missing from request');
    const wrong = new grpc.Metadata();
    wrong.set(WORKLOAD_HEADER, 'yes');
    const u = await rejection(unary(client(sock.alice), 'FetchJWTSVID', { audience: ['x'] }, wrong));
    expect([u.code, u.details]).toEqual([grpc.status.INVALID_ARGUMENT, 'security header missing from request']);
    const refused = logs.lines().filter((l) => l.msg === 'refused Workload API call');
    expect(refused.map((l) => l.method)).toEqual(expect.arrayContaining(['FetchX509SVID', 'FetchJWTSVID']));
    expect(refused.every((l) => l.level === 40)).toBe(true);
  });
});

describe('FetchX509SVID', () => {
  it('serves an EC P-256 SVID for the socket\'s workload, chaining to its own trust domain\'s CA', async () => {
    const m = await firstX509(sock.alice);
    expect(m.svids).toHaveLength(1);
    const svid = m.svids[0]!;
    expect(svid.spiffe_id).toBe(ALICE);
    expect(svid.hint).toBe('');
    const [leafDer, ...rest] = splitDerCertificates(svid.x509_svid);
    expect(rest).toHaveLength(0);
    const leaf = new X509Certificate(leafDer!);
    expect(leaf.subjectAltName).toBe(`URI:${ALICE}, DNS:alice.cluster-a.example`);
    expect(leaf.ca).toBe(false);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const [caDer] = splitDerCertificates(svid.bundle);
    const ca = new X509Certificate(caDer!);
    expect(ca.ca).toBe(true);
    expect(ca.subjectAltName).toBe(`URI:${TD('cluster-a.example')}`);
    expect(leaf.checkIssued(ca)).toBe(true);
    expect(leaf.verify(ca.publicKey)).toBe(true);
    expect(leaf.checkPrivateKey(createPrivateKey({ key: svid.x509_svid_key, format: 'der', type: 'pkcs8' }))).toBe(true);
  });

  it('carries exactly the federated trust domains\' bundles, never its own', async () => {
    const [alice, bob, ctl] = await Promise.all([firstX509(sock.alice), firstX509(sock.bob), firstX509(sock.ctl)]);
    expect(Object.keys(alice.federated_bundles)).toEqual([TD('cluster-b.example')]);
    expect(Object.keys(bob.federated_bundles).sort()).toEqual([TD('admin.example'), TD('cluster-a.example')]);
    expect(Object.keys(ctl.federated_bundles)).toEqual([TD('cluster-a.example')]);
    // What one socket calls cluster-b's bundle is what cluster-b's workload calls its own.
    expect(alice.federated_bundles[TD('cluster-b.example')]).toEqual(bob.svids[0]!.bundle);
    expect(bob.federated_bundles[TD('cluster-a.example')]).toEqual(alice.svids[0]!.bundle);
  });

  it('serves a different identity on each socket', async () => {
    const [alice, bob] = await Promise.all([firstX509(sock.alice), firstX509(sock.bob)]);
    expect(alice.svids[0]!.spiffe_id).toBe(ALICE);
    expect(bob.svids[0]!.spiffe_id).toBe(BOB);
    const bobLeaf = new X509Certificate(splitDerCertificates(bob.svids[0]!.x509_svid)[0]!);
    expect(bobLeaf.subjectAltName).toBe(`URI:${BOB}`);
    // cluster-a's CA does not vouch for bob.
    expect(bobLeaf.verify(new X509Certificate(alice.svids[0]!.bundle).publicKey)).toBe(false);
  });

  it('pushes a rotated SVID on the open stream at half the TTL', async () => {
    const s = openStream<X509SvidResponseMsg>(client(sock.bob), 'FetchX509SVID');
    const first = await s.next();
    const second = await s.next(3000);
    s.call.cancel();
    const serial = (m: X509SvidResponseMsg): string => new X509Certificate(splitDerCertificates(m.svids[0]!.x509_svid)[0]!).serialNumber;
    expect(second.svids[0]!.spiffe_id).toBe(BOB);
    expect(serial(second)).not.toBe(serial(first));
    expect(second.svids[0]!.x509_svid_key).not.toEqual(first.svids[0]!.x509_svid_key);
    expect(second.svids[0]!.bundle).toEqual(first.svids[0]!.bundle);
    expect(logs.lines().some((l) => l.msg === 'rotated X.509-SVID' && l.spiffe_id === BOB && l.level === 20)).toBe(true);
  });
});

describe('bundle streams', () => {
  it('FetchX509Bundles keys own and federated CA certificates by trust domain ID', async () => {
    const s = openStream<X509BundlesResponseMsg>(client(sock.alice), 'FetchX509Bundles');
    const m = await s.next();
    s.call.cancel();
    expect(Object.keys(m.bundles).sort()).toEqual([TD('cluster-a.example'), TD('cluster-b.example')]);
    expect(new X509Certificate(m.bundles[TD('cluster-b.example')]!).subjectAltName).toBe(`URI:${TD('cluster-b.example')}`);
  });

  it('FetchJWTBundles serves one JWKS per trust domain with kid and use jwt-svid', async () => {
    const s = openStream<JwtBundlesResponseMsg>(client(sock.bob), 'FetchJWTBundles');
    const m = await s.next();
    s.call.cancel();
    expect(Object.keys(m.bundles).sort()).toEqual([TD('admin.example'), TD('cluster-a.example'), TD('cluster-b.example')]);
    const doc = JSON.parse(m.bundles[TD('cluster-b.example')]!.toString()) as { keys: Record<string, unknown>[] };
    expect(doc.keys).toHaveLength(1);
    expect(doc.keys[0]).toMatchObject({ kty: 'EC', crv: 'P-256', use: 'jwt-svid' });
    expect(Object.keys(doc.keys[0]!).sort()).toEqual(['crv', 'kid', 'kty', 'use', 'x', 'y']);
  });
});

describe('JWT-SVIDs', () => {
  it('issues an ES256 token that validates for its audience', async () => {
    const token = await fetchJwt(sock.alice, ['slim', 'other'], ALICE);
    const hdr = decodeJwtPart(token, 0);
    expect(hdr).toMatchObject({ alg: 'ES256', typ: 'JWT' });
    const claims = decodeJwtPart(token, 1) as { sub: string; aud: string[]; exp: number; iat: number };
    expect(claims.sub).toBe(ALICE);
    expect(claims.aud).toEqual(['slim', 'other']);
    expect(claims.exp - claims.iat).toBe(2);
    // The kid names a key of cluster-a's JWKS, and that key verifies the token.
    const s = openStream<JwtBundlesResponseMsg>(client(sock.alice), 'FetchJWTBundles');
    const bundles = await s.next();
    s.call.cancel();
    expect(keysFromJwks(bundles.bundles[TD('cluster-a.example')]!).has(hdr.kid as string)).toBe(true);
    const res = await validateJwt(sock.alice, token, 'slim');
    expect(res.spiffe_id).toBe(ALICE);
    expect(fromStruct(res.claims!)).toMatchObject({ sub: ALICE, aud: ['slim', 'other'], exp: claims.exp });
  });

  it('refuses a wrong audience, a tampered token, and missing fields with INVALID_ARGUMENT', async () => {
    const token = await fetchJwt(sock.alice, ['slim']);
    const wrongAud = await rejection(validateJwt(sock.alice, token, 'someone-else'));
    expect(wrongAud.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(wrongAud.details).toMatch(/audience/);
    const [h, , sig] = token.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ sub: BOB, aud: ['slim'], exp: 9e9, iat: 0 })).toString('base64url')}.${sig}`;
    const bad = await rejection(validateJwt(sock.alice, forged, 'slim'));
    expect(bad.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(bad.details).toMatch(/JWT authority|signature/);
    expect((await rejection(validateJwt(sock.alice, '', 'slim'))).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((await rejection(validateJwt(sock.alice, token, ''))).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((await rejection(validateJwt(sock.alice, 'not.a-jwt', 'slim'))).code).toBe(grpc.status.INVALID_ARGUMENT);
    const noAud = await rejection(fetchJwt(sock.alice, []));
    expect([noAud.code, noAud.details]).toEqual([grpc.status.INVALID_ARGUMENT, 'audience must be specified']);
    const otherId = await rejection(fetchJwt(sock.alice, ['slim'], BOB));
    expect(otherId.code).toBe(grpc.status.PERMISSION_DENIED);
  });

  it('validates a token of another trust domain only through federation', async () => {
    const bobToken = await fetchJwt(sock.bob, ['alice']);
    const res = await validateJwt(sock.alice, bobToken, 'alice');
    expect(res.spiffe_id).toBe(BOB);
    // The controller's socket federates with cluster-a only.
    const refused = await rejection(validateJwt(sock.ctl, bobToken, 'alice'));
    expect(refused.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(refused.details).toContain('cluster-b.example');
  });

  it('refuses an expired token', async () => {
    const token = await fetchJwt(sock.bob, ['x']);
    const exp = (decodeJwtPart(token, 1) as { exp: number }).exp;
    await new Promise((r) => setTimeout(r, exp * 1000 - Date.now() + 50));
    const err = await rejection(validateJwt(sock.bob, token, 'x'));
    expect([err.code, err.details]).toEqual([grpc.status.INVALID_ARGUMENT, expect.stringMatching(/expired/)]);
  });
});

describe('lifecycle', () => {
  it('ends open streams with UNAVAILABLE on stop and removes its sockets; serves health and metrics', async () => {
    const d = scratchDir('slim-dev-issuer-stop');
    try {
      const port = await freePort();
      const c = parseDevIssuerConfig(
        `trust_domains: [a.example]\nobservability: { endpoint: 127.0.0.1:${port} }\nworkloads: [{ socket: w.sock, spiffe_id: spiffe://a.example/w }]\n`,
        d,
      );
      const one = await DevIssuer.start(c, pino({ level: 'silent' }));
      const s = openStream<X509SvidResponseMsg>(client(join(d, 'w.sock')), 'FetchX509SVID');
      await s.next();
      expect(c.workloads[0]!.federatesWith).toEqual([]);
      expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toMatch(/slim_dev_issuer_x509_svids_minted_total 1/);
      expect(metrics).toMatch(/slim_dev_issuer_open_streams 1/);
      await one.stop();
      expect((await s.error()).code).toBe(grpc.status.UNAVAILABLE);
      expect(existsSync(join(d, 'w.sock'))).toBe(false);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('refuses a socket path held by a live server or by a regular file, naming it', async () => {
    const d = scratchDir('slim-dev-issuer-busy');
    let live: Server | undefined;
    try {
      const busy = join(d, 'busy.sock');
      live = createServer();
      await new Promise<void>((r) => live!.listen(busy, r));
      const text = (s: string): string => `trust_domains: [a.example]\nworkloads: [{ socket: ${s}, spiffe_id: spiffe://a.example/w }]\n`;
      await expect(DevIssuer.start(parseDevIssuerConfig(text(busy), d), pino({ level: 'silent' }))).rejects.toThrow(`${busy} is in use by another process`);
      writeFileSync(join(d, 'file.sock'), 'not a socket');
      await expect(DevIssuer.start(parseDevIssuerConfig(text('file.sock'), d), pino({ level: 'silent' }))).rejects.toThrow(/file\.sock exists and is not a socket/);
    } finally {
      live?.close();
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('config errors name the key', () => {
  function problems(text: string): string[] {
    try {
      parseDevIssuerConfig(text, '/tmp/cfg');
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as ConfigError).message.split('\n');
    }
    throw new Error('expected the config to be rejected');
  }

  it('rejects a bad trust domain', () => {
    expect(problems('trust_domains: [a.example, Bad_Domain]\nworkloads: [{ socket: w.sock, spiffe_id: spiffe://a.example/w }]\n')).toEqual([
      expect.stringMatching(/^dev issuer config: trust_domains\[1\]: invalid trust domain "Bad_Domain": .*lowercase/),
    ]);
  });

  it('rejects a workload of a trust domain the issuer does not run, and a federation with one', () => {
    const lines = problems(
      'trust_domains: [a.example, b.example]\nworkloads:\n  - { socket: w.sock, spiffe_id: spiffe://c.example/w }\n  - { socket: v.sock, spiffe_id: spiffe://a.example/v, federates_with: [z.example] }\n',
    );
    expect(lines).toEqual([
      'dev issuer config: workloads[0].spiffe_id: trust domain c.example is not in trust_domains (a.example, b.example)',
      'dev issuer config: workloads[1].federates_with[0]: trust domain z.example is not in trust_domains',
    ]);
  });

  it('rejects two workloads on one socket, however the path is spelled', () => {
    const lines = problems(
      'trust_domains: [a.example]\nworkloads:\n  - { socket: w.sock, spiffe_id: spiffe://a.example/w }\n  - { socket: "unix:///tmp/cfg/./w.sock", spiffe_id: spiffe://a.example/v }\n',
    );
    expect(lines).toEqual(['dev issuer config: workloads[1].socket: /tmp/cfg/w.sock is already the socket of workloads[0]; one socket serves one identity']);
  });

  it('rejects malformed values and missing keys', () => {
    expect(problems('trust_domains: [a.example]\nsvid_ttl: soon\nworkloads: [{ socket: w.sock, spiffe_id: "a.example/w" }]\n')).toEqual([
      'dev issuer config: svid_ttl: "soon" is not a duration (use e.g. 500ms, 10s, 1m)',
      expect.stringMatching(/^dev issuer config: workloads\[0\]\.spiffe_id: invalid SPIFFE ID "a\.example\/w": scheme/),
    ]);
    expect(problems('trust_domains: [a.example]\n')).toEqual(['dev issuer config: workloads is missing']);
    expect(problems('trust_domains: [a.example]\nworkload: []\nworkloads: [{ socket: w.sock, spiffe_id: spiffe://a.example/w }]\n')).toEqual([
      'dev issuer config: workload: not a known key',
    ]);
  });

  it('loads the example config with every workload on its own socket', () => {
    const c = loadDevIssuerConfig(join(import.meta.dirname, '../examples/dev-issuer.yaml'), { SLIM_DEV_ISSUER_SOCKETS: '/run/dev' });
    expect(c.trustDomains).toEqual(['admin.example', 'cluster-a.example', 'cluster-b.example']);
    expect(c.workloads).toHaveLength(8);
    expect(c.workloads.map((w) => w.spiffeId.id)).toContain('spiffe://admin.example/ns/ops/sa/slimctl');
    expect(c.workloads.map((w) => w.socketPath)).toContain('/run/dev/cluster-a/alice.sock');
    expect(c.workloads.find((w) => w.spiffeId.id === 'spiffe://cluster-b.example/ns/default/sa/bob')?.federatesWith).toEqual(['admin.example', 'cluster-a.example']);
    expect(c.ops).toEqual({ host: '127.0.0.1', port: 9190 });
  });
});
