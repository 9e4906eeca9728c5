// What point-to-point and group sessions share: the serial frame queue, request/answer
// exchanges with retransmission, reliable data with acknowledgements, end-to-end protection of
// payloads (MLS or none), and the application-facing message stream.

import { randomInt } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { formatName, type Name } from '../../proto/dataplane.js';
import { FrameType, frame, type Member, type SessionFrame } from '../../proto/session.js';
import type { ReceivedMessage } from '../received-message.js';
import { AsyncQueue } from './async-queue.js';
import { MlsRefused, keyPackageIdentity, type MlsGroup, type MlsKeyPackage } from './mls-group.js';
import { Inbound, Outbound, type ReliabilityOptions } from './reliability.js';
import type { SessionLayer } from './session-layer.js';

export type SessionKindName = 'point-to-point' | 'group';

/** An application message received on a session, in order, decrypted and authenticated. */
export interface SessionMessage {
  payload: Buffer;
  /** The sending app's name, with its instance. */
  source: Name;
  /** The sender's proven identity: its SPIFFE ID (with MLS, also its MLS credential). */
  identity: string;
  /** The sender's sequence number in this session. */
  seq: number;
}

export class SessionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SessionError';
  }
}

export interface SessionOptions {
  /** End-to-end encryption with MLS (default false). */
  mls?: boolean;
  reliability?: Partial<ReliabilityOptions>;
}

/** The reliability settings a DISCOVER carries, so the invited side uses the initiator's. */
export function reliabilityFields(r: ReliabilityOptions): Pick<SessionFrame, 'reliable' | 'window' | 'retryIntervalMs' | 'maxRetries'> {
  return { reliable: r.reliable, window: r.window, retryIntervalMs: r.retryIntervalMs, maxRetries: r.maxRetries };
}

/** The invited side's reliability: what the DISCOVER says (0: this side's default). */
export function reliabilityFromFrame(f: SessionFrame): Partial<ReliabilityOptions> {
  return {
    reliable: f.reliable,
    ...(f.window ? { window: f.window } : {}),
    ...(f.retryIntervalMs ? { retryIntervalMs: f.retryIntervalMs } : {}),
    ...(f.maxRetries ? { maxRetries: f.maxRetries } : {}),
  };
}

/** Identity a peer is held to: the node-stamped SPIFFE ID, or its name on plaintext links. */
export function provenIdentity(msg: ReceivedMessage): string {
  return msg.identity || (msg.source ? nameIdentity(msg.source) : '');
}

/** The identity of an app on a plaintext link, where no certificate proves anything. */
export function nameIdentity(n: Name): string {
  return `slim-name:${formatName(n)}`;
}

/**
 * Additional authenticated data of a data frame: MLS then refuses a ciphertext moved to another
 * session or sequence number, or given another `low` mark.
 */
function dataAad(sessionId: string, seq: number, low: number): Buffer {
  return Buffer.from(`${sessionId}/${seq}/${low}`);
}

/** Authenticated data of a mark (a heartbeat, or a gap notice): only the sender can move its `low`. */
function markAad(sessionId: string, low: number): Buffer {
  return Buffer.from(`${sessionId}/mark/${low}`);
}

/** Who may answer a request: the name it went to (any instance for anycast), with the identity expected. */
export interface AnswerFrom {
  name: Name;
  /** The identity the answer must prove; undefined = any (a discovery without a pinned identity). */
  identity?: string;
}

function answersFrom(want: AnswerFrom, msg: ReceivedMessage): boolean {
  const n = msg.source!;
  const w = want.name;
  if (n.org !== w.org || n.namespace !== w.namespace || n.service !== w.service) return false;
  if (w.instance && n.instance !== w.instance) return false;
  return want.identity === undefined || provenIdentity(msg) === want.identity;
}

interface PendingRequest {
  answers: FrameType[];
  from: AnswerFrom;
  resolve(r: { frame: SessionFrame; msg: ReceivedMessage }): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- typed events for an EventEmitter
export interface Session {
  /** The session ended here; `reason` says why (closed by either side, removed, left). */
  on(event: 'closed', listener: (reason: string) => void): this;
}

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- typed events for an EventEmitter
export abstract class Session extends EventEmitter {
  abstract readonly kind: SessionKindName;
  protected state: 'opening' | 'open' | 'closed' = 'opening';
  protected mlsGroup: MlsGroup | undefined;
  protected readonly outbound: Outbound<SessionFrame>;
  private readonly inbound = new Map<string, Inbound<SessionMessage>>();
  private readonly queue: AsyncQueue<SessionMessage>;
  private chain: Promise<void> = Promise.resolve();
  // Request ids start at a random point: an answer must also echo one to be taken.
  private nextRequest = 1 + randomInt(2 ** 30);
  private readonly pending = new Map<number, PendingRequest>();
  protected readonly log: Logger | undefined;
  /** Who started this session, when someone else did (formatted name); for the half-open limit. */
  invitedBy: string | undefined;
  /** The key package this side offered when invited (MLS). */
  protected keyPackage: MlsKeyPackage | undefined;
  protected joinTimer: NodeJS.Timeout | undefined;
  /** Received messages handed to the application. */
  delivered = 0;

  protected constructor(
    readonly id: string,
    readonly mls: boolean,
    protected readonly reliability: ReliabilityOptions,
    protected readonly layer: SessionLayer,
  ) {
    super();
    this.log = layer.log?.child({ session: id });
    this.queue = new AsyncQueue((err) => layer.handlerError(err));
    this.outbound = new Outbound(id, reliability, {
      // The frame goes again as it was: its `low` is authenticated with the payload.
      retransmit: (f, _seq, to) => {
        for (const key of to) {
          const dest = this.recipientName(key);
          if (dest) this.layer.transmit(dest, f);
        }
      },
      gaveUp: (_seq, low, missing) => {
        for (const key of missing) {
          const dest = this.recipientName(key);
          if (dest) void this.sendMark(dest, low, false);
        }
      },
    });
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** The MLS epoch (membership version without MLS is tracked by group sessions). */
  get epoch(): number {
    return this.mlsGroup ? Number(this.mlsGroup.epoch) : 0;
  }

  /** The MLS group state, for inspection (members, epoch); undefined without MLS. */
  get mlsState(): MlsGroup | undefined {
    return this.mlsGroup;
  }

  // -- application side ---------------------------------------------------------------------

  /** Messages received on this session, in order; ends when the session closes. */
  messages(): AsyncIterableIterator<SessionMessage> {
    return this.queue.iterate();
  }

  /** Delivers every message to `handler` instead of the iterator. */
  onMessage(handler: (m: SessionMessage) => void): void {
    this.queue.setHandler(handler);
  }

  /**
   * Sends `payload` to the other member(s). Reliable sessions resolve when every recipient
   * acknowledged it and reject with a SessionDeliveryError when retries run out; best-effort
   * sessions resolve once it is handed to the node.
   */
  async send(payload: Uint8Array | string): Promise<void> {
    this.requireOpen();
    const bytes = typeof payload === 'string' ? Buffer.from(payload) : payload;
    const seq = await this.outbound.reserve();
    // Taken now, while this message holds its place: everything below is settled.
    const low = this.outbound.low;
    let body: Uint8Array;
    try {
      this.requireOpen();
      body = this.mlsGroup ? await this.mlsGroup.encrypt(bytes, dataAad(this.id, seq, low)) : bytes;
    } catch (err) {
      this.outbound.abandon(seq);
      throw err;
    }
    const f = frame({ sessionId: this.id, type: FrameType.Data, seq, low, body, reliable: this.reliability.reliable });
    const recipients = this.recipients();
    const done = this.outbound.track(seq, f, recipients);
    this.transmitData(f, recipients);
    return done;
  }

  protected requireOpen(): void {
    if (this.state !== 'open') throw new SessionError(`session ${this.id} is ${this.state === 'closed' ? 'closed' : 'not open yet'}`);
  }

  // -- what each kind of session decides -------------------------------------------------------

  /** Keys (formatted names) of the members a data message must reach. */
  protected abstract recipients(): string[];
  /** The name to send to for a recipient key; undefined when it is no longer a member. */
  protected abstract recipientName(key: string): Name | undefined;
  /** First transmission of a data frame (unicast, or multicast on a group channel). */
  protected abstract transmitData(f: SessionFrame, recipients: string[]): void;
  /** The identity a member must prove for data from `source`; undefined when it is not a member. */
  protected abstract memberIdentity(source: string): string | undefined;
  /** True for a member that left or was removed: its late frames are stragglers, not bad input. */
  protected departed(_source: string): boolean {
    return false;
  }
  /** A member was heard from (an authenticated mark): group sessions track liveness. */
  protected heardFrom(_source: string): void {}
  /** A control frame for this session (anything but DATA/ACK and request answers). */
  protected abstract handleControl(f: SessionFrame, msg: ReceivedMessage): Promise<void>;

  // -- receive path -------------------------------------------------------------------------

  /** Frames of one session are handled one at a time, in arrival order (MLS state is sequential). */
  enqueue(f: SessionFrame, msg: ReceivedMessage): void {
    this.chain = this.chain
      .then(() => this.handle(f, msg))
      .catch((err: unknown) => {
        // Counted and logged; nothing here may leave the chain rejected, or every later frame
        // of the session would be skipped.
        if (err instanceof MlsRefused) this.layer.drop(err.reason, err.message, { session: this.id, type: FrameType[f.type] });
        else this.layer.drop('failed', (err as Error).message, { session: this.id, type: FrameType[f.type] });
      })
      .catch(() => undefined);
  }

  private async handle(f: SessionFrame, msg: ReceivedMessage): Promise<void> {
    if (this.state === 'closed') {
      this.layer.drop('closed-session', 'frame for a closed session', { session: this.id, type: FrameType[f.type] }, 'debug');
      return;
    }
    const p = this.pending.get(f.seq);
    if (p && p.answers.includes(f.type) && answersFrom(p.from, msg)) {
      this.pending.delete(f.seq);
      clearTimeout(p.timer);
      p.resolve({ frame: f, msg });
      return;
    }
    switch (f.type) {
      case FrameType.Data:
        return this.receiveData(f, msg);
      case FrameType.Ack:
        this.receiveAck(f, msg);
        return;
      case FrameType.Heartbeat:
        return this.receiveMark(f, msg);
      default:
        return this.handleControl(f, msg);
    }
  }

  /** Who sent this, if a member, checked against its proven identity; undefined = dropped (or a straggler). */
  private member(msg: ReceivedMessage, what: string): string | undefined {
    const source = formatName(msg.source!);
    const expected = this.memberIdentity(source);
    const identity = provenIdentity(msg);
    if (expected === undefined) {
      if (this.departed(source)) this.log?.debug({ source, what }, 'frame from a departed member ignored');
      else this.layer.drop('not-member', `${what} from ${source}, which is not a member`, { session: this.id, identity }, what === 'heartbeat' ? 'debug' : 'warn');
      return undefined;
    }
    if (identity !== expected) {
      this.layer.drop('identity-mismatch', `${what} from ${source} proves ${identity || 'no identity'}, member is ${expected}`, { session: this.id });
      return undefined;
    }
    return source;
  }

  private async receiveData(f: SessionFrame, msg: ReceivedMessage): Promise<void> {
    if (this.state !== 'open') {
      // Not acknowledged: the sender retransmits once this side is in.
      this.layer.drop('not-ready', 'data before the session was established here', { session: this.id }, 'debug');
      return;
    }
    const source = this.member(msg, 'data');
    if (source === undefined) return;
    const expected = this.memberIdentity(source)!;
    let inb = this.inbound.get(source);
    if (!inb) {
      inb = new Inbound<SessionMessage>(this.reliability.window, (m) => this.deliver(m));
      this.inbound.set(source, inb);
    }
    if (f.reliable) {
      // Classified before decryption, changed only after it: a forged frame leaves no trace.
      const arrival = inb.arrival(f.seq);
      if (arrival === 'duplicate') {
        this.layer.stats.duplicates++;
        this.sendAck(msg.source!, f.seq);
        return;
      }
      if (arrival === 'beyond-window') {
        this.layer.drop('beyond-window', `message ${f.seq} is beyond the receive window`, { session: this.id, source });
        return;
      }
      if (this.queue.size >= this.highWater) {
        // The application is not reading: unacknowledged, so the sender slows down (and in the
        // end learns that nobody took it) instead of this queue growing without bound.
        this.layer.drop('receiver-busy', `${this.queue.size} messages wait for the application`, { session: this.id }, 'debug');
        return;
      }
    }
    let payload: Buffer;
    if (this.mlsGroup) {
      const opened = await this.mlsGroup.decrypt(f.body);
      if (opened.sender !== expected) {
        this.layer.drop('identity-mismatch', `MLS sender ${opened.sender} is not ${expected}`, { session: this.id });
        return;
      }
      if (!Buffer.from(opened.aad).equals(dataAad(this.id, f.seq, f.low))) {
        this.layer.drop('tampered', `message ${f.seq}: authenticated data does not match its session, sequence number and mark`, { session: this.id });
        return;
      }
      payload = Buffer.from(opened.plaintext);
    } else {
      payload = Buffer.from(f.body);
    }
    this.heardFrom(source);
    const m: SessionMessage = { payload, source: msg.source!, identity: expected, seq: f.seq };
    if (!f.reliable) {
      this.deliver(m);
      return;
    }
    this.sendAck(msg.source!, f.seq);
    inb.accept(f.seq, m, f.low);
  }

  /** Messages waiting for the application beyond which new ones are not acknowledged. */
  private get highWater(): number {
    return Math.max(1024, 4 * this.reliability.window);
  }

  /**
   * Sends this side's `low` mark: as a heartbeat (multicast, group) or as the notice that a
   * message was given up on. With MLS it is an MLS message whose authenticated data is the mark.
   */
  protected async sendMark(dest: Name, low: number, multicast: boolean): Promise<void> {
    try {
      const body = this.mlsGroup ? await this.mlsGroup.encrypt(new Uint8Array(0), markAad(this.id, low)) : new Uint8Array(0);
      this.layer.transmit(dest, frame({ sessionId: this.id, type: FrameType.Heartbeat, low, body }), multicast);
    } catch (err) {
      this.log?.debug({ reason: (err as Error).message }, 'mark not sent');
    }
  }

  private async receiveMark(f: SessionFrame, msg: ReceivedMessage): Promise<void> {
    if (this.state !== 'open') return;
    const source = this.member(msg, 'heartbeat');
    if (source === undefined) return;
    if (this.mlsGroup) {
      let opened: { aad: Uint8Array; sender: string };
      try {
        opened = await this.mlsGroup.decrypt(f.body);
      } catch (err) {
        // A heartbeat that crosses a commit is expected; anything else is counted.
        if (err instanceof MlsRefused && (err.reason === 'epoch-ahead' || err.reason === 'wrong-epoch')) return;
        throw err;
      }
      if (opened.sender !== this.memberIdentity(source) || !Buffer.from(opened.aad).equals(markAad(this.id, f.low))) {
        this.layer.drop('tampered', `heartbeat from ${source}: its mark is not the one its sender authenticated`, { session: this.id });
        return;
      }
    }
    this.heardFrom(source);
    this.inbound.get(source)?.advance(f.low);
  }

  protected forgetInbound(source: string): void {
    this.inbound.delete(source);
  }

  private deliver(m: SessionMessage): void {
    this.delivered++;
    this.queue.push(m);
  }

  private sendAck(to: Name, seq: number): void {
    this.layer.transmit(to, frame({ sessionId: this.id, type: FrameType.Ack, seq }));
  }

  private receiveAck(f: SessionFrame, msg: ReceivedMessage): void {
    const source = this.member(msg, 'acknowledgement');
    if (source !== undefined) this.outbound.ack(f.seq, source);
  }

  // -- requests -----------------------------------------------------------------------------

  /**
   * Sends `f` (its seq set to a fresh request id) to `dest` and again every retry interval until
   * one of `answers` comes back from `dest` (or from anyone, for a discovery), up to `tries`
   * sends or `deadlineMs`.
   */
  protected request(
    dest: Name,
    f: SessionFrame,
    answers: FrameType[],
    opts: { tries?: number; deadlineMs?: number; what: string; from: AnswerFrom },
  ): Promise<{ frame: SessionFrame; msg: ReceivedMessage }> {
    const seq = this.nextRequest++;
    const out = { ...f, seq };
    const tries = opts.tries ?? this.reliability.maxRetries + 1;
    const deadline = Date.now() + (opts.deadlineMs ?? tries * this.reliability.retryIntervalMs);
    let sent = 0;
    return new Promise((resolve, reject) => {
      const attempt = (): void => {
        if (this.state === 'closed') {
          this.pending.delete(seq);
          reject(new SessionError(`session ${this.id} closed while waiting for ${opts.what}`));
          return;
        }
        if (sent >= tries || Date.now() >= deadline) {
          this.pending.delete(seq);
          const why = this.layer.lastDeliveryFailure(dest);
          reject(new SessionError(`no answer from ${formatName(dest)} to ${opts.what} after ${sent} attempt(s)${why ? ` (${why})` : ''}`));
          return;
        }
        sent++;
        p.timer = setTimeout(attempt, Math.min(this.reliability.retryIntervalMs, Math.max(1, deadline - Date.now())));
        p.timer.unref?.();
        this.layer.transmit(dest, out);
      };
      const p: PendingRequest = { answers, from: opts.from, resolve, reject, timer: undefined as unknown as NodeJS.Timeout };
      this.pending.set(seq, p);
      attempt();
    });
  }

  /**
   * Sends `discover` to `name` (anycast without an instance) until an instance answers before
   * `deadline`. A refusal throws; with MLS, an answer whose key package is malformed or whose
   * credential is not the identity its sender proved is dropped and the asking goes on.
   */
  protected async discover(
    name: Name,
    discover: SessionFrame,
    says: { what: string; refused: string; identity?: string },
    deadline: number,
  ): Promise<{ answer: SessionFrame; member: Member }> {
    for (;;) {
      const { frame: answer, msg } = await this.request(name, discover, [FrameType.Join, FrameType.Refuse], {
        what: says.what,
        deadlineMs: Math.max(1, deadline - Date.now()),
        tries: Number.MAX_SAFE_INTEGER,
        from: { name, identity: says.identity },
      });
      const source = formatName(msg.source!);
      if (answer.type === FrameType.Refuse) throw new SessionError(`${source} refused ${says.refused}: ${answer.reason}`);
      const member: Member = { name: msg.source!, identity: provenIdentity(msg) };
      if (!this.mls) return { answer, member };
      try {
        const offered = await keyPackageIdentity(answer.body);
        if (offered === member.identity) return { answer, member };
        this.layer.drop('bad-credential', `${source} proves ${member.identity} but its MLS credential claims ${offered}`, { session: this.id });
      } catch (err) {
        if (!(err instanceof MlsRefused)) throw err;
        this.layer.drop(err.reason, `key package from ${source}: ${err.message}`, { session: this.id });
      }
    }
  }

  /** The invited side answers a discovery (first or retransmitted) with the same JOIN. */
  protected async offerJoin(to: Name, discover: SessionFrame): Promise<void> {
    if (this.mls) this.keyPackage ??= await (await this.layer.mlsIdentity()).newKeyPackage();
    this.answer(to, discover, { type: FrameType.Join, body: this.keyPackage?.bytes ?? new Uint8Array(0) });
  }

  /** The invited side: give up when the session is not completed in time. */
  protected armJoinTimer(why: string, by: Name): void {
    this.invitedBy = formatName(by);
    this.joinTimer = setTimeout(() => {
      if (this.state === 'opening') this.finish(why);
    }, this.layer.opts.joinTimeoutMs);
    this.joinTimer.unref?.();
  }

  /** An answer to a request; `seq` echoes the request's. */
  protected answer(to: Name, request: SessionFrame, f: Omit<Partial<SessionFrame>, 'sessionId' | 'seq'> & { type: FrameType }): void {
    this.layer.transmit(to, frame({ ...f, sessionId: this.id, seq: request.seq }));
  }

  // -- closing ------------------------------------------------------------------------------

  /** Ends the session here: pending sends and requests fail, the message stream ends. */
  protected finish(reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this.joinTimer);
    const err = new SessionError(`session ${this.id} closed: ${reason}`);
    this.outbound.close(err);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.queue.end();
    this.layer.forget(this);
    this.log?.info({ reason }, 'session closed');
    try {
      this.emit('closed', reason);
    } catch (err) {
      this.layer.handlerError(err);
    }
  }

  abstract close(): Promise<void>;
}
