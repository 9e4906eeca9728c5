// Per-message handling on an established link: routing of publishes (the hot path) and the
// subscription messages that build the routing table.
//
// A forwarded publish is never decoded into objects: scanMessage finds the destination, TTL,
// fanout and identity as offsets, the table is looked up by the destination's bytes, and the
// received bytes are copied to each target's batch with the new TTL patched in place. Only a
// publish that needs its header rewritten (identity stamp, missing TTL) is decoded and re-encoded.

import type { Logger } from 'pino';
import {
  ErrorCode,
  Kind,
  LinkKind,
  RouteView,
  decodeMessage,
  decodeNameAt,
  formatName,
  nameProblem,
  scanMessage,
  type Message,
  type Name,
} from '../proto/dataplane.js';
import type { Link } from './link.js';
import type { NodeStats } from './metrics.js';
import type { SubscriptionTable } from './subscription-table.js';
import { bytesEqualAt } from '../proto/wire.js';

export interface ForwarderHooks {
  /** The (name, link) pair appeared (added) or went away. */
  interestChanged(link: Link, name: Name, added: boolean): void;
}

export interface ForwarderOptions {
  defaultTtl: number;
  /** Outgoing queue size at which messages are dropped instead of queued (reading pauses well before). */
  hardQueueLimit: number;
  /** Distinct names one connection may subscribe to. */
  maxSubscriptionsPerLink: number;
  /**
   * Take interest from nodes of other groups. Off under a controller: its routes decide what
   * goes to other groups (see SlimNode.sharesInterestWith).
   */
  remoteGroupInterest: boolean;
}

export class Forwarder {
  private readonly view = new RouteView();
  private readonly targets: Link[] = [];

  constructor(
    private readonly table: SubscriptionTable,
    private readonly stats: NodeStats,
    private readonly opts: ForwarderOptions,
    private readonly hooks: ForwarderHooks,
    private readonly log: Logger,
  ) {}

  /** Handles one message received on `from`. Throws DecodeError for malformed bytes. */
  handle(from: Link, buf: Buffer, start: number, end: number): void {
    const v = this.view;
    scanMessage(buf, start, end, v);
    this.stats.received[v.kind]!++;
    if (v.kind === Kind.Publish) this.publish(from, buf, start, end, v);
    else this.control(from, decodeMessage(buf, start, end));
  }

  // -- publish ---------------------------------------------------------------------------------

  private publish(from: Link, buf: Buffer, start: number, end: number, v: RouteView): void {
    const fromApp = from.isApp;
    if (v.destStart < 0 || v.orgEnd === v.orgStart || v.nsEnd === v.nsStart || v.svcEnd === v.svcStart) {
      this.stats.drop('no_destination');
      if (fromApp) {
        this.sendError(from, v.messageId, ErrorCode.InvalidMessage, 'publish has no destination: header.destination needs org, namespace and service');
      }
      return;
    }
    let ttl: number;
    if (fromApp) ttl = v.ttl === 0 ? this.opts.defaultTtl : v.ttl;
    else {
      ttl = v.ttl - 1;
      if (ttl <= 0) {
        this.stats.drop('ttl_expired');
        if (this.log.isLevelEnabled('debug')) this.log.debug({ from: from.label }, 'dropped a publish whose TTL ran out');
        return;
      }
    }
    // Identity is stamped, not trusted: an app's publish carries the identity its connection
    // proved; a node's stamp is kept only when that node's link is itself authenticated.
    const badIdentity = fromApp ? !bytesEqualAt(buf, v.identityStart, v.identityEnd, from.identityBytes) : !from.authenticated && v.identityEnd > v.identityStart;
    const rewrite = badIdentity || v.ttlPos < 0 || v.ttlLen !== 1 || ttl > 127;
    // Split horizon (DESIGN §4, two-step routing): from an app, anywhere; from a node of another
    // group, to local apps or nodes of this group (the second step, towards the subscriber's
    // node); from a node of this group, to local apps only. At most app → other group → same
    // group → app, so nothing loops.
    const maxClass = from.maxTargetClass;
    const set = this.table.lookupView(buf, v);
    const out = this.targets;
    out.length = 0;
    if (v.fanout > 1) set?.collect(from, maxClass, out);
    else {
      const target = set?.pickOne(from, maxClass);
      if (target) out.push(target);
    }
    if (out.length === 0) return this.noRoute(from, buf, v);
    const decoded = rewrite ? this.rewritten(from, buf, start, end, ttl) : undefined;
    for (let i = 0; i < out.length; i++) this.deliver(from, out[i]!, buf, start, end, v, ttl, decoded);
    out.length = 0;
  }

  private rewritten(from: Link, buf: Buffer, start: number, end: number, ttl: number): Message {
    const m = decodeMessage(buf, start, end);
    if (m.kind !== 'publish') throw new Error('unreachable: scanned publish decoded as another kind');
    const header = (m.publish.header ??= { identity: '', fanout: 0, ttl: 0, messageId: 0 });
    header.ttl = ttl;
    if (from.isApp) header.identity = from.identity;
    else if (!from.authenticated) header.identity = '';
    return m;
  }

  private deliver(from: Link, to: Link, buf: Buffer, start: number, end: number, v: RouteView, ttl: number, decoded: Message | undefined): void {
    const ch = to.channel;
    if (ch.backlog > this.opts.hardQueueLimit) {
      this.stats.drop('queue_full');
      return;
    }
    const ok = decoded ? ch.send(decoded) : ch.sendBytes(buf, start, end, v.ttlPos, ttl);
    if (!ok) {
      this.stats.drop('link_closed');
      return;
    }
    this.stats.sent[Kind.Publish]!++;
    if (ch.isFull) from.channel.pauseFor(ch);
  }

  private noRoute(from: Link, buf: Buffer, v: RouteView): void {
    this.stats.drop('no_route');
    if (!from.isApp) {
      if (this.log.isLevelEnabled('debug')) this.log.debug({ from: from.label }, 'dropped a publish from a node: no route');
      return;
    }
    const dest = decodeNameAt(buf, v.destStart, v.destEnd);
    this.sendError(from, v.messageId, ErrorCode.NoRoute, `no route to ${formatName(dest)}: nothing subscribes to it`, dest);
  }

  private sendError(to: Link, messageId: number, code: ErrorCode, reason: string, destination?: Name): void {
    this.answer(to, { kind: 'error', error: { messageId, code, reason, destination } }, Kind.Error);
  }

  /**
   * Sends a node-generated answer (delivery error, ack) back on the link that caused it. The
   * answers count against that link's queue like anything else: an app that sends but never
   * reads stops being read, and past the hard limit its answers are dropped.
   */
  private answer(to: Link, m: Message, kind: Kind): void {
    const ch = to.channel;
    if (ch.backlog > this.opts.hardQueueLimit) {
      this.stats.drop('queue_full');
      return;
    }
    if (!ch.send(m)) return;
    this.stats.sent[kind]!++;
    if (ch.isFull) ch.pauseFor(ch);
  }

  // -- subscriptions and the rest ----------------------------------------------------------------

  private control(from: Link, m: Message): void {
    if ((m.kind === 'subscribe' || m.kind === 'unsubscribe') && !this.opts.remoteGroupInterest && from.kind === LinkKind.RemoteGroup) {
      if (this.log.isLevelEnabled('debug')) this.log.debug({ from: from.label }, 'ignored interest from a node of another group: routes to other groups come from the controller');
      return;
    }
    switch (m.kind) {
      case 'subscribe': {
        const { name, subscriptionId } = m.subscribe;
        const problem = nameProblem(name);
        if (problem) {
          this.stats.drop('invalid_name');
          this.log.warn({ from: from.label, reason: problem }, 'refused a subscription with a malformed name');
          this.ack(from, subscriptionId, false, `invalid name: ${problem}`);
          return;
        }
        if (!this.table.hasSubscription(name!, from) && this.table.countOf(from) >= this.opts.maxSubscriptionsPerLink) {
          this.stats.drop('subscription_limit');
          this.ack(from, subscriptionId, false, `too many subscriptions on this connection (limit ${this.opts.maxSubscriptionsPerLink})`);
          return;
        }
        if (this.table.add(name!, from)) this.hooks.interestChanged(from, name!, true);
        this.ack(from, subscriptionId, true, '');
        return;
      }
      case 'unsubscribe': {
        const { name, subscriptionId } = m.unsubscribe;
        const problem = nameProblem(name);
        if (problem) {
          this.stats.drop('invalid_name');
          this.ack(from, subscriptionId, false, `invalid name: ${problem}`);
          return;
        }
        if (!this.table.hasSubscription(name!, from)) {
          this.ack(from, subscriptionId, false, `not subscribed to ${formatName(name!)}`);
          return;
        }
        if (this.table.remove(name!, from)) this.hooks.interestChanged(from, name!, false);
        this.ack(from, subscriptionId, true, '');
        return;
      }
      case 'link':
        this.log.debug({ from: from.label }, 'ignored a second link negotiation on an established link');
        return;
      default:
        // Acks and delivery errors from nodes answer nothing we asked; an empty message carries nothing.
        return;
    }
  }

  private ack(to: Link, subscriptionId: number, success: boolean, error: string): void {
    if (subscriptionId === 0) return;
    this.answer(to, { kind: 'subscriptionAck', subscriptionAck: { subscriptionId, success, error } }, Kind.SubscriptionAck);
  }

}
