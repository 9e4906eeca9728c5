// The session layer of one SlimApp: it reads session frames out of the app's received messages,
// hands each to its session, answers invitations, opens sessions, and counts what it drops.
// Sessions live only in the apps at the ends; nodes route their frames like any other publish.

import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { formatName, parseName, type Name } from '../../proto/dataplane.js';
import { FrameType, SESSION_CONTENT_TYPE, SessionKind, decodeSessionFrame, encodeSessionFrame, type SessionFrame } from '../../proto/session.js';
import type { ReceivedMessage } from '../received-message.js';
import { AsyncQueue } from './async-queue.js';
import { GroupSession, type GroupOptions } from './group-session.js';
import { MlsIdentity } from './mls-group.js';
import { PointToPointSession, type PointToPointOptions } from './point-to-point.js';
import { durationOption } from './reliability.js';
import { nameIdentity, type Session } from './session.js';

/** What the layer needs from the app it serves (SlimApp provides it). */
export interface SessionHost {
  readonly name: Name;
  readonly identity: string;
  publish(dest: Name, payload: Uint8Array, opts: { contentType: string; fanout?: number }): number;
  subscribe(name: Name): Promise<void>;
  unsubscribe(name: Name): Promise<void>;
}

export interface SessionLayerOptions {
  /** Accept point-to-point sessions and group invitations from others (default true). */
  accept?: boolean;
  /** Only accept sessions that use MLS (default false). */
  requireMls?: boolean;
  /** A half-open session someone started here is dropped when not completed within this (default 30 s). */
  joinTimeoutMs?: number;
  /** Half-open sessions others may have started here at once (default 256; 16 per sender). */
  maxPending?: number;
}

export interface SessionStats {
  /** Frames dropped, by reason. */
  dropped: Record<string, number>;
  /** Retransmitted data frames that were already received (acknowledged again, not delivered twice). */
  duplicates: number;
}

/** Multicast: a publish with fanout > 1 reaches every subscriber of the name. */
const MULTICAST = 2;
const CLOSED_MEMORY = 1024;
/** A node answers an undeliverable publish at once: the last few thousand ids are plenty. */
const SENT_MEMORY = 4096;

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- typed events for an EventEmitter
export interface SessionLayer {
  /** A session someone else opened with this app is established (listening also means accepting). */
  on(event: 'session', listener: (s: PointToPointSession | GroupSession) => void): this;
  /** A frame was dropped: the counted reason and what was wrong. */
  on(event: 'drop', listener: (reason: string, detail: string) => void): this;
  on(event: 'handlerError', listener: (err: unknown) => void): this;
}

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- typed events for an EventEmitter
export class SessionLayer extends EventEmitter {
  readonly log: Logger | undefined;
  readonly stats: SessionStats = { dropped: {}, duplicates: 0 };
  private readonly sessions = new Map<string, Session>();
  /** Ids of sessions closed recently: their stragglers are expected, not bad input. */
  private readonly closed = new Set<string>();
  private readonly incoming: AsyncQueue<PointToPointSession | GroupSession>;
  private acceptIterators = 0;
  private identityPromise: Promise<MlsIdentity> | undefined;
  private readonly channels = new Map<string, { name: Name; users: number; ready: Promise<void> }>();
  private readonly failures = new Map<string, string>();
  /** Message ids of recent session publishes (a ring), to recognise their delivery errors. */
  private readonly sent = new Set<number>();
  private readonly sentRing = new Array<number>(SENT_MEMORY).fill(-1);
  private sentNext = 0;
  readonly opts: Required<SessionLayerOptions>;

  constructor(
    readonly host: SessionHost,
    opts: SessionLayerOptions = {},
    log?: Logger,
  ) {
    super();
    this.log = log;
    this.opts = {
      accept: opts.accept ?? true,
      requireMls: opts.requireMls ?? false,
      joinTimeoutMs: durationOption('sessions: joinTimeoutMs', opts.joinTimeoutMs, 30_000),
      maxPending: opts.maxPending ?? 256,
    };
    if (!Number.isInteger(this.opts.maxPending) || this.opts.maxPending < 1) {
      throw new RangeError(`sessions: maxPending must be a whole number from 1, got ${String(this.opts.maxPending)}`);
    }
    this.incoming = new AsyncQueue((err) => this.handlerError(err));
  }

  /** The identity this app's MLS credential carries: its SPIFFE ID, or its name on plaintext links. */
  get myIdentity(): string {
    return this.host.identity || nameIdentity(this.host.name);
  }

  /** One MLS signing identity per app, made on first use. */
  mlsIdentity(): Promise<MlsIdentity> {
    return (this.identityPromise ??= MlsIdentity.create(this.myIdentity));
  }

  // -- opening ------------------------------------------------------------------------------

  /** Opens a point-to-point session to one instance of `remote` (anycast when it has no instance). */
  async openPointToPoint(remote: Name | string, opts: PointToPointOptions = {}): Promise<PointToPointSession> {
    const name = typeof remote === 'string' ? parseName(remote) : remote;
    return PointToPointSession.open(this, name, opts);
  }

  /** Creates a group session on `channel`, with this app as its moderator. */
  async createGroup(channel: Name | string, opts: GroupOptions = {}): Promise<GroupSession> {
    const name = typeof channel === 'string' ? parseName(channel) : channel;
    return GroupSession.create(this, name, opts);
  }

  /** Sessions others open with this app (point-to-point, or group invitations), once established. */
  accept(): AsyncIterableIterator<PointToPointSession | GroupSession> {
    this.acceptIterators++;
    const it = this.incoming.iterate();
    let stopped = false;
    const stop = (): Promise<IteratorResult<PointToPointSession | GroupSession>> => {
      // Leaving the loop (break, return) stops accepting through this iterator.
      if (!stopped) {
        stopped = true;
        this.acceptIterators--;
      }
      return Promise.resolve({ value: undefined, done: true });
    };
    const wrapped: AsyncIterableIterator<PointToPointSession | GroupSession> = {
      next: () => (stopped ? stop() : it.next()),
      return: stop,
      [Symbol.asyncIterator]: () => wrapped,
    };
    return wrapped;
  }

  private get accepting(): boolean {
    return this.opts.accept && (this.acceptIterators > 0 || this.listenerCount('session') > 0);
  }

  /** A session someone else started is established here: tell the application. */
  announce(s: PointToPointSession | GroupSession): void {
    if (this.listenerCount('session') > 0) {
      try {
        this.emit('session', s);
      } catch (err) {
        this.handlerError(err);
      }
    }
    if (this.acceptIterators > 0) this.incoming.push(s);
  }

  register(s: Session): void {
    this.sessions.set(s.id, s);
  }

  forget(s: Session): void {
    if (this.sessions.get(s.id) !== s) return;
    this.sessions.delete(s.id);
    this.closed.add(s.id);
    if (this.closed.size > CLOSED_MEMORY) this.closed.delete(this.closed.values().next().value!);
  }

  /** Open sessions. */
  list(): Session[] {
    return [...this.sessions.values()];
  }

  // -- receiving ----------------------------------------------------------------------------

  /** A publish carrying a session frame arrived for this app. */
  handle(msg: ReceivedMessage): void {
    let f: SessionFrame;
    try {
      f = decodeSessionFrame(msg.payload);
    } catch (err) {
      this.drop('malformed', (err as Error).message, { source: msg.source ? formatName(msg.source) : '?' });
      return;
    }
    if (!msg.source) {
      this.drop('malformed', 'session frame without a source name', { session: f.sessionId });
      return;
    }
    const s = this.sessions.get(f.sessionId);
    if (s) {
      s.enqueue(f, msg);
      return;
    }
    if (f.type === FrameType.Discover) {
      this.discovered(f, msg);
      return;
    }
    if (this.closed.has(f.sessionId)) {
      this.drop('closed-session', 'frame for a closed session', { session: f.sessionId, type: FrameType[f.type] }, 'debug');
      return;
    }
    this.drop('unknown-session', `${FrameType[f.type]} frame for an unknown session`, { session: f.sessionId, source: formatName(msg.source) });
  }

  private discovered(f: SessionFrame, msg: ReceivedMessage): void {
    const refuse = (reason: string): void => {
      this.log?.info({ session: f.sessionId, from: formatName(msg.source!), reason }, 'refused a session');
      this.transmit(msg.source!, { ...f, type: FrameType.Refuse, body: new Uint8Array(0), members: [], reason, seq: f.seq });
    };
    if (!this.accepting) return refuse(`${formatName(this.host.name)} does not accept sessions`);
    if (this.opts.requireMls && !f.mls) return refuse(`${formatName(this.host.name)} accepts only MLS sessions`);
    // Each half-open session holds a timer (and, with MLS, a key package): bounded, per sender too.
    const from = formatName(msg.source!);
    const pending = [...this.sessions.values()].filter((x) => !x.isOpen);
    if (pending.length >= this.opts.maxPending || pending.filter((x) => x.invitedBy === from).length >= Math.min(16, this.opts.maxPending)) {
      this.drop('too-many-pending', `${pending.length} sessions are being set up; ${from} asked for another`, { session: f.sessionId });
      return refuse('too many sessions being set up; try again later');
    }
    let s: Session;
    try {
      if (f.kind === SessionKind.PointToPoint) s = PointToPointSession.responder(this, f, msg);
      else if (f.kind === SessionKind.Group) {
        if (!f.channel || !f.channel.service) {
          this.drop('malformed', 'group invitation without a channel', { session: f.sessionId });
          return;
        }
        s = GroupSession.invited(this, f, msg);
      } else {
        this.drop('malformed', `discovery of unknown session kind ${f.kind}`, { session: f.sessionId });
        return;
      }
    } catch (err) {
      // The initiator's settings are out of range: it learns which.
      return refuse((err as Error).message);
    }
    this.register(s);
    s.enqueue(f, msg);
  }

  /**
   * SlimApp reports a publish the node could not deliver. Returns true when it carried a session
   * frame: sessions retransmit or time out on their own and name the reason then (it is kept),
   * so the app does not report it again.
   */
  deliveryFailed(messageId: number, dest: Name | undefined, reason: string): boolean {
    if (!this.sent.has(messageId)) return false;
    if (dest) {
      this.failures.set(formatName(dest), reason);
      if (this.failures.size > 1024) this.failures.delete(this.failures.keys().next().value!);
    }
    this.log?.debug({ message_id: messageId, reason }, 'session frame not delivered');
    return true;
  }

  lastDeliveryFailure(dest: Name): string | undefined {
    return this.failures.get(formatName(dest));
  }

  // -- sending ------------------------------------------------------------------------------

  /** Sends a frame; a lost connection is like a lost message (reliable sessions retransmit). */
  transmit(dest: Name, f: SessionFrame, multicast = false): void {
    try {
      const id = this.host.publish(dest, encodeSessionFrame(f), { contentType: SESSION_CONTENT_TYPE, ...(multicast ? { fanout: MULTICAST } : {}) });
      this.sent.delete(this.sentRing[this.sentNext]!);
      this.sentRing[this.sentNext] = id;
      this.sentNext = (this.sentNext + 1) % SENT_MEMORY;
      this.sent.add(id);
    } catch (err) {
      this.log?.debug({ session: f.sessionId, dest: formatName(dest), reason: (err as Error).message }, 'session frame not sent');
    }
  }

  /** Subscribes this app to a group channel (once, however many sessions use it). */
  async joinChannel(channel: Name): Promise<void> {
    const name = { ...channel, instance: this.host.name.instance };
    const key = formatName(name);
    let c = this.channels.get(key);
    if (!c) {
      c = { name, users: 0, ready: this.host.subscribe(name) };
      this.channels.set(key, c);
      c.ready.catch(() => this.channels.delete(key));
    }
    c.users++;
    await c.ready;
  }

  leaveChannel(channel: Name): void {
    const key = formatName({ ...channel, instance: this.host.name.instance });
    const c = this.channels.get(key);
    if (!c || --c.users > 0) return;
    this.channels.delete(key);
    this.host.unsubscribe(c.name).catch((err: Error) => this.log?.debug({ channel: key, reason: err.message }, 'channel unsubscribe failed'));
  }

  // -- accounting ---------------------------------------------------------------------------

  /** Counts a dropped frame under `reason` and logs it (warn, or debug for expected stragglers). */
  drop(reason: string, detail: string, fields: Record<string, unknown> = {}, level: 'warn' | 'debug' = 'warn'): void {
    this.stats.dropped[reason] = (this.stats.dropped[reason] ?? 0) + 1;
    this.log?.[level]({ ...fields, reason, detail }, 'session frame dropped');
    try {
      this.emit('drop', reason, detail);
    } catch (err) {
      this.handlerError(err);
    }
  }

  handlerError(err: unknown): void {
    if (this.listenerCount('handlerError') > 0) this.emit('handlerError', err);
    else this.log?.error({ err }, 'a session handler threw');
  }

  /** Closes every session (the app is closing). */
  async closeAll(): Promise<void> {
    await Promise.allSettled([...this.sessions.values()].map((s) => s.close()));
    this.incoming.end();
  }
}
