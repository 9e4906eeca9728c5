// The DataPlaneService endpoint on node:http2: accepts OpenChannel streams and hands each to
// the owner as a Channel. Any other path gets UNIMPLEMENTED, as a gRPC server would answer.

import http2, { constants as h2, type Http2Server, type Http2SecureServer, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders, type SecureServerOptions } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { refuseSession } from './refusal.js';
import { OPEN_CHANNEL_PATH } from '../proto/dataplane.js';
import { Channel, type ChannelHandler, type ChannelLimits } from './channel.js';
import { Status, statusTrailers } from './grpc-status.js';
import { HTTP2_SETTINGS, MAX_SESSION_MEMORY_MB, keepAlive, tuneSession } from './http2-tuning.js';

/** Where a TLS server gets its material and how it checks peers (identity/ConnectionTls). */
export interface ServerTls {
  serverOptions(): SecureServerOptions;
  /** Decides on a peer once its handshake finished; a refusal has been logged and counted. */
  verifyInbound(socket: TLSSocket): { ok: true } | { ok: false; message: string };
  /** Material changed (rotation, files rewritten): new handshakes must use it. */
  on(event: 'update', listener: () => void): unknown;
}

export interface DataPlaneServerOptions {
  host: string;
  port: number;
  /** TLS; absent means plaintext (h2c). */
  tls?: ServerTls;
  limits: ChannelLimits;
  /** Called for every new OpenChannel stream; returns the handler for its messages. */
  accept(channel: Channel): ChannelHandler;
  /** Called for streams and sessions refused before a Channel exists. */
  onReject?(reason: string, remote: string): void;
  /** PING every connected peer this often (0: never); a peer silent for keepaliveTimeoutMs is dropped. */
  keepaliveIntervalMs?: number;
  keepaliveTimeoutMs?: number;
}

const PENDING: ChannelHandler = {
  onMessage: () => undefined,
  onClose: () => undefined,
};

export class DataPlaneServer {
  private readonly server: Http2Server | Http2SecureServer;
  private readonly sessions = new Set<ServerHttp2Session>();
  private readonly refused = new WeakSet<object>();
  readonly channels = new Set<Channel>();

  constructor(private readonly opts: DataPlaneServerOptions) {
    const common = {
      settings: HTTP2_SETTINGS,
      maxSessionMemory: MAX_SESSION_MEMORY_MB,
    };
    const tls = opts.tls;
    this.server = tls ? http2.createSecureServer({ ...common, ...tls.serverOptions(), allowHTTP1: false }) : http2.createServer(common);
    if (tls) {
      // New handshakes present the newest SVID at once; established sessions keep theirs.
      tls.on('update', () => (this.server as Http2SecureServer).setSecureContext(tls.serverOptions()));
    }
    // The raw TCP socket, before TLS and HTTP/2 wrap it (the session's socket proxy refuses
    // setNoDelay): writes are already coalesced per event-loop turn, so Nagle only adds delay.
    this.server.on('connection', (socket: Socket) => socket.setNoDelay(true));
    this.server.on('session', (session: ServerHttp2Session) => {
      // Runs synchronously after the handshake, before any frame of this session is read: a
      // refused peer never gets a stream.
      if (tls) {
        let verdict: ReturnType<ServerTls['verifyInbound']>;
        try {
          verdict = tls.verifyInbound(session.socket as TLSSocket);
        } catch (err) {
          // A verifier bug must refuse the peer, not crash the node or let the peer in.
          verdict = { ok: false, message: `certificate could not be checked: ${(err as Error).message}` };
        }
        if (!verdict.ok) {
          this.refused.add(session);
          refuseSession(session, verdict.message);
          return;
        }
      }
      tuneSession(session);
      // Without server-side liveness a link whose network went silent stays "up" here, and a
      // redial from the same peer would be taken for a duplicate of it.
      const interval = opts.keepaliveIntervalMs ?? 30_000;
      if (interval > 0) {
        const s = session.socket;
        keepAlive(session, interval, opts.keepaliveTimeoutMs ?? 10_000, `${s?.remoteAddress}:${s?.remotePort}`);
      }
      this.sessions.add(session);
      session.on('close', () => this.sessions.delete(session));
      session.on('error', () => undefined);
    });
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
    if (opts.tls) {
      this.server.on('tlsClientError', (err: Error, socket: { remoteAddress?: string; remotePort?: number }) => {
        opts.onReject?.(`TLS handshake failed: ${err.message}`, `${socket.remoteAddress}:${socket.remotePort}`);
      });
    }
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => undefined);
    // A refused session's streams still arrive (nghttp2 does not drop them after our GOAWAY).
    if (stream.destroyed || !stream.session || this.refused.has(stream.session)) {
      stream.close(h2.NGHTTP2_REFUSED_STREAM);
      return;
    }
    const remote = `${stream.session?.socket?.remoteAddress}:${stream.session?.socket?.remotePort}`;
    const refuse = (code: Status, reason: string): void => {
      this.opts.onReject?.(reason, remote);
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', ...statusTrailers(code, reason) }, { endStream: true });
    };
    const contentType = String(headers['content-type'] ?? '');
    if (!contentType.startsWith('application/grpc')) {
      this.opts.onReject?.(`unsupported content-type "${contentType}"`, remote);
      stream.respond({ ':status': 415 }, { endStream: true });
      return;
    }
    if (headers[':path'] !== OPEN_CHANNEL_PATH) {
      refuse(Status.UNIMPLEMENTED, `unknown method ${headers[':path']}`);
      return;
    }
    const encoding = headers['grpc-encoding'];
    if (encoding !== undefined && encoding !== 'identity') {
      refuse(Status.UNIMPLEMENTED, `grpc-encoding "${encoding}" is not supported`);
      return;
    }
    stream.respond(
      { ':status': 200, 'content-type': 'application/grpc', 'grpc-accept-encoding': 'identity' },
      { waitForTrailers: true },
    );
    const channel = new Channel(stream, 'server', this.opts.limits, PENDING);
    this.channels.add(channel);
    const handler = this.opts.accept(channel);
    channel.setHandler({
      onMessage: handler.onMessage,
      onClose: (status) => {
        this.channels.delete(channel);
        handler.onClose(status);
      },
    });
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off('error', onError);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** Stops accepting, ends every channel with `status`, then closes the sessions. */
  async close(status: Status = Status.UNAVAILABLE, details = 'server shutting down', graceMs = 2000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const ch of this.channels) ch.close(status, details);
    for (const s of this.sessions) s.close();
    const timer = setTimeout(() => {
      for (const s of this.sessions) s.destroy();
    }, graceMs);
    timer.unref();
    await closed;
    clearTimeout(timer);
  }
}
