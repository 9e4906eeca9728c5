// SPIFFE mTLS for the gRPC services built on @grpc/grpc-js (the controller channel, the admin
// API): a grpc-js server and clients take their credentials from ConnectionTls, fed by the dev
// issuer's Workload API with the seed's three federated trust domains. The server (admin.example)
// accepts cluster-a callers and answers with each caller's verified SPIFFE ID; a client accepts
// the server only when admin.example is in its trust_domains. SVIDs live 3 s, so they rotate
// under open channels, and new connections get the new ones.

import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConnectionTls, type RefusalEvent } from '../identity/connection-tls.js';
import { grpcChannelCredentials, serveGrpc, verifyGrpcCall, type GrpcListener } from '../identity/grpc-tls.js';
import { mintSvid } from '../identity/x509-mint.js';
import { closeSharedSources } from '../identity/x509-source.js';
import { startSpiffeEnv, type SpiffeEnv } from './support/spiffe-env.js';

const SERVER = 'spiffe://admin.example/ns/slim/sa/slim-control-plane';
const CLIENT_A = 'spiffe://cluster-a.example/ns/slim/sa/slim';
const CLIENT_B = 'spiffe://cluster-b.example/ns/slim/sa/slim';
const SVID_TTL_MS = 3000;
// A name rather than an IP: SPIFFE verification replaces hostname checks, and Node warns about
// an IP as TLS server name (which grpc-js would send for a 127.0.0.1 target).
const HOST = 'localhost';

// ---------------------------------------------------------------------------------------------
// A tiny service, as the admin API would define one

const PROTO = `syntax = "proto3";
package slimtest.identity.v1;
service Whoami {
  rpc Who (WhoRequest) returns (WhoReply);
}
message WhoRequest { string note = 1; }
message WhoReply {
  string caller = 1; // the caller's verified SPIFFE ID
  string peer = 2;   // the caller's address:port as the server sees it (one per connection)
  string server = 3; // the server's own SPIFFE ID
}
`;

interface WhoRequest {
  note: string;
}
interface WhoReply {
  caller: string;
  peer: string;
  server: string;
}
type WhoClient = grpc.Client & {
  who(req: WhoRequest, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, reply?: WhoReply) => void): grpc.ClientUnaryCall;
};

const protoDir = mkdtempSync(join(tmpdir(), 'slim-identity-grpc-'));
writeFileSync(join(protoDir, 'whoami.proto'), PROTO);
const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(join(protoDir, 'whoami.proto'), { keepCase: true, defaults: true })) as unknown as {
  slimtest: { identity: { v1: { Whoami: grpc.ServiceClientConstructor } } };
};
const Whoami = pkg.slimtest.identity.v1.Whoami;

// ---------------------------------------------------------------------------------------------
// Resources, released after the file

let env: SpiffeEnv;
let server: grpc.Server | undefined;
let serverTls: ConnectionTls;
let port: number;
let listener: GrpcListener | undefined;
/** What the server refused, through ConnectionTls's onRefusal (i.e. verifyGrpcCall). */
const serverRefusals: RefusalEvent[] = [];
const tlsConfigs: ConnectionTls[] = [];
const clients: grpc.Client[] = [];

async function connectionTls(socket: string, trustDomains: string[], onRefusal?: (e: RefusalEvent) => void): Promise<ConnectionTls> {
  const t = await ConnectionTls.create(
    { insecure: false, skipVerify: false, cert: { type: 'spire', socketPath: socket }, ca: { type: 'spire', socketPath: socket, trustDomains } },
    'test.tls',
    { readyTimeoutMs: 5000, ...(onRefusal ? { onRefusal } : {}) },
  );
  if (!t) throw new Error('ConnectionTls.create returned plaintext');
  tlsConfigs.push(t);
  return t;
}

function client(credentials: grpc.ChannelCredentials): WhoClient {
  const c = new Whoami(`${HOST}:${port}`, credentials) as unknown as WhoClient;
  clients.push(c);
  return c;
}

function who(c: WhoClient, note = 'hi', timeoutMs = 3000): Promise<WhoReply> {
  return new Promise((resolve, reject) => {
    c.who({ note }, { deadline: Date.now() + timeoutMs }, (err, reply) => (err ? reject(err) : resolve(reply!)));
  });
}

async function failure(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error('the call succeeded');
}

interface RawOutcome {
  /** The client's handshake completed and it accepted the server. */
  secureConnect: boolean;
  serial: string | undefined;
  bytes: number;
  error: (Error & { code?: string }) | undefined;
}

/**
 * A raw TLS connection to the server with `t`'s client material. `hold`: wait for the server to
 * end it (a refusal) instead of closing it at once.
 */
function rawTls(t: ConnectionTls, hold = false): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const out: RawOutcome = { secureConnect: false, serial: undefined, bytes: 0, error: undefined };
    const s = tls.connect(port, HOST, { ...t.clientOptions(HOST), ALPNProtocols: ['h2'] }, () => {
      out.secureConnect = s.authorized;
      out.serial = s.getPeerCertificate().serialNumber;
      if (!hold) s.destroy();
    });
    const timer = setTimeout(() => s.destroy(new Error('the server kept the connection open')), 3000);
    s.on('data', (d: Buffer) => (out.bytes += d.length));
    s.on('error', (err) => (out.error = err));
    s.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

/** Serial of the certificate `t` presents now (same hex spelling as getPeerCertificate()). */
function presentedSerial(t: ConnectionTls): string {
  return new X509Certificate(t.serverOptions().cert as string | Buffer).serialNumber;
}

/** When the certificate `t` presents now expires. */
function presentedNotAfter(t: ConnectionTls): number {
  return new Date(new X509Certificate(t.serverOptions().cert as string | Buffer).validTo).getTime();
}

function nextUpdate(t: ConnectionTls, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      t.off('update', done);
      reject(new Error(`no 'update' within ${timeoutMs} ms`));
    }, timeoutMs);
    t.once('update', done);
  });
}

beforeAll(async () => {
  env = await startSpiffeEnv({ server: SERVER, 'client-a': CLIENT_A, 'client-b': CLIENT_B }, { svidTtl: `${SVID_TTL_MS / 1000}s` });
  serverTls = await connectionTls(env.socket['server']!, ['cluster-a.example'], (e) => serverRefusals.push(e));
  server = new grpc.Server();
  server.addService(Whoami.service, {
    who: (call: grpc.ServerUnaryCall<WhoRequest, WhoReply>, cb: grpc.sendUnaryData<WhoReply>) => {
      const v = verifyGrpcCall(serverTls, call);
      if (!v.ok) {
        cb({ code: grpc.status.UNAUTHENTICATED, details: `${v.reason}: ${v.message}` });
        return;
      }
      cb(null, { caller: v.id, peer: call.getPeer(), server: serverTls.localId() });
    },
  });
  listener = await serveGrpc(serverTls, server, HOST, 0);
  port = listener.port;
}, 20_000);

afterAll(async () => {
  for (const c of clients.splice(0)) c.close();
  await listener?.close();
  server?.forceShutdown();
  for (const t of tlsConfigs.splice(0)) t.close();
  closeSharedSources();
  await env?.stop();
  rmSync(protoDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------

describe('grpc-js over SPIFFE mTLS through ConnectionTls', () => {
  it('serves a cluster-a client right after bind and answers with its verified SPIFFE ID', async () => {
    // Right after bindAsync, before any rotation: the server credentials must be usable from
    // the first SVID on, not only after the Workload API pushes a second one.
    const clientTls = await connectionTls(env.socket['client-a']!, ['admin.example']);
    expect(serverTls.localId()).toBe(SERVER);
    expect(serverTls.acceptedTrustDomains()).toEqual(['admin.example', 'cluster-a.example']);
    expect(clientTls.localId()).toBe(CLIENT_A);
    const reply = await who(client(grpcChannelCredentials(clientTls)));
    expect(reply).toMatchObject({ caller: CLIENT_A, server: SERVER });
    expect(serverRefusals).toEqual([]);
  });

  it('refuses a cluster-b client when it connects, with a reason in its log and metrics', async () => {
    // client-b accepts admin.example, so only the server can be the one refusing.
    const clientTls = await connectionTls(env.socket['client-b']!, ['admin.example']);
    const refusedClient = client(grpcChannelCredentials(clientTls));
    const err = await failure(who(refusedClient));
    refusedClient.close(); // grpc-js would keep reconnecting (and being refused) in the background
    // The connection is closed right after the handshake, before any HTTP/2 byte: the client
    // can only say it failed to connect; the server says why.
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(serverRefusals.length).toBeGreaterThanOrEqual(1);
    expect(serverRefusals[0]).toMatchObject({ direction: 'inbound', reason: 'unauthorized', id: CLIENT_B });
    expect(serverRefusals[0]!.message).toContain('is not in trust domain(s) admin.example, cluster-a.example');
    const raw = await rawTls(clientTls, true);
    expect(raw.secureConnect).toBe(true);
    expect(raw.bytes).toBe(0);
    serverRefusals.length = 0;
  });

  it('refuses a caller whose chain a bundle CA signed but whose SPIFFE ID names another domain', async () => {
    // Signed by cluster-a's CA but naming a cluster-b ID: a CA of one trust domain cannot vouch
    // for another's identity.
    const forged = await mintSvid(env.issuer.authority.of('cluster-a.example').ca, { uris: [CLIENT_B] });
    const adminCa = new X509Certificate(env.issuer.authority.of('admin.example').ca.der).toString();
    const creds = grpc.credentials.createSsl(Buffer.from(adminCa), Buffer.from(forged.keyPem), Buffer.from(forged.certPem), {
      checkServerIdentity: () => undefined,
    });
    const forgedClient = client(creds);
    const err = await failure(who(forgedClient));
    forgedClient.close();
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(serverRefusals.length).toBeGreaterThanOrEqual(1);
    expect(serverRefusals[0]).toMatchObject({ direction: 'inbound', reason: 'untrusted_chain', id: CLIENT_B });
    expect(serverRefusals[0]!.peer).toMatch(/^(127\.0\.0\.1|\[?::1\]?|localhost):\d+$/);
    serverRefusals.length = 0;
  });

  it('a client whose trust_domains omit admin.example refuses the server', async () => {
    const refused: RefusalEvent[] = [];
    const clientTls = await connectionTls(env.socket['client-a']!, [], (e) => refused.push(e));
    expect(clientTls.acceptedTrustDomains()).toEqual(['cluster-a.example']);
    const c = client(grpcChannelCredentials(clientTls));
    const err = await failure(who(c));
    c.close();
    // The PeerRefusedError from checkServerIdentity surfaces, message included, in the status.
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(err.details).toContain(`PeerRefusedError: ${SERVER} is not in trust domain(s) cluster-a.example`);
    expect(refused[0]).toMatchObject({ direction: 'outbound', reason: 'unauthorized', id: SERVER, peer: HOST });
    // Refused before a byte was written: the server saw nothing to refuse.
    expect(serverRefusals.filter((r) => r.id === CLIENT_A)).toEqual([]);
  });

  it('rotation: new connections get the new server SVID, an open channel keeps working', async () => {
    const clientTls = await connectionTls(env.socket['client-a']!, ['admin.example']);
    const channel = client(grpcChannelCredentials(clientTls));
    const start = Date.now();
    const first = await who(channel, 'first');
    expect(first.caller).toBe(CLIENT_A);
    // The certificates this connection was made with expire no later than these.
    const connectionCertsExpire = Math.max(presentedNotAfter(serverTls), presentedNotAfter(clientTls));

    // A new connection is shown the server's current SVID...
    const rawBefore = await rawTls(clientTls);
    expect(rawBefore.secureConnect).toBe(true);
    const serialBefore = rawBefore.serial!;
    // ...the server's SVID rotates...
    const rotated = nextUpdate(serverTls, 5000);
    expect(await env.issuer.rotate(SERVER)).toBe(1);
    await rotated;
    // ...and the next new connection is shown the new one. (Read around the connect: the 3 s
    // SVIDs also rotate on their own every 1.5 s.)
    const presentedBefore = presentedSerial(serverTls);
    const rawAfter = await rawTls(clientTls);
    const presentedAfter = presentedSerial(serverTls);
    expect(rawAfter.secureConnect).toBe(true);
    expect(rawAfter.serial).not.toBe(serialBefore);
    expect([presentedBefore, presentedAfter]).toContain(rawAfter.serial);

    // The open channel keeps working across rotations, on the same connection, past the expiry
    // of both certificates it was established with.
    let rotations = 0;
    const count = (): void => {
      rotations++;
    };
    serverTls.on('update', count);
    const until = Math.max(start + 4000, connectionCertsExpire + 300);
    const replies: WhoReply[] = [];
    try {
      while (Date.now() < until) {
        replies.push(await who(channel, `call ${replies.length}`, 2000));
        await new Promise((r) => setTimeout(r, 250));
      }
    } finally {
      serverTls.off('update', count);
    }
    expect(replies.length).toBeGreaterThanOrEqual(8);
    for (const r of replies) expect(r).toEqual({ caller: CLIENT_A, peer: first.peer, server: SERVER });
    expect(rotations).toBeGreaterThanOrEqual(1);
    expect(Date.now()).toBeGreaterThan(connectionCertsExpire);

    // A new channel after all that connects with the rotated SVIDs of both ends.
    const fresh = await who(client(grpcChannelCredentials(clientTls)), 'fresh');
    expect(fresh.caller).toBe(CLIENT_A);
    expect(fresh.peer).not.toBe(first.peer);
    expect(serverRefusals.filter((r) => r.id === CLIENT_A)).toEqual([]);
  });
});
