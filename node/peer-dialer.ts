// One dataplane.clients entry: keeps a link to another node up, redialling with backoff.
// Subscriptions are replayed by the node each time the link comes up (SlimNode.linkUp).

import type { Logger } from 'pino';
import { Backoff } from '../common/backoff.js';
import { decodeMessage } from '../proto/dataplane.js';
import type { Channel } from '../transport/channel.js';
import { Status, statusName, type StatusInfo } from '../transport/grpc-status.js';
import type { SessionPool, DialTarget } from '../transport/session-pool.js';
import type { ConnectionTls } from '../identity/connection-tls.js';
import type { ClientSettings } from './config.js';
import { Link } from './link.js';
import type { SlimNode } from './node.js';

const DUPLICATE_RECHECK_MS = 30_000;

export class PeerDialer {
  private readonly backoff = new Backoff({ initialMs: 100, maxMs: 5_000, factor: 2 });
  private channel: Channel | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private failures = 0;

  constructor(
    private readonly node: SlimNode,
    private readonly settings: ClientSettings,
    private readonly tls: ConnectionTls | undefined,
    private readonly pool: SessionPool,
    private readonly log: Logger,
  ) {}

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

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.channel?.close(Status.OK, 'node shutting down');
  }

  private dial(): void {
    if (this.stopped) return;
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
        this.node.linkUp(link);
      },
      onClose: (status) => {
        clearTimeout(negotiation);
        this.node.channelClosed(channel, link, status);
        if (!link) this.failed(status);
        this.channel = undefined;
        // Refused as a duplicate: the peer's own link to us carries the traffic. Check back
        // slowly, in case that link goes away.
        this.schedule(!link && status.code === Status.ABORTED ? DUPLICATE_RECHECK_MS : undefined);
      },
    });
    let forward: (buf: Buffer, start: number, end: number) => void = () => undefined;
    this.channel = channel;
    channel.send({ kind: 'link', link: this.node.linkMessage() });
  }

  private failed(status: StatusInfo): void {
    if (this.stopped) return;
    this.failures++;
    // A duplicate link is expected when both nodes list each other; say so quietly.
    const level = status.code === Status.ABORTED ? 'debug' : this.failures === 1 || this.failures % 10 === 0 ? 'warn' : 'debug';
    this.log[level]({ endpoint: this.settings.url, attempt: this.failures, status: statusName(status.code), reason: status.details }, 'cannot link to peer node; will retry');
  }

  private schedule(fixedDelay?: number): void {
    if (this.stopped) return;
    const delay = fixedDelay ?? this.backoff.next();
    this.timer = setTimeout(() => this.dial(), delay);
  }
}
