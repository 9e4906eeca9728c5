// Pooled HTTP/2 client sessions: one session per remote endpoint (and TLS identity), shared by
// every channel opened towards it. A dead session is dropped from the pool so the next open
// dials again; liveness is checked with HTTP/2 PING rather than left to TCP.

import http2, { type ClientHttp2Session, type SecureClientSessionOptions } from 'node:http2';
import type { ConnectionOptions } from 'node:tls';
import { OPEN_CHANNEL_PATH } from '../proto/dataplane.js';
import { Channel, type ChannelHandler, type ChannelLimits } from './channel.js';
import { notePeerRefusal } from './refusal.js';
import { HTTP2_SETTINGS, MAX_SESSION_MEMORY_MB, keepAlive, tuneSession } from './http2-tuning.js';

export interface DialTarget {
  /** http://host:port (plaintext) or https://host:port (TLS). */
  url: string;
  /** TLS client options (ca, cert, key, servername, rejectUnauthorized) for https targets. */
  tls?: ConnectionOptions;
  /** Distinguishes sessions to the same URL made with different TLS identities. */
  poolKey?: string;
  /** Per-target liveness and connect settings; the pool's defaults otherwise. */
  keepaliveIntervalMs?: number;
  keepaliveTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Told why a session failed (certificate refusals are counted from here). */
  onSessionError?: (err: Error) => void;
}

export interface SessionPoolOptions {
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
  connectTimeoutMs: number;
}

const DEFAULTS: SessionPoolOptions = { keepaliveIntervalMs: 10_000, keepaliveTimeoutMs: 5_000, connectTimeoutMs: 10_000 };

export class SessionPool {
  private readonly sessions = new Map<string, ClientHttp2Session>();
  private readonly opts: SessionPoolOptions;

  constructor(opts: Partial<SessionPoolOptions> = {}) {
    this.opts = { ...DEFAULTS, ...opts };
  }

  /** Number of live pooled sessions (one per endpoint). */
  get size(): number {
    return this.sessions.size;
  }

  private key(t: DialTarget): string {
    return `${t.url}|${t.poolKey ?? ''}`;
  }

  private session(t: DialTarget): ClientHttp2Session {
    const key = this.key(t);
    const existing = this.sessions.get(key);
    if (existing && !existing.closed && !existing.destroyed) return existing;
    const options: SecureClientSessionOptions & { noDelay: boolean } = {
      // Writes are coalesced per event-loop turn, so Nagle would only delay a lone message.
      // The option reaches socket.connect (plain or TLS); http2's socket proxy refuses
      // setNoDelay later.
      noDelay: true,
      settings: HTTP2_SETTINGS,
      maxSessionMemory: MAX_SESSION_MEMORY_MB,
      ...(t.url.startsWith('https:') ? { ...t.tls, ALPNProtocols: ['h2'] } : {}),
    };
    const session = http2.connect(t.url, options);
    this.sessions.set(key, session);
    tuneSession(session);
    const forget = (): void => {
      if (this.sessions.get(key) === session) this.sessions.delete(key);
    };
    session.on('error', (err: Error) => {
      forget();
      t.onSessionError?.(err);
    });
    session.on('goaway', (code: number, _last: number, data?: Buffer) => {
      forget();
      const refusal = notePeerRefusal(session, code, data);
      if (refusal) t.onSessionError?.(new Error(refusal));
    });
    const connectTimeoutMs = t.connectTimeoutMs ?? this.opts.connectTimeoutMs;
    const connectTimer = setTimeout(() => {
      if (session.connecting) session.destroy(new Error(`connect to ${t.url} timed out after ${connectTimeoutMs} ms`));
    }, connectTimeoutMs);
    connectTimer.unref();
    session.on('close', () => {
      forget();
      clearTimeout(connectTimer);
    });
    keepAlive(session, t.keepaliveIntervalMs ?? this.opts.keepaliveIntervalMs, t.keepaliveTimeoutMs ?? this.opts.keepaliveTimeoutMs, t.url);
    return session;
  }

  /** Opens an OpenChannel stream towards `t`, dialling if no live session exists. */
  open(t: DialTarget, limits: ChannelLimits, handler: ChannelHandler, headers: Record<string, string> = {}): Channel {
    const stream = this.session(t).request(
      {
        ':method': 'POST',
        ':path': OPEN_CHANNEL_PATH,
        'content-type': 'application/grpc',
        te: 'trailers',
        'user-agent': 'slim-ts',
        ...headers,
      },
      { endStream: false },
    );
    return new Channel(stream, 'client', limits, handler);
  }

  close(): void {
    for (const session of this.sessions.values()) session.close();
    this.sessions.clear();
  }

  destroy(): void {
    for (const session of this.sessions.values()) session.destroy();
    this.sessions.clear();
  }
}
