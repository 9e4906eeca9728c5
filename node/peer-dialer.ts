// Keeps a link to another node up, redialling with backoff: one per dataplane.clients entry and
// one per controlled connection (controlled-connections.ts). Subscriptions are replayed by the
// node each time the link comes up (SlimNode.linkUp).

import type { Logger } from 'pino';
import { Backoff } from '../common/backoff.js';
import { decodeMessage } from '../proto/dataplane.js';
import type { Channel } from '../transport/channel.js';
import { Status, statusName, type StatusInfo } from '../transport/grpc-status.js';
import type { SessionPool, DialTarget } from '../transport/session-pool.js';
import type { ConnectionTls } from '../identity/connection-tls.js';
import { Link } from './link.js';
import type { SlimNode } from './node.js';

const DUPLICATE_RECHECK_MS = 30_000;

/** Where and how to dial (a ClientSettings from the node config satisfies it). */
export interface DialSettings {
  /** http://host:port or https://host:port. */
  url: string;
  /** Host name for TLS (server name and SPIFFE checks). */
  host: string;
  connectTimeoutMs: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
}

export interface PeerDialerOptions {
  /** Log fields naming this dialer (e.g. a controlled connection's id). */
  logFields?: Record<string, unknown>;
  /**
   * Asked before every dial; false skips it (another link already leads where this one would)
   * and checks back after 30 s or at kick().
   */
  shouldDial?: () => boolean;
  /** The dialled link is up (called before SlimNode.linkUp announces it). */
  onLinkUp?: (link: Link) => void;
  /** The dialled link went down (after SlimNode removed it). */
  onLinkDown?: (link: Link, status: StatusInfo) => void;
  /** A dial attempt ended without a link; `reason` says why in one line. */
  onFailure?: (status: StatusInfo, reason: string) => void;
}

export type DialerState = 'connecting' | 'up' | 'failing' | 'standby' | 'stopped';

export class PeerDialer {
  private readonly backoff = new Backoff({ initialMs: 100, maxMs: 5_000, factor: 2 });
  private channel: Channel | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Failed attempts since the last link (0 while up). */
  failures = 0;
  /** Why the last attempt failed ('' once a link is up). */
  lastError = '';
  /** The link this dialer holds, while it is up. */
  link: Link | undefined;
  private skipped = false;

  constructor(
    private readonly node: SlimNode,
    readonly settings: DialSettings,
    private readonly tls: ConnectionTls | undefined,
    private readonly pool: SessionPool,
    private readonly log: Logger,
    private readonly opts: PeerDialerOptions = {},
  ) {}

  get state(): DialerState {
    if (this.stopped) return 'stopped';
    if (this.link) return 'up';
    if (this.skipped) return 'standby';
    return this.failures > 0 ? 'failing' : 'connecting';
  }

  /** Built per dial: TLS options carry the newest SVID and bundles. */
  private target(): DialTarget {
    return {
      url: this.settings.url,
      ...(this.tls ? { tls: this.tls.clientOptions(this.settings.host), poolKey: this.tls.poolKey() } : {}),
      onSessionError: (err) => this.tls?.noteDialFailure(err, this.settings.url),
      keepaliveIntervalMs: this.settings.keepaliveIntervalMs,
      keepaliveTimeoutMs: this.settings.keepaliveTimeoutMs,
      connectTimeoutMs: this.settings.connectTimeoutMs,
    };
  }

  start(): void {
    this.dial();
  }

  /**
   * Stops redialling. The link this dialer holds is closed unless `keepLink` (a deleted
   * controlled connection: the peer may route over the link too; it lives until it drops).
   */
  stop(reason = 'node shutting down', keepLink = false): void {
    this.stopped = true;
    clearTimeout(this.timer);
    if (!keepLink || !this.link) this.channel?.close(Status.OK, reason);
  }

  /** Dials now if waiting (standby or backoff); no-op while a dial is in flight or the link is up. */
  kick(): void {
    if (this.stopped || this.channel) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.dial();
  }

  private dial(): void {
    if (this.stopped) return;
    this.timer = undefined;
    if (this.opts.shouldDial && !this.opts.shouldDial()) {
      this.skipped = true;
      this.schedule(DUPLICATE_RECHECK_MS);
      return;
    }
    this.skipped = false;
    let link: Link | undefined;
    let negotiated = false;
    const negotiation = setTimeout(() => {
      if (!negotiated) channel.close(Status.DEADLINE_EXCEEDED, `no link negotiation answer within ${this.settings.connectTimeoutMs} ms`);
    }, this.settings.connectTimeoutMs);
    negotiation.unref();
    const channel = this.pool.open(this.target(), this.node.limits, {
      onMessage: (buf, start, end) => {
        if (link) {
          forward(buf, start, end);
          return;
        }
        const m = decodeMessage(buf, start, end);
        if (m.kind !== 'link') {
          channel.close(Status.INVALID_ARGUMENT, 'peer did not answer with a link negotiation');
          return;
        }
        negotiated = true;
        clearTimeout(negotiation);
        const result = this.node.establish(channel, m.link, true);
        if (!(result instanceof Link)) {
          channel.close(result.code, result.reason);
          return;
        }
        link = result;
        forward = this.node.forwardTo(link);
        this.backoff.reset();
        this.failures = 0;
        this.lastError = '';
        this.link = link;
        this.opts.onLinkUp?.(link);
        this.node.linkUp(link);
      },
      onClose: (status) => {
        clearTimeout(negotiation);
        if (this.channel === channel) this.channel = undefined;
        if (link && this.link === link) this.link = undefined;
        this.node.channelClosed(channel, link, status);
        if (link) this.opts.onLinkDown?.(link, status);
        else this.failed(status);
        // Refused as a duplicate: the peer's own link to us carries the traffic. Check back
        // slowly, in case that link goes away. (A callback above may have kicked a new dial.)
        if (!this.channel && !this.timer) this.schedule(!link && status.code === Status.ABORTED ? DUPLICATE_RECHECK_MS : undefined);
      },
    });
    let forward: (buf: Buffer, start: number, end: number) => void = () => undefined;
    this.channel = channel;
    channel.send({ kind: 'link', link: this.node.linkMessage() });
  }

  private failed(status: StatusInfo): void {
    if (this.stopped) return;
    this.failures++;
    // Refused as a duplicate: a link with that node exists (the other direction), so standby.
    if (status.code === Status.ABORTED) this.skipped = true;
    this.lastError = status.details ? `${statusName(status.code)}: ${status.details}` : statusName(status.code);
    // A duplicate link is expected when both nodes list each other; say so quietly.
    const level = status.code === Status.ABORTED ? 'debug' : this.failures === 1 || this.failures % 10 === 0 ? 'warn' : 'debug';
    this.log[level](
      { ...this.opts.logFields, endpoint: this.settings.url, attempt: this.failures, status: statusName(status.code), reason: status.details },
      'cannot link to peer node; will retry',
    );
    this.opts.onFailure?.(status, status.details || statusName(status.code));
  }

  private schedule(fixedDelay?: number): void {
    if (this.stopped) return;
    const delay = fixedDelay ?? this.backoff.next();
    this.timer = setTimeout(() => this.dial(), delay);
  }
}
