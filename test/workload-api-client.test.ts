// The SPIFFE Workload API client and the X.509 source against an in-test agent (grpc-js on a unix
// socket): socket addressing, the security header, which failures are retried, rotation,
// federation changes, malformed responses, and the errors an operator reads when nothing works.

import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  WORKLOAD_HEADER,
  toStruct,
  workloadClientConstructor,
  workloadServiceDefinition,
  type JwtSvidRequestMsg,
  type ValidateJwtSvidRequestMsg,
  type X509SvidResponseMsg,
} from '../proto/workload.js';
import {
  WorkloadApiClient,
  WorkloadApiError,
  resolveWorkloadSocket,
  socketFilePath,
  type X509Context,
} from '../identity/workload-api-client.js';
import { X509Source, closeSharedSources, sharedX509Source } from '../identity/x509-source.js';
import { mintCa, mintSvid, type MintedCa, type MintedSvid } from '../identity/x509-mint.js';

const BACKOFF = { initialMs: 20, maxMs: 200, factor: 2 };
const TD = 'cluster-a.example';
const ALICE = `spiffe://${TD}/ns/default/sa/alice`;
const BOB = `spiffe://${TD}/ns/default/sa/bob`;

let ca: MintedCa;
let fedCa: MintedCa;
let alice1: MintedSvid;
let alice2: MintedSvid;
let bob: MintedSvid;
let dir: string;
let n = 0;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'slim-wl-'));
  ca = await mintCa({ trustDomain: TD });
  fedCa = await mintCa({ trustDomain: 'cluster-b.example' });
  alice1 = await mintSvid(ca, { uris: [ALICE] });
  alice2 = await mintSvid(ca, { uris: [ALICE] });
  bob = await mintSvid(ca, { uris: [BOB] });
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function socketPath(): string {
  return join(dir, `a${n++}.sock`);
}

const serialOf = (der: Buffer): string => new X509Certificate(der).serialNumber;

function svidMsg(s: MintedSvid, bundle: Buffer = ca.der): X509SvidResponseMsg['svids'][number] {
  return { spiffe_id: s.spiffeId, x509_svid: Buffer.concat(s.chainDer), x509_svid_key: s.keyDer, bundle, hint: '' };
}

function x509Resp(svids: MintedSvid[], federated: Record<string, Buffer> = {}): X509SvidResponseMsg {
  return { svids: svids.map((s) => svidMsg(s)), crl: [], federated_bundles: federated };
}

type Stream = grpc.ServerWritableStream<unknown, unknown>;
type Unary = (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => void;

const fail = (code: grpc.status, details: string): Partial<grpc.StatusObject> => ({ code, details });

/** A Workload API server with per-test behaviour; refuses calls without the security header. */
class TestAgent {
  x509: (call: Stream, nth: number) => void = () => {};
  x509Bundles: (call: Stream, nth: number) => void = () => {};
  jwtBundles: (call: Stream, nth: number) => void = () => {};
  jwtSvid: Unary = (_c, cb) => cb(fail(grpc.status.UNIMPLEMENTED, 'not here'));
  validate: Unary = (_c, cb) => cb(fail(grpc.status.UNIMPLEMENTED, 'not here'));
  /** Streams opened per method, in order; the last one is what the client currently watches. */
  streams: Record<string, Stream[]> = { x509: [], x509Bundles: [], jwtBundles: [] };
  cancelled = 0;
  private server: grpc.Server | undefined;

  constructor(readonly path: string) {}

  get target(): string {
    return `unix:${this.path}`;
  }

  last(kind = 'x509'): Stream {
    const s = this.streams[kind]!.at(-1);
    if (!s) throw new Error(`no ${kind} stream yet`);
    return s;
  }

  async start(): Promise<this> {
    const server = new grpc.Server();
    const stream =
      (kind: 'x509' | 'x509Bundles' | 'jwtBundles') =>
      (call: Stream): void => {
        if (call.metadata.get(WORKLOAD_HEADER)[0] !== 'true') {
          call.emit('error', fail(grpc.status.INVALID_ARGUMENT, 'security header missing'));
          return;
        }
        call.on('cancelled', () => this.cancelled++);
        const list = this.streams[kind]!;
        list.push(call);
        this[kind](call, list.length);
      };
    const unary =
      (kind: 'jwtSvid' | 'validate'): Unary =>
      (call, cb) => {
        if (call.metadata.get(WORKLOAD_HEADER)[0] !== 'true') {
          cb(fail(grpc.status.INVALID_ARGUMENT, 'security header missing'));
          return;
        }
        this[kind](call, cb);
      };
    server.addService(workloadServiceDefinition(), {
      FetchX509SVID: stream('x509'),
      FetchX509Bundles: stream('x509Bundles'),
      FetchJWTBundles: stream('jwtBundles'),
      FetchJWTSVID: unary('jwtSvid'),
      ValidateJWTSVID: unary('validate'),
    });
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(this.target, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    this.server = server;
    cleanups.push(() => this.stop());
    return this;
  }

  stop(): void {
    this.server?.forceShutdown();
    this.server = undefined;
  }
}

async function agent(): Promise<TestAgent> {
  return new TestAgent(socketPath()).start();
}

function client(target: string): WorkloadApiClient {
  const c = new WorkloadApiClient(target, { backoff: BACKOFF });
  cleanups.push(() => c.close());
  return c;
}

function source(socket: string, pick?: string): X509Source {
  const s = new X509Source({ socket, backoff: BACKOFF, ...(pick ? { pick } : {}) });
  cleanups.push(() => s.close());
  return s;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Collects what a watch reports. */
function recorder<T>(): { updates: T[]; errors: WorkloadApiError[]; onUpdate(v: T): void; onError(e: WorkloadApiError): void } {
  const r = {
    updates: [] as T[],
    errors: [] as WorkloadApiError[],
    onUpdate: (v: T) => void r.updates.push(v),
    onError: (e: WorkloadApiError) => void r.errors.push(e),
  };
  return r;
}

describe('resolveWorkloadSocket', () => {
  it('accepts unix:/path, unix:///path and a bare absolute path, all as one target', () => {
    expect(resolveWorkloadSocket('unix:/run/spire/agent.sock', {})).toBe('unix:/run/spire/agent.sock');
    expect(resolveWorkloadSocket('unix:///run/spire/agent.sock', {})).toBe('unix:/run/spire/agent.sock');
    expect(resolveWorkloadSocket('/run/spire/agent.sock', {})).toBe('unix:/run/spire/agent.sock');
    expect(socketFilePath('unix:/run/spire/agent.sock')).toBe('/run/spire/agent.sock');
    expect(socketFilePath('unix:///run/spire/agent.sock')).toBe('/run/spire/agent.sock');
  });

  it('falls back to SPIFFE_ENDPOINT_SOCKET, and the configured value wins over it', () => {
    const env = { SPIFFE_ENDPOINT_SOCKET: 'unix:///tmp/env.sock' };
    expect(resolveWorkloadSocket(undefined, env)).toBe('unix:/tmp/env.sock');
    expect(resolveWorkloadSocket('', env)).toBe('unix:/tmp/env.sock');
    expect(resolveWorkloadSocket('unix:/tmp/cfg.sock', env)).toBe('unix:/tmp/cfg.sock');
  });

  it('says so when neither a socket nor SPIFFE_ENDPOINT_SOCKET is given', () => {
    expect(() => resolveWorkloadSocket(undefined, {})).toThrow(WorkloadApiError);
    expect(() => resolveWorkloadSocket(undefined, {})).toThrow(/no socket configured and SPIFFE_ENDPOINT_SOCKET is not set/);
  });

  it('refuses other schemes, hosts and relative paths, naming the value', () => {
    expect(() => resolveWorkloadSocket('tcp://127.0.0.1:8081', {})).toThrow(/"tcp:\/\/127\.0\.0\.1:8081".*scheme "tcp" is not supported/);
    expect(() => resolveWorkloadSocket('unix://agent/run/x.sock', {})).toThrow(/"unix:\/\/agent\/run\/x\.sock".*names a host \("agent"\)/);
    expect(() => resolveWorkloadSocket('unix:agent.sock', {})).toThrow(/"unix:agent\.sock".*not absolute/);
    expect(() => resolveWorkloadSocket('agent.sock', {})).toThrow(/"agent\.sock".*not absolute/);
    expect(() => resolveWorkloadSocket(undefined, { SPIFFE_ENDPOINT_SOCKET: 'http://x' })).toThrow(
      /SPIFFE_ENDPOINT_SOCKET "http:\/\/x"/,
    );
  });
});

describe('WorkloadApiClient X.509', () => {
  it('sends the security header; a call without it is refused with INVALID_ARGUMENT', async () => {
    const a = await agent();
    a.x509 = (call) => call.write(x509Resp([alice1]));
    const ctx = await client(a.target).fetchX509Context();
    expect(ctx.svids.map((s) => s.id.id)).toEqual([ALICE]);
    expect(serialOf(ctx.svids[0]!.chainDer[0]!)).toBe(serialOf(alice1.chainDer[0]!));
    expect(ctx.svids[0]!.keyPem).toBe(alice1.keyPem);
    expect(ctx.svids[0]!.certPem).toBe(alice1.certPem);
    expect(ctx.svids[0]!.notAfter.getTime()).toBe(alice1.notAfter.getTime());
    expect(ctx.bundles.trustDomains()).toEqual([TD]);

    const Ctor = workloadClientConstructor();
    const raw = new Ctor(a.target, grpc.credentials.createInsecure());
    cleanups.push(() => raw.close());
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = (raw as unknown as Record<string, (r: object) => grpc.ClientReadableStream<unknown>>)['FetchX509SVID']!({});
      call.on('data', () => {});
      call.on('error', () => {});
      call.on('status', resolve);
    });
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toBe('security header missing');
    expect(a.streams['x509']).toHaveLength(1);
  });

  it('treats INVALID_ARGUMENT as fatal: one error, no retry', async () => {
    const a = await agent();
    a.x509 = (call) => call.emit('error', fail(grpc.status.INVALID_ARGUMENT, 'bad request'));
    const r = recorder<X509Context>();
    client(a.target).watchX509Context(r);
    await waitFor('the error', () => r.errors.length > 0);
    await sleep(300);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]!.retrying).toBe(false);
    expect(r.errors[0]!.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(r.errors[0]!.message).toBe(`SPIFFE Workload API ${a.target}: INVALID_ARGUMENT: bad request`);
    expect(a.streams['x509']).toHaveLength(1);

    // The source gives up at once instead of waiting out its timeout.
    const started = Date.now();
    await expect(source(a.target).ready(5000)).rejects.toThrow(/INVALID_ARGUMENT: bad request/);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('retries PERMISSION_DENIED, reporting it, until the identity is issued', async () => {
    const a = await agent();
    a.x509 = (call, nth) => {
      if (nth <= 2) call.emit('error', fail(grpc.status.PERMISSION_DENIED, 'no identity issued'));
      else call.write(x509Resp([alice1]));
    };
    const r = recorder<X509Context>();
    client(a.target).watchX509Context(r);
    await waitFor('an update', () => r.updates.length > 0);
    expect(r.updates[0]!.svids[0]!.id.id).toBe(ALICE);
    expect(r.errors).toHaveLength(2);
    for (const e of r.errors) {
      expect(e.retrying).toBe(true);
      expect(e.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(e.message).toContain(`SPIFFE Workload API ${a.target}: PERMISSION_DENIED: no identity issued`);
    }
    expect(a.streams['x509']).toHaveLength(3);
  });

  it('retries while the socket is missing and connects once the agent starts', async () => {
    const path = socketPath();
    const src = source(`unix://${path}`);
    await waitFor('an error', () => src.lastError !== undefined);
    expect(src.lastError!.message).toBe(
      `SPIFFE Workload API unix:${path}: no such socket (is the SPIRE agent running, and is the socket mounted?)`,
    );
    expect(src.lastError!.retrying).toBe(true);
    expect(() => src.svid()).toThrow(/no X\.509-SVID yet: no such socket/);
    expect(src.bundleFor(TD)).toBeUndefined();

    await sleep(100);
    const a = new TestAgent(path);
    a.x509 = (call) => call.write(x509Resp([alice1]));
    await a.start();
    await src.ready(3000);
    expect(src.svid().id.id).toBe(ALICE);
    expect(src.lastError).toBeUndefined();
  });

  it('follows an agent restart on the same socket', async () => {
    const a = await agent();
    a.x509 = (call) => call.write(x509Resp([alice1]));
    const src = source(a.target);
    await src.ready(3000);
    a.stop();
    await waitFor('the failure', () => src.lastError !== undefined);
    expect(src.lastError!.retrying).toBe(true);
    expect(serialOf(src.svid().chainDer[0]!)).toBe(serialOf(alice1.chainDer[0]!));

    const b = new TestAgent(a.path);
    b.x509 = (call) => call.write(x509Resp([alice2]));
    await b.start();
    await waitFor('the new SVID', () => src.updates === 2);
    expect(serialOf(src.svid().chainDer[0]!)).toBe(serialOf(alice2.chainDer[0]!));
  });

  it('reconnects when the agent ends the stream, without re-emitting an unchanged context', async () => {
    const a = await agent();
    a.x509 = (call, nth) => {
      call.write(x509Resp([alice1]));
      if (nth === 1 || nth === 3) call.end();
    };
    const r = recorder<X509Context>();
    client(a.target).watchX509Context(r);
    await waitFor('the reconnect', () => a.streams['x509']!.length === 2);
    await waitFor('updates', () => r.updates.length === 2);
    expect(r.errors.map((e) => e.message)).toEqual([
      `SPIFFE Workload API ${a.target}: FetchX509SVID: the agent ended the stream; reconnecting`,
    ]);

    const src = source(a.target);
    await src.ready(3000);
    await waitFor('the source reconnect', () => a.streams['x509']!.length === 4);
    await sleep(50);
    expect(src.updates).toBe(1);
  });

  it('follows rotation: a new SVID on the stream is an update with the new serial', async () => {
    const a = await agent();
    a.x509 = (call) => call.write(x509Resp([alice1]));
    const lines: { level: string; msg: string }[] = [];
    const logger = pino({ level: 'debug', formatters: { level: (label) => ({ level: label }) } }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const src = new X509Source({ socket: a.target, backoff: BACKOFF, logger });
    cleanups.push(() => src.close());
    await src.ready(3000);
    expect(serialOf(src.svid().chainDer[0]!)).toBe(serialOf(alice1.chainDer[0]!));
    const seen: X509Context[] = [];
    src.on('update', (ctx: X509Context) => seen.push(ctx));

    a.last().write(x509Resp([alice2]));
    await waitFor('the rotation', () => seen.length === 1);
    expect(serialOf(seen[0]!.svids[0]!.chainDer[0]!)).toBe(serialOf(alice2.chainDer[0]!));
    expect(serialOf(src.svid().chainDer[0]!)).toBe(serialOf(alice2.chainDer[0]!));
    expect(src.svid().keyPem).toBe(alice2.keyPem);
    expect(src.updates).toBe(2);
    expect(lines.some((l) => l.level === 'info' && l.msg === `SVID rotated ${ALICE} expires ${alice2.notAfter.toISOString()}`)).toBe(true);

    // The same response again is not a change.
    a.last().write(x509Resp([alice2]));
    await sleep(100);
    expect(seen).toHaveLength(1);
    expect(src.updates).toBe(2);
  });

  it('picks the configured SPIFFE ID among several SVIDs, and complains when it is missing', async () => {
    const a = await agent();
    a.x509 = (call) => call.write(x509Resp([alice1, bob]));
    const first = source(a.target);
    const picked = source(a.target, BOB);
    await Promise.all([first.ready(3000), picked.ready(3000)]);
    expect(first.svid().id.id).toBe(ALICE);
    expect(picked.svid().id.id).toBe(BOB);

    const carol = `spiffe://${TD}/ns/default/sa/carol`;
    await expect(source(a.target, carol).ready(300)).rejects.toThrow(`no X.509-SVID for ${carol} (the agent issued ${ALICE}, ${BOB})`);
  });

  it('replaces the bundles on every update: a federated bundle that disappears is gone', async () => {
    const a = await agent();
    a.x509 = (call) =>
      call.write(x509Resp([alice1], { 'spiffe://cluster-b.example': fedCa.der, 'cluster-c.example': fedCa.der }));
    const src = source(a.target);
    await src.ready(3000);
    expect(src.bundles().trustDomains()).toEqual([TD, 'cluster-b.example', 'cluster-c.example'].sort());
    expect(src.bundleFor('cluster-b.example')!.certs[0]!.equals(fedCa.der)).toBe(true);
    expect(src.bundleFor(TD)!.certs[0]!.equals(ca.der)).toBe(true);

    const seen: X509Context[] = [];
    src.on('update', (ctx: X509Context) => seen.push(ctx));
    a.last().write(x509Resp([alice1], { 'spiffe://cluster-b.example': fedCa.der }));
    await waitFor('the bundle-only update', () => seen.length === 1);
    expect(src.bundles().trustDomains()).toEqual([TD, 'cluster-b.example'].sort());
    expect(src.bundleFor('cluster-c.example')).toBeUndefined();

    a.last().write(x509Resp([alice1]));
    await waitFor('the next update', () => seen.length === 2);
    expect(src.bundles().trustDomains()).toEqual([TD]);
    expect(src.bundleFor('cluster-b.example')).toBeUndefined();
  });

  it('reports malformed responses and keeps the previous state and the stream', async () => {
    const a = await agent();
    a.x509 = (call) => call.write(x509Resp([alice1]));
    const r = recorder<X509Context>();
    client(a.target).watchX509Context(r);
    await waitFor('the first update', () => r.updates.length === 1);

    const bad = (patch: Partial<X509SvidResponseMsg['svids'][number]>): X509SvidResponseMsg => ({
      ...x509Resp([]),
      svids: [{ ...svidMsg(alice2), ...patch }],
    });
    a.last().write(bad({ x509_svid: Buffer.from('not a certificate') }));
    a.last().write(bad({ spiffe_id: 'spiffe://Cluster-A/x' }));
    a.last().write(bad({ spiffe_id: BOB }));
    a.last().write(bad({ x509_svid_key: bob.keyDer }));
    a.last().write(bad({ bundle: Buffer.alloc(0) }));
    a.last().write({ ...x509Resp([alice2]), federated_bundles: { 'spiffe://cluster-b.example': Buffer.from([0x30, 0x10, 1]) } });
    a.last().write({ svids: [], crl: [], federated_bundles: {} });
    await waitFor('seven errors', () => r.errors.length === 7);
    const msgs = r.errors.map((e) => e.message.replace(`SPIFFE Workload API ${a.target}: `, ''));
    expect(msgs[0]).toMatch(/^malformed response: X\.509-SVID 1 \(spiffe:\/\/.*alice\) certificate chain: DER certificate list: expected a SEQUENCE at byte 0$/);
    expect(msgs[1]).toMatch(/^malformed response: X\.509-SVID 1 .*invalid SPIFFE ID "spiffe:\/\/Cluster-A\/x": trust domain characters/);
    expect(msgs[2]).toBe(`malformed response: X.509-SVID 1 (${BOB}): the leaf certificate's URI SAN is ${ALICE}, not ${BOB}`);
    expect(msgs[3]).toMatch(/^malformed response: X\.509-SVID 1 .*: private key: it does not match the leaf certificate$/);
    expect(msgs[4]).toBe(`malformed response: no bundle for ${ALICE}'s own trust domain ${TD}`);
    expect(msgs[5]).toMatch(/^malformed response: federated bundle for cluster-b\.example: .*truncated/);
    expect(msgs[6]).toMatch(/PERMISSION_DENIED: the agent answered no X\.509-SVID/);
    expect(r.errors[6]!.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(r.errors.every((e) => e.retrying === true)).toBe(true);
    expect(r.updates).toHaveLength(1);

    a.last().write(x509Resp([alice2]));
    await waitFor('the good update', () => r.updates.length === 2);
    expect(serialOf(r.updates[1]!.svids[0]!.chainDer[0]!)).toBe(serialOf(alice2.chainDer[0]!));
    expect(a.streams['x509']).toHaveLength(1);
  });

  it('fetchX509Context takes one response and cancels the stream', async () => {
    const a = await agent();
    a.x509 = (call) => call.write(x509Resp([alice1]));
    const ctx = await client(a.target).fetchX509Context();
    expect(ctx.svids[0]!.id.id).toBe(ALICE);
    await waitFor('the cancellation', () => a.cancelled === 1);

    const missing = `unix:${socketPath()}`;
    await expect(client(missing).fetchX509Context()).rejects.toThrow(`SPIFFE Workload API ${missing}: no such socket`);
  });

  it('watches X.509 bundles', async () => {
    const a = await agent();
    a.x509Bundles = (call) => call.write({ crl: [], bundles: { [`spiffe://${TD}`]: ca.der, 'spiffe://cluster-b.example': fedCa.der } });
    const r = recorder<import('../identity/x509-bundle.js').BundleSet>();
    client(a.target).watchX509Bundles(r);
    await waitFor('bundles', () => r.updates.length === 1);
    expect(r.updates[0]!.trustDomains()).toEqual([TD, 'cluster-b.example'].sort());
    a.last('x509Bundles').write({ crl: [], bundles: { [`spiffe://${TD}`]: ca.der } });
    await waitFor('second', () => r.updates.length === 2);
    expect(r.updates[1]!.trustDomains()).toEqual([TD]);
  });
});

describe('X509Source readiness', () => {
  it('names the socket and "no such socket" when the socket does not exist', async () => {
    const path = socketPath();
    const src = source(`unix:${path}`);
    await expect(src.ready(300)).rejects.toThrow(
      `SPIFFE Workload API unix:${path}: no X.509-SVID within 0.3 s: no such socket (is the SPIRE agent running, and is the socket mounted?)`,
    );
  });

  it('says the agent answered nothing when it never writes', async () => {
    const a = await agent();
    const src = source(a.target);
    await expect(src.ready(300)).rejects.toThrow(`SPIFFE Workload API ${a.target}: answered nothing within 0.3 s`);
    expect(a.streams['x509']).toHaveLength(1);
  });

  it('shares one stream per socket however the socket is written', async () => {
    const a = await agent();
    a.x509 = (call) => call.write(x509Resp([alice1]));
    cleanups.push(() => closeSharedSources());
    const s1 = sharedX509Source(`unix:${a.path}`, { backoff: BACKOFF });
    const s2 = sharedX509Source(`unix://${a.path}`, { backoff: BACKOFF });
    const s3 = sharedX509Source(a.path, { backoff: BACKOFF });
    expect(s2).toBe(s1);
    expect(s3).toBe(s1);
    await s1.ready(3000);
    expect(a.streams['x509']).toHaveLength(1);

    closeSharedSources();
    await expect(s1.ready()).rejects.toThrow(/closed/);
    const s4 = sharedX509Source(a.path, { backoff: BACKOFF });
    expect(s4).not.toBe(s1);
    await s4.ready(3000);
    expect(a.streams['x509']).toHaveLength(2);
  });
});

describe('WorkloadApiClient JWT', () => {
  const exp = Math.floor(Date.now() / 1000) + 600;
  const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const token = `${b64({ alg: 'ES256', kid: 'k1' })}.${b64({ sub: ALICE, aud: ['slim'], exp })}.c2ln`;

  it('fetches JWT-SVIDs and decodes their expiry', async () => {
    const a = await agent();
    const requests: JwtSvidRequestMsg[] = [];
    a.jwtSvid = (call, cb) => {
      requests.push(call.request as JwtSvidRequestMsg);
      cb(null, { svids: [{ spiffe_id: ALICE, svid: token, hint: 'internal' }] });
    };
    const c = client(a.target);
    const svids = await c.fetchJwtSvid({ audience: ['slim', 'other'], spiffeId: ALICE });
    expect(svids).toEqual([{ spiffeId: ALICE, token, hint: 'internal', expiresAt: new Date(exp * 1000) }]);
    expect(requests).toEqual([{ audience: ['slim', 'other'], spiffe_id: ALICE }]);

    await expect(c.fetchJwtSvid({ audience: [] })).rejects.toThrow(/needs at least one non-empty audience/);
    a.jwtSvid = (_call, cb) => cb(null, { svids: [{ spiffe_id: ALICE, svid: 'not-a-jwt', hint: '' }] });
    await expect(c.fetchJwtSvid({ audience: ['slim'] })).rejects.toThrow(/JWT-SVID for .*alice is not a JWT/);
    a.jwtSvid = (_call, cb) => cb(fail(grpc.status.PERMISSION_DENIED, 'no identity issued'));
    const err = await c.fetchJwtSvid({ audience: ['slim'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkloadApiError);
    expect((err as WorkloadApiError).code).toBe(grpc.status.PERMISSION_DENIED);
    expect((err as WorkloadApiError).message).toContain(`SPIFFE Workload API ${a.target}: PERMISSION_DENIED: no identity issued`);
  });

  it('validates a JWT-SVID and returns its claims as JSON', async () => {
    const a = await agent();
    a.validate = (call, cb) => {
      const req = call.request as ValidateJwtSvidRequestMsg;
      if (req.audience !== 'slim' || req.svid !== token) cb(fail(grpc.status.INVALID_ARGUMENT, 'audience mismatch'));
      else cb(null, { spiffe_id: ALICE, claims: toStruct({ sub: ALICE, aud: ['slim'], exp, nested: { ok: true, n: null } }) });
    };
    const c = client(a.target);
    const res = await c.validateJwtSvid(token, 'slim');
    expect(res).toEqual({ spiffeId: ALICE, claims: { sub: ALICE, aud: ['slim'], exp, nested: { ok: true, n: null } } });
    const err = await c.validateJwtSvid(token, 'elsewhere').catch((e: unknown) => e);
    expect((err as WorkloadApiError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((err as WorkloadApiError).message).toBe(`SPIFFE Workload API ${a.target}: INVALID_ARGUMENT: audience mismatch`);
  });

  it('fetches and watches JWT bundles keyed by trust domain', async () => {
    const a = await agent();
    const jwks = (kid: string): Buffer => Buffer.from(JSON.stringify({ keys: [{ kty: 'EC', kid, use: 'jwt-svid' }] }));
    a.jwtBundles = (call) => call.write({ bundles: { [`spiffe://${TD}`]: jwks('k1') } });
    const c = client(a.target);
    const fetched = await c.fetchJwtBundles();
    expect([...fetched.keys()]).toEqual([TD]);
    expect(fetched.get(TD)!.keys[0]!['kid']).toBe('k1');

    const r = recorder<Map<string, import('../identity/workload-api-client.js').Jwks>>();
    c.watchJwtBundles(r);
    await waitFor('bundles', () => r.updates.length === 1);
    a.last('jwtBundles').write({ bundles: { [`spiffe://${TD}`]: jwks('k2'), 'cluster-b.example': jwks('b1') } });
    a.last('jwtBundles').write({ bundles: { [`spiffe://${TD}`]: Buffer.from('{"nokeys":1}') } });
    await waitFor('update and error', () => r.updates.length === 2 && r.errors.length === 1);
    expect([...r.updates[1]!.keys()].sort()).toEqual([TD, 'cluster-b.example'].sort());
    expect(r.updates[1]!.get(TD)!.keys[0]!['kid']).toBe('k2');
    expect(r.errors[0]!.message).toMatch(/JWT bundle for cluster-a\.example is not a JWKS/);
  });
});
