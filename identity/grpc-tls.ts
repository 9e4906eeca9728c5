// grpc-js over a ConnectionTls: the controller channel and the admin API get the same TLS
// material (rotations included) and the same peer verification as the data plane. Separate
// from connection-tls.ts so that programs that never speak grpc-js do not load it.

import type { AddressInfo } from 'node:net';
import { createServer as createTlsServer, rootCertificates, type PeerCertificate, type TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { spiffeUriSan, type ConnectionTls, type PeerVerdict } from './connection-tls.js';

export interface GrpcListener {
  port: number;
  close(): Promise<void>;
}

let roots: string | undefined;

/** grpc-js wants a CA; without a configured one a client trusts the system's roots, as Node does. */
function systemRoots(): string {
  return (roots ??= rootCertificates.join('\n'));
}

/** A grpc-js CertificateProvider fed from the connection's sources (rotation included). */
function provider(tls: ConnectionTls, ca: () => string | Buffer | undefined): grpc.experimental.CertificateProvider {
  const caListeners = new Set<grpc.experimental.CaCertificateUpdateListener>();
  const idListeners = new Set<grpc.experimental.IdentityCertificateUpdateListener>();
  const caNow = (): grpc.experimental.CaCertificateUpdate | null => {
    const c = ca();
    return c ? { caCertificate: Buffer.from(c) } : null;
  };
  const idNow = (): grpc.experimental.IdentityCertificateUpdate | null => {
    const i = tls.identity();
    return i ? { certificate: Buffer.from(i.cert), privateKey: Buffer.from(i.key) } : null;
  };
  const onUpdate = (): void => {
    for (const l of caListeners) l(caNow());
    for (const l of idListeners) l(idNow());
  };
  // Subscribed only while grpc-js listens, so credentials made and dropped do not pile up.
  const sync = (): void => {
    tls.off('update', onUpdate);
    if (caListeners.size + idListeners.size > 0) tls.on('update', onUpdate);
  };
  // First delivery on the next tick: grpc-js registers its own watcher only after adding ours,
  // and a synchronous first update would be lost. grpc-js's FileWatcherCertificateProvider
  // defers the same way.
  return {
    addCaCertificateListener: (l) => {
      caListeners.add(l);
      sync();
      process.nextTick(() => caListeners.has(l) && l(caNow()));
    },
    removeCaCertificateListener: (l) => {
      caListeners.delete(l);
      sync();
    },
    addIdentityCertificateListener: (l) => {
      idListeners.add(l);
      sync();
      process.nextTick(() => idListeners.has(l) && l(idNow()));
    },
    removeIdentityCertificateListener: (l) => {
      idListeners.delete(l);
      sync();
    },
  };
}

/**
 * grpc-js channel credentials (controller channel, admin CLI) that follow rotations; with
 * SPIFFE trust the server is verified inside the handshake, before any call is sent.
 */
export function grpcChannelCredentials(tls: ConnectionTls): grpc.ChannelCredentials {
  const p = provider(tls, () => tls.trustedCaPem() ?? systemRoots());
  return grpc.experimental.createCertificateProviderChannelCredentials(p, tls.hasCertificate ? p : null, {
    rejectUnauthorized: tls.verification !== 'none',
    ...(tls.verification === 'spiffe' ? { checkServerIdentity: (host: string, cert: PeerCertificate) => tls.checkServer(cert, host) } : {}),
  });
}

/**
 * Serves a grpc-js server on host:port with this TLS. Our own TLS listener takes each connection
 * through verifyInbound — the full presented chain, the same SPIFFE rules, log line and metric
 * as the data plane — and only then hands the socket to grpc-js. (grpc-js's own TLS path offers
 * no hook between handshake and first call, shows handlers only the leaf, and drops OpenSSL's
 * refusals without a word.)
 */
export async function serveGrpc(tls: ConnectionTls, server: grpc.Server, host: string, port: number): Promise<GrpcListener> {
  // The socket handed over is already TLS: grpc-js speaks HTTP/2 over it as over plain TCP.
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const listener = createTlsServer({ ...tls.serverOptions(), ALPNProtocols: ['h2'] });
  const onUpdate = (): void => listener.setSecureContext(tls.serverOptions());
  tls.on('update', onUpdate);
  listener.on('secureConnection', (socket: TLSSocket) => {
    socket.on('error', () => undefined);
    let verdict: PeerVerdict;
    try {
      verdict = tls.verifyInbound(socket);
    } catch (err) {
      verdict = tls.refuse('inbound', `${socket.remoteAddress}:${socket.remotePort}`, 'malformed_certificate', `certificate could not be checked: ${(err as Error).message}`);
    }
    if (!verdict.ok) {
      socket.destroy();
      return;
    }
    // grpc-js shows handlers the peer certificate only on sockets marked authorized; this one
    // passed our verifier (OpenSSL was told not to judge).
    if (tls.verifiesPeers) (socket as { authorized: boolean }).authorized = true;
    injector.injectConnection(socket);
  });
  listener.on('tlsClientError', () => undefined);
  const addr = await new Promise<AddressInfo>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(port, host, () => {
      listener.off('error', reject);
      resolve(listener.address() as AddressInfo);
    });
  });
  return {
    port: addr.port,
    close: () =>
      new Promise<void>((resolve) => {
        tls.off('update', onUpdate);
        injector.destroy();
        listener.close(() => resolve());
      }),
  };
}

/**
 * The caller's SPIFFE ID on a call served by serveGrpc: its connection was verified when it was
 * accepted, so this reads the identity it proved.
 */
export function verifyGrpcCall(
  tls: ConnectionTls,
  call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } | null; getPeer(): string },
): PeerVerdict {
  if (!tls.verifiesPeers) return { ok: true, id: '' };
  const cert = call.getAuthContext()?.sslPeerCertificate;
  if (!cert?.raw) return tls.refuse('inbound', call.getPeer(), 'no_certificate', 'the call did not arrive on a connection this server verified');
  return { ok: true, id: spiffeUriSan(cert) ?? '' };
}
