// A point-to-point session: opened towards a name (usually anycast, org/ns/alice), it binds to
// the one instance that answers first and talks to that instance only.
//
//   initiator                          responder (one instance of the name)
//   DISCOVER  ── anycast ──────────▶   creates the half-open session
//             ◀──────────────────────  JOIN (MLS key package)
//   binds; MLS: group + add
//   WELCOME (MLS welcome) ──────────▶  joins the MLS group; the session is announced
//             ◀──────────────────────  WELCOME_ACK
//   open                               open
//
// Retransmitted discoveries may reach a second instance; its late JOIN is answered with CLOSE.

import { randomUUID } from 'node:crypto';
import { formatName, type Name } from '../../proto/dataplane.js';
import { FrameType, SessionKind, frame, type SessionFrame } from '../../proto/session.js';
import type { ReceivedMessage } from '../received-message.js';
import { MlsGroup, MlsRefused } from './mls-group.js';
import { durationOption, reliabilityOptions } from './reliability.js';
import type { SessionLayer } from './session-layer.js';
import { Session, provenIdentity, reliabilityFields, reliabilityFromFrame, type SessionKindName, type SessionOptions } from './session.js';

export interface PointToPointOptions extends SessionOptions {
  /** How long to look for an instance (a route may still be on its way; default 15 s). */
  timeoutMs?: number;
  /**
   * The identity (SPIFFE ID) the instance must prove. Names are not bound to identities by the
   * data plane: pin one when any app could subscribe to the name.
   */
  identity?: string;
}

export class PointToPointSession extends Session {
  readonly kind: SessionKindName = 'point-to-point';
  private peerName: Name | undefined;
  private peerKey = '';
  private peerIdentity = '';
  private readonly initiator: boolean;

  private constructor(layer: SessionLayer, id: string, mls: boolean, opts: SessionOptions, initiator: boolean) {
    super(id, mls, reliabilityOptions(opts.reliability), layer);
    this.initiator = initiator;
  }

  /** The instance this session is bound to. */
  get peer(): Name | undefined {
    return this.peerName;
  }

  /** The peer's proven identity (its SPIFFE ID). */
  get remoteIdentity(): string {
    return this.peerIdentity;
  }

  static async open(layer: SessionLayer, remote: Name, opts: PointToPointOptions): Promise<PointToPointSession> {
    const timeoutMs = durationOption('point-to-point session: timeoutMs', opts.timeoutMs, 15_000);
    const s = new PointToPointSession(layer, randomUUID(), opts.mls ?? false, opts, true);
    layer.register(s);
    try {
      await s.handshake(remote, timeoutMs, opts.identity);
    } catch (err) {
      // A peer already bound must not keep a half of the session nobody will use.
      if (s.peerName) s.layer.transmit(s.peerName, frame({ sessionId: s.id, type: FrameType.Close, reason: `the initiator gave up: ${(err as Error).message}` }));
      s.finish(`could not open: ${(err as Error).message}`);
      throw err;
    }
    return s;
  }

  private async handshake(remote: Name, timeoutMs: number, identity: string | undefined): Promise<void> {
    const me = this.layer.myIdentity;
    const group = this.mls ? await MlsGroup.create(await this.layer.mlsIdentity(), Buffer.from(this.id)) : undefined;
    const discover = frame({ sessionId: this.id, type: FrameType.Discover, kind: SessionKind.PointToPoint, mls: this.mls, ...reliabilityFields(this.reliability) });
    const says = { what: `a session request to ${formatName(remote)}`, refused: 'the session', identity };
    const { answer, member } = await this.discover(remote, discover, says, Date.now() + timeoutMs);
    this.bind(member.name, member.identity);
    let welcome: Uint8Array = new Uint8Array(0);
    if (group) {
      ({ welcome } = await group.add([answer.body]));
      this.mlsGroup = group;
    }
    await this.request(member.name, this.welcomeFrame(welcome, me), [FrameType.WelcomeAck], {
      what: group ? 'the MLS welcome' : 'the session welcome',
      from: { name: member.name, identity: member.identity },
    });
    this.state = 'open';
    this.log?.info({ peer: this.peerKey, identity: this.peerIdentity, mls: this.mls }, 'session open');
  }

  private welcomeFrame(body: Uint8Array, me: string): SessionFrame {
    return frame({
      sessionId: this.id,
      type: FrameType.Welcome,
      kind: SessionKind.PointToPoint,
      mls: this.mls,
      body,
      members: [
        { name: this.layer.host.name, identity: me },
        { name: this.peerName!, identity: this.peerIdentity },
      ],
    });
  }

  private bind(peer: Name, identity: string): void {
    this.peerName = peer;
    this.peerKey = formatName(peer);
    this.peerIdentity = identity;
  }

  /** The half-open responder side, created when a DISCOVER arrives. */
  static responder(layer: SessionLayer, f: SessionFrame, msg: ReceivedMessage): PointToPointSession {
    const s = new PointToPointSession(layer, f.sessionId, f.mls, { reliability: reliabilityFromFrame(f) }, false);
    s.bind(msg.source!, provenIdentity(msg));
    s.armJoinTimer('the initiator never completed the session', msg.source!);
    return s;
  }

  protected override async handleControl(f: SessionFrame, msg: ReceivedMessage): Promise<void> {
    const from = formatName(msg.source!);
    if (f.type === FrameType.Join && this.initiator) {
      // A second instance answered a retransmitted discovery after this session bound.
      if (from !== this.peerKey) this.layer.transmit(msg.source!, frame({ sessionId: this.id, type: FrameType.Close, reason: 'the session is bound to another instance' }));
      return;
    }
    if (from !== this.peerKey || provenIdentity(msg) !== this.peerIdentity) {
      this.layer.drop('not-member', `${FrameType[f.type]} from ${from}, which is not this session's peer`, { session: this.id });
      return;
    }
    switch (f.type) {
      case FrameType.Discover:
        if (this.initiator) break;
        return this.offerJoin(msg.source!, f);
      case FrameType.Welcome:
        if (this.initiator) break;
        if (this.state === 'opening') await this.welcomed(f);
        this.answer(msg.source!, f, { type: FrameType.WelcomeAck });
        return;
      case FrameType.Close:
        this.finish(f.reason ? `closed by ${from}: ${f.reason}` : `closed by ${from}`);
        return;
      default:
        break;
    }
    this.layer.drop('unexpected', `${FrameType[f.type]} is not expected in a point-to-point session (${this.initiator ? 'initiator' : 'responder'}, ${this.state})`, {
      session: this.id,
    });
  }

  private async welcomed(f: SessionFrame): Promise<void> {
    if (this.mls) {
      if (!this.keyPackage) throw new MlsRefused('wrong-key-package', 'a welcome arrived before this side offered a key package');
      const group = await MlsGroup.join(await this.layer.mlsIdentity(), this.keyPackage, f.body);
      // The group must be exactly the two of us, each with the identity its links proved.
      const ids = group.members().map((m) => m.identity).sort();
      const want = [this.layer.myIdentity, this.peerIdentity].sort();
      if (ids.length !== 2 || ids[0] !== want[0] || ids[1] !== want[1]) {
        throw new MlsRefused('bad-credential', `the MLS group has members ${ids.join(', ')}, expected ${want.join(', ')}`);
      }
      this.mlsGroup = group;
    }
    clearTimeout(this.joinTimer);
    this.state = 'open';
    this.log?.info({ peer: this.peerKey, identity: this.peerIdentity, mls: this.mls }, 'session open');
    this.layer.announce(this);
  }

  protected recipients(): string[] {
    return [this.peerKey];
  }

  protected recipientName(key: string): Name | undefined {
    return key === this.peerKey ? this.peerName : undefined;
  }

  protected transmitData(f: SessionFrame): void {
    this.layer.transmit(this.peerName!, f);
  }

  protected memberIdentity(source: string): string | undefined {
    return source === this.peerKey ? this.peerIdentity : undefined;
  }

  /** Tells the peer and ends the session; unacknowledged sends reject. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    if (this.peerName && this.state === 'open') {
      this.layer.transmit(this.peerName, frame({ sessionId: this.id, type: FrameType.Close, reason: 'closed by the application' }));
    }
    this.finish('closed by the application');
  }
}
