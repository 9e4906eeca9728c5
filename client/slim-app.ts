// SlimApp: an application's connection to a SLIM node. It connects (and reconnects with
// backoff, replaying its subscriptions), subscribes to its own name, publishes to exact,
// anycast and multicast names, receives through an async iterator or a callback, and does
// request/reply with a timeout.

import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { Backoff } from '../common/backoff.js';
import {
  DEFAULT_TTL,
  DecodeError,
  ErrorCode,
  Kind,
  RouteView,
  scanMessage,
  LinkKind,
  PROTOCOL_VERSION,
  decodeMessage,
  formatName,
  nameProblem,
  parseName,
  type DeliveryError,
  type Message,
  type Name,
} from '../proto/dataplane.js';
import { DEFAULT_LIMITS, type Channel, type ChannelLimits } from '../transport/channel.js';
import { Status, statusName, type StatusInfo } from '../transport/grpc-status.js';
import { SessionPool } from '../transport/session-pool.js';
import { ConnectionTls } from '../identity/connection-tls.js';
import { ReceivedMessage } from './received-message.js';
import { SESSION_CONTENT_TYPE } from '../proto/session.js';
import { SessionLayer, type SessionLayerOptions } from './session/session-layer.js';
import { parseSlimEndpoint, type SlimEndpoint } from './slim-endpoint.js';

export { ReceivedMessage } from './received-message.js';

/** Metadata key a reply carries: the message id of the request it answers. */
export const REPLY_TO_KEY = 'slim-reply-to';

export class DeliveryFailure extends Error {
  readonly code: ErrorCode;
  readonly messageId: number;
  readonly destination?: Name;

  constructor(e: DeliveryError) {
    super(e.reason || `delivery failed (${ErrorCode[e.code] ?? e.code})`);
    this.name = 'DeliveryFailure';
    this.code = e.code;
    this.messageId = e.messageId;
    this.destination = e.destination;
  }
}

export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TimeoutError';
  }
}

export interface PublishOptions {
  /** > 1: deliver to every subscriber of the name (multicast). */
  fanout?: number;
  ttl?: number;
  metadata?: Record<string, string>;
  contentType?: string;
}

export interface SlimAppOptions {
  /** This app's name, org/namespace/service; the instance id is added (see `instance`). */
  name: string | Name;
  /** Node to connect to: a URL or the JSON form accepted by --slim. */
  slim: string | SlimEndpoint;
  /** Instance id. Default: derived from the app's certificate identity, else random. */
  instance?: string;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  subscribeTimeoutMs?: number;
  /** Reconnect after the link drops (default true). */
  reconnect?: boolean;
  /** Received messages buffered for a slow consumer before reading from the node pauses. */
  receiveBuffer?: number;
  limits?: Partial<ChannelLimits>;
  /** How this app takes part in sessions others open (see `sessions`). */
  sessions?: SessionLayerOptions;
  log?: Logger;
}

const SESSION_CONTENT_TYPE_BYTES = Buffer.from(SESSION_CONTENT_TYPE);

type State = 'connecting' | 'ready' | 'reconnecting' | 'closed';

interface Pending<T> {
  resolve(v: T): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

/** Instance id from an identity (stable across restarts of the same workload), else random. */
export function defaultInstanceId(identity: string | undefined): string {
  if (identity) return createHash('sha256').update(identity).digest('hex').slice(0, 16);
  return randomBytes(8).toString('hex');
}

export class SlimApp extends EventEmitter {
  readonly name: Name;
  /**
   * The SPIFFE ID this app's certificate proves. Written into every publish: the node stamps
   * the proven identity anyway, but when the field already holds it the node forwards the bytes
   * as they are instead of decoding and re-encoding the message (`npm run bench`, 100 B over
   * mTLS: the re-encode cost ~2 µs a message at the first node).
   */
  readonly identity: string;
  readonly endpoint: SlimEndpoint;
  private readonly opts: Required<Omit<SlimAppOptions, 'log' | 'instance' | 'limits' | 'name' | 'slim' | 'sessions'>>;
  private readonly sessionOptions: SessionLayerOptions | undefined;
  private sessionLayer: SessionLayer | undefined;
  private readonly limits: ChannelLimits;
  private readonly pool = new SessionPool();
  private readonly backoff = new Backoff({ initialMs: 100, maxMs: 5_000, factor: 2 });
  private readonly log: Logger | undefined;
  private channel: Channel | undefined;
  private state: State = 'connecting';
  private readyWaiters: Pending<void>[] = [];
  private nextId = 0;
  private readonly subscriptions = new Map<string, Name>();
  private readonly pendingAcks = new Map<number, Pending<void>>();
  private readonly pendingRequests = new Map<number, Pending<ReceivedMessage>>();
  private handler: ((m: ReceivedMessage) => void) | undefined;
  private readonly queue: ReceivedMessage[] = [];
  private queueHead = 0;
  private readonly takers: ((r: IteratorResult<ReceivedMessage>) => void)[] = [];
  private receivePaused = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private lastError = '';
  private readonly view = new RouteView();
  /** Parsed destination names, so publishing to a string does not parse it every time. */
  private readonly nameCache = new Map<string, Name>();
  /** Messages received that could not be decoded and were dropped. */
  malformedDropped = 0;
  /** Exceptions thrown by the application's message handlers and listeners. */
  handlerErrors = 0;

  private constructor(
    opts: SlimAppOptions,
    endpoint: SlimEndpoint,
    private readonly tls: ConnectionTls | undefined,
  ) {
    super();
    this.endpoint = endpoint;
    const base = typeof opts.name === 'string' ? parseName(opts.name) : { ...opts.name };
    this.identity = tls?.localId() ?? '';
    const instance = opts.instance ?? (base.instance || defaultInstanceId(this.identity || undefined));
    this.name = Object.freeze({ ...base, instance });
    const problem = nameProblem(this.name);
    if (problem) throw new Error(`app name ${formatName(this.name)}: ${problem}`);
    this.opts = {
      connectTimeoutMs: opts.connectTimeoutMs ?? 10_000,
      requestTimeoutMs: opts.requestTimeoutMs ?? 5_000,
      subscribeTimeoutMs: opts.subscribeTimeoutMs ?? 5_000,
      reconnect: opts.reconnect ?? true,
      receiveBuffer: opts.receiveBuffer ?? 10_000,
    };
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.log = opts.log;
    this.sessionOptions = opts.sessions;
    this.subscriptions.set(formatName(this.name), this.name);
    this.on('error', () => undefined);
  }

  /** Connects, negotiates and subscribes to the app's own name; rejects when the node cannot be reached in time. */
  static async connect(opts: SlimAppOptions): Promise<SlimApp> {
    const endpoint = typeof opts.slim === 'string' ? parseSlimEndpoint(opts.slim) : opts.slim;
    // TLS material (files, or the first SVID from the Workload API) before anything is dialled.
    const tls = endpoint.url.startsWith('https:') ? await ConnectionTls.create(endpoint.tls, '--slim.tls', { logger: opts.log }) : undefined;
    let app: SlimApp;
    try {
      app = new SlimApp(opts, endpoint, tls);
    } catch (err) {
      tls?.close();
      throw err;
    }
    app.dial();
    try {
      await app.ready(app.opts.connectTimeoutMs);
    } catch (err) {
      app.close();
      throw err;
    }
    return app;
  }

  get isReady(): boolean {
    return this.state === 'ready';
  }

  /** Resolves once connected (immediately if already). */
  ready(timeoutMs = this.opts.connectTimeoutMs): Promise<void> {
    if (this.state === 'ready') return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(new Error('app is closed'));
    return new Promise((resolve, reject) => {
      const w: Pending<void> = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.readyWaiters = this.readyWaiters.filter((x) => x !== w);
          reject(new TimeoutError(`cannot connect to SLIM node ${this.endpoint.url} within ${timeoutMs} ms${this.lastError ? `: ${this.lastError}` : ''}`));
        }, timeoutMs),
      };
      this.readyWaiters.push(w);
    });
  }

  // -- connection ---------------------------------------------------------------------------

  private dial(): void {
    if (this.state === 'closed') return;
    const target = {
      url: this.endpoint.url,
      ...(this.tls ? { tls: this.tls.clientOptions(this.endpoint.host), poolKey: this.tls.poolKey() } : {}),
    };
    let negotiated = false;
    const channel = this.pool.open(target, this.limits, {
      onMessage: (buf, start, end) => {
        const v = this.view;
        let m: Message | undefined;
        try {
          scanMessage(buf, start, end, v);
          // Publishes are read lazily (ReceivedMessage); everything else is rare and small.
          if (v.kind !== Kind.Publish || !negotiated) m = decodeMessage(buf, start, end);
        } catch (err) {
          // One bad message (from a buggy or hostile sender, relayed by nodes that only read its
          // routing fields) must not cost this app its connection: drop it, say so, go on.
          if (!(err instanceof DecodeError) || !negotiated) throw err;
          this.malformedDropped++;
          this.log?.warn({ reason: err.message }, 'dropped a message that could not be decoded');
          return;
        }
        if (!negotiated) {
          if (m?.kind !== 'link') {
            channel.close(Status.INVALID_ARGUMENT, 'node did not answer with a link negotiation');
            return;
          }
          negotiated = true;
          this.onNegotiated(channel);
          return;
        }
        if (m) this.handleControl(m);
        else this.handlePublish(new ReceivedMessage(buf, start, end, v));
      },
      onClose: (status) => this.onClosed(channel, status),
    });
    this.channel = channel;
    channel.send({
      kind: 'link',
      link: { linkId: randomUUID(), nodeId: '', group: '', kind: LinkKind.App, app: this.name, protocolVersion: PROTOCOL_VERSION },
    });
  }

  /**
   * A reconnect attempt, with the newest certificate (rotated SVID or rewritten files); a failure
   * to build the attempt is retried rather than fatal.
   */
  private redial(): void {
    try {
      this.dial();
    } catch (err) {
      this.lastError = (err as Error).message;
      this.log?.warn({ node: this.endpoint.url, reason: this.lastError }, 'cannot reconnect to the SLIM node; will retry');
      this.reconnectTimer = setTimeout(() => this.redial(), this.backoff.next());
    }
  }

  private onNegotiated(channel: Channel): void {
    this.backoff.reset();
    this.lastError = '';
    // Replay every subscription; the ones the caller is awaiting get their own acks.
    const own = formatName(this.name);
    for (const [key, name] of this.subscriptions) {
      if (key !== own) channel.send({ kind: 'subscribe', subscribe: { name, subscriptionId: 0 } });
    }
    const selfAck = this.sendWithAck(channel, this.name, 'subscribe');
    selfAck.then(
      () => {
        this.state = 'ready';
        this.log?.info({ node: this.endpoint.url, name: formatName(this.name) }, 'connected to SLIM node');
        this.emit('connected');
        const waiters = this.readyWaiters;
        this.readyWaiters = [];
        for (const w of waiters) {
          clearTimeout(w.timer);
          w.resolve();
        }
      },
      (err: Error) => channel.close(Status.CANCELLED, `own subscription failed: ${err.message}`),
    );
  }

  private onClosed(channel: Channel, status: StatusInfo): void {
    if (this.channel !== channel) return;
    this.channel = undefined;
    // The pause belonged to that stream; the next one starts reading, and pauses again if the
    // application is still behind.
    this.receivePaused = false;
    const why = status.details ? `${statusName(status.code)}: ${status.details}` : statusName(status.code);
    this.lastError = why;
    for (const [id, p] of this.pendingAcks) {
      clearTimeout(p.timer);
      p.reject(new Error(`connection to ${this.endpoint.url} closed before the subscription was acknowledged (${why})`));
      this.pendingAcks.delete(id);
    }
    if (this.state === 'closed') return;
    const wasReady = this.state === 'ready';
    if (wasReady) {
      this.log?.warn({ node: this.endpoint.url, reason: why }, 'lost the connection to the SLIM node');
      this.emit('disconnected', why);
    }
    if (!this.opts.reconnect) {
      this.close();
      return;
    }
    this.state = 'reconnecting';
    const delay = this.backoff.next();
    this.reconnectTimer = setTimeout(() => this.redial(), delay);
  }

  // -- receiving ----------------------------------------------------------------------------

  private handlePublish(msg: ReceivedMessage): void {
    if (msg.hasMetadata) {
      const replyTo = msg.metadata[REPLY_TO_KEY];
      if (replyTo !== undefined) {
        const p = this.pendingRequests.get(Number(replyTo));
        if (p) {
          this.pendingRequests.delete(Number(replyTo));
          clearTimeout(p.timer);
          p.resolve(msg);
          return;
        }
      }
    }
    this.deliver(msg);
  }

  private handleControl(m: Message): void {
    switch (m.kind) {
      case 'subscriptionAck': {
        const p = this.pendingAcks.get(m.subscriptionAck.subscriptionId);
        if (!p) return;
        this.pendingAcks.delete(m.subscriptionAck.subscriptionId);
        clearTimeout(p.timer);
        if (m.subscriptionAck.success) p.resolve();
        else p.reject(new Error(m.subscriptionAck.error || 'subscription refused'));
        return;
      }
      case 'error': {
        const failure = new DeliveryFailure(m.error);
        if (this.sessionLayer?.deliveryFailed(failure.messageId, failure.destination, failure.message)) return;
        const p = this.pendingRequests.get(m.error.messageId);
        if (p) {
          this.pendingRequests.delete(m.error.messageId);
          clearTimeout(p.timer);
          p.reject(failure);
          return;
        }
        if (this.listenerCount('deliveryError') > 0) this.callUser(() => this.emit('deliveryError', failure));
        else this.log?.warn({ message_id: failure.messageId, reason: failure.message }, 'a publish was not delivered');
        return;
      }
      default:
        return;
    }
  }

  private deliver(msg: ReceivedMessage): void {
    if (msg.hasContentType(SESSION_CONTENT_TYPE_BYTES)) {
      this.sessions.handle(msg);
      return;
    }
    const handler = this.handler;
    if (handler) {
      this.callUser(() => handler(msg));
      return;
    }
    const taker = this.takers.shift();
    if (taker) {
      taker({ value: msg, done: false });
      return;
    }
    this.queue.push(msg);
    if (!this.receivePaused && this.queue.length - this.queueHead >= this.opts.receiveBuffer && this.channel) {
      // Let HTTP/2 flow control push back to the node, and from there to the sender.
      this.receivePaused = true;
      this.channel.stream.pause();
    }
  }

  /**
   * Runs application code (a message handler, an event listener). Its exceptions are the
   * application's: reported on 'handlerError' (or logged), never allowed to unwind into the
   * transport, where they would close the connection and lose the rest of what it had read.
   */
  private callUser(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.handlerErrors++;
      if (this.listenerCount('handlerError') > 0) this.emit('handlerError', err);
      else this.log?.error({ err }, 'a message handler threw');
    }
  }

  /** Delivers every received message to `handler` instead of the iterator (the fastest way to receive). */
  onMessage(handler: (m: ReceivedMessage) => void): void {
    this.handler = handler;
    while (this.queueHead < this.queue.length) {
      const msg = this.queue[this.queueHead++]!;
      this.callUser(() => handler(msg));
    }
    this.queue.length = 0;
    this.queueHead = 0;
    this.resumeReceive();
  }

  private resumeReceive(): void {
    if (this.receivePaused && this.queue.length - this.queueHead < this.opts.receiveBuffer / 2) {
      this.receivePaused = false;
      this.channel?.stream.resume();
    }
  }

  /** Messages addressed to this app, in arrival order; ends when the app is closed. */
  messages(): AsyncIterableIterator<ReceivedMessage> {
    const next = (): Promise<IteratorResult<ReceivedMessage>> => {
      if (this.queueHead < this.queue.length) {
        const value = this.queue[this.queueHead]!;
        this.queue[this.queueHead++] = undefined as unknown as ReceivedMessage;
        if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
          this.queue.splice(0, this.queueHead);
          this.queueHead = 0;
        }
        this.resumeReceive();
        return Promise.resolve({ value, done: false });
      }
      if (this.state === 'closed') return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve) => this.takers.push(resolve));
    };
    const it: AsyncIterableIterator<ReceivedMessage> = {
      next,
      return: () => Promise.resolve({ value: undefined, done: true }),
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  // -- sessions -----------------------------------------------------------------------------

  /**
   * Sessions over this connection: point-to-point and group, reliable or best effort, with or
   * without MLS end-to-end encryption. Session traffic never reaches messages()/onMessage().
   */
  get sessions(): SessionLayer {
    return (this.sessionLayer ??= new SessionLayer(this, this.sessionOptions, this.log));
  }

  // -- sending ------------------------------------------------------------------------------

  private requireChannel(): Channel {
    if (this.state !== 'ready' || !this.channel) {
      throw new Error(
        this.state === 'closed'
          ? 'app is closed'
          : `not connected to SLIM node ${this.endpoint.url}${this.lastError ? ` (${this.lastError})` : ''}; reconnecting`,
      );
    }
    return this.channel;
  }

  /**
   * Queues a publish and returns its message id. Delivery failures (no route) arrive as
   * 'deliveryError' events carrying that id. Throws when not connected.
   */
  publish(destination: Name | string, payload: Uint8Array | string, opts: PublishOptions = {}): number {
    const channel = this.requireChannel();
    const dest = typeof destination === 'string' ? this.parsedName(destination) : destination;
    const messageId = ++this.nextId;
    channel.send({
      kind: 'publish',
      publish: {
        header: { source: this.name, destination: dest, identity: this.identity, fanout: opts.fanout ?? 0, ttl: opts.ttl ?? DEFAULT_TTL, messageId },
        payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
        contentType: opts.contentType ?? '',
      },
      metadata: opts.metadata,
    });
    return messageId;
  }

  private parsedName(text: string): Name {
    let n = this.nameCache.get(text);
    if (n === undefined) {
      n = parseName(text);
      if (this.nameCache.size >= 1024) this.nameCache.clear();
      this.nameCache.set(text, n);
    }
    return n;
  }

  /** False while the outgoing queue is over its limit; wait with drained(). */
  get canSend(): boolean {
    return !!this.channel && !this.channel.isFull;
  }

  /** Resolves when the outgoing queue has room again. */
  drained(): Promise<void> {
    const ch = this.channel;
    if (!ch) return this.ready();
    return new Promise((resolve) => ch.whenDrained(resolve));
  }

  /** Publishes and waits for the reply (a message carrying slim-reply-to = this message's id). */
  async request(destination: Name | string, payload: Uint8Array | string, opts: PublishOptions & { timeoutMs?: number } = {}): Promise<ReceivedMessage> {
    const timeoutMs = opts.timeoutMs ?? this.opts.requestTimeoutMs;
    const started = Date.now();
    await this.ready(timeoutMs);
    const id = this.publish(destination, payload, opts);
    const dest = typeof destination === 'string' ? destination : formatName(destination);
    return new Promise((resolve, reject) => {
      this.pendingRequests.set(id, {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.pendingRequests.delete(id);
          reject(new TimeoutError(`no reply from ${dest} within ${timeoutMs} ms (message ${id})`));
        }, Math.max(1, timeoutMs - (Date.now() - started))),
      });
    });
  }

  /** Replies to a received message, to the exact instance that sent it. */
  reply(to: ReceivedMessage, payload: Uint8Array | string, opts: PublishOptions = {}): number {
    if (!to.source) throw new Error('cannot reply: the message has no source name');
    return this.publish(to.source, payload, { ...opts, metadata: { ...opts.metadata, [REPLY_TO_KEY]: String(to.messageId) } });
  }

  // -- subscriptions ------------------------------------------------------------------------

  private sendWithAck(channel: Channel, name: Name, kind: 'subscribe' | 'unsubscribe'): Promise<void> {
    const subscriptionId = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.pendingAcks.set(subscriptionId, {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.pendingAcks.delete(subscriptionId);
          reject(new TimeoutError(`no acknowledgement for ${kind} ${formatName(name)} within ${this.opts.subscribeTimeoutMs} ms`));
        }, this.opts.subscribeTimeoutMs),
      });
      if (kind === 'subscribe') channel.send({ kind, subscribe: { name, subscriptionId } });
      else channel.send({ kind, unsubscribe: { name, subscriptionId } });
    });
  }

  /**
   * Subscribes to a name (kept across reconnects); resolves when the node has it in force.
   * Subscribing to a name already subscribed does nothing: one unsubscribe undoes it.
   */
  async subscribe(name: Name | string): Promise<void> {
    const n = typeof name === 'string' ? parseName(name) : name;
    const key = formatName(n);
    if (this.subscriptions.has(key)) return;
    this.subscriptions.set(key, n);
    try {
      await this.sendWithAck(this.requireChannel(), n, 'subscribe');
    } catch (err) {
      this.subscriptions.delete(key);
      throw err;
    }
  }

  async unsubscribe(name: Name | string): Promise<void> {
    const n = typeof name === 'string' ? parseName(name) : name;
    this.subscriptions.delete(formatName(n));
    await this.sendWithAck(this.requireChannel(), n, 'unsubscribe');
  }

  // -- closing ------------------------------------------------------------------------------

  /** Closes the connection; pending requests reject and the message iterator ends. */
  close(): void {
    if (this.state === 'closed') return;
    // Peers hear the sessions end (best effort: the frames go out before the stream closes).
    void this.sessionLayer?.closeAll();
    this.state = 'closed';
    clearTimeout(this.reconnectTimer);
    this.channel?.close(Status.OK, 'app closing');
    const closedErr = (): Error => new Error('app closed');
    for (const p of [...this.pendingRequests.values(), ...this.pendingAcks.values(), ...this.readyWaiters]) {
      clearTimeout(p.timer);
      p.reject(closedErr());
    }
    this.pendingRequests.clear();
    this.pendingAcks.clear();
    this.readyWaiters = [];
    for (const t of this.takers.splice(0)) t({ value: undefined, done: true });
    // Let the half-close and its trailers go out before the session is torn down.
    setTimeout(() => this.pool.close(), 50).unref();
    this.tls?.close();
  }

}

