// A group session: a moderator creates it on a channel name, invites participants by name and
// removes them; members leave by asking the moderator. Every membership change is one commit
// (an MLS commit with MLS) that the moderator delivers to every member and waits for, one change
// at a time, so all members go through the same sequence of epochs. Data is multicast on the
// channel; each receiver acknowledges to the sender, which retransmits to the ones missing.
// Every member multicasts heartbeats; a member silent for `missedHeartbeats` intervals is
// reported offline (and online again when heard).

import { randomUUID } from 'node:crypto';
import { formatName, nameProblem, parseName, type Name } from '../../proto/dataplane.js';
import { FrameType, SessionKind, frame, type Member, type SessionFrame } from '../../proto/session.js';
import type { ReceivedMessage } from '../received-message.js';
import { MlsGroup, MlsRefused } from './mls-group.js';
import { durationOption, reliabilityOptions } from './reliability.js';
import type { SessionLayer } from './session-layer.js';
import {
  Session,
  SessionError,
  provenIdentity,
  reliabilityFields,
  reliabilityFromFrame,
  type SessionKindName,
  type SessionOptions,
} from './session.js';

export interface GroupOptions extends SessionOptions {
  /** Heartbeat interval every member uses (default 1000 ms). */
  heartbeatMs?: number;
  /** Heartbeats missed before a member is reported offline (default 3). */
  missedHeartbeats?: number;
  /** How long an invitation looks for an instance of the invited name (default 15 s). */
  inviteTimeoutMs?: number;
}

export type MembershipChange = 'joined' | 'left' | 'removed' | 'offline' | 'online';

export interface MembershipEvent {
  type: MembershipChange;
  member: Member;
  /** Members after the change. */
  members: Member[];
  epoch: number;
}

const MULTICAST = true;

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- typed events for an EventEmitter
export interface GroupSession {
  /** A member joined, left, was removed, went silent (offline) or was heard again (online). */
  on(event: 'membership', listener: (e: MembershipEvent) => void): this;
  on(event: 'closed', listener: (reason: string) => void): this;
}

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- typed events for an EventEmitter
export class GroupSession extends Session {
  readonly kind: SessionKindName = 'group';
  readonly channel: Name;
  private moderatorName: Name;
  private moderatorIdentity: string;
  private readonly isModerator: boolean;
  private readonly memberMap = new Map<string, Member>();
  private version = 0;
  private readonly heartbeatMs: number;
  private readonly missed: number;
  private readonly inviteTimeoutMs: number;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly lastHeard = new Map<string, number>();
  private readonly offline = new Set<string>();
  /** Members that left or were removed (the most recent ones): their in-flight frames are expected. */
  private readonly gone = new Set<string>();
  /** Membership changes run one at a time (moderator). */
  private changes: Promise<unknown> = Promise.resolve();
  private channelJoined = false;
  private leaving: Promise<void> | undefined;

  private constructor(
    layer: SessionLayer,
    id: string,
    mls: boolean,
    opts: GroupOptions,
    channel: Name,
    moderator: Member,
    isModerator: boolean,
  ) {
    super(id, mls, reliabilityOptions(opts.reliability), layer);
    this.channel = Object.freeze({ ...channel, instance: '' });
    this.moderatorName = moderator.name;
    this.moderatorIdentity = moderator.identity;
    this.isModerator = isModerator;
    this.heartbeatMs = durationOption('group session: heartbeatMs', opts.heartbeatMs, 1000, 3_600_000);
    this.inviteTimeoutMs = durationOption('group session: inviteTimeoutMs', opts.inviteTimeoutMs, 15_000);
    this.missed = opts.missedHeartbeats ?? 3;
    if (!Number.isInteger(this.missed) || this.missed <= 0 || this.missed > 1000) {
      throw new RangeError(`group session: missedHeartbeats must be a whole number from 1 to 1000, got ${String(this.missed)}`);
    }
  }

  /** Current members (this app included). */
  get members(): Member[] {
    return [...this.memberMap.values()];
  }

  get moderator(): Member {
    return { name: this.moderatorName, identity: this.moderatorIdentity };
  }

  get amModerator(): boolean {
    return this.isModerator;
  }

  /** Membership version: the MLS epoch with MLS, else a counter the moderator advances. */
  override get epoch(): number {
    return this.version;
  }

  /** Members currently reported offline (formatted names). */
  get offlineMembers(): string[] {
    return [...this.offline];
  }

  // -- moderator ----------------------------------------------------------------------------

  static async create(layer: SessionLayer, channel: Name, opts: GroupOptions): Promise<GroupSession> {
    const problem = nameProblem({ ...channel, instance: channel.instance || 'x' });
    if (problem) throw new SessionError(`group channel ${formatName(channel)}: ${problem}`);
    const me: Member = { name: layer.host.name, identity: layer.myIdentity };
    const s = new GroupSession(layer, randomUUID(), opts.mls ?? false, opts, channel, me, true);
    s.memberMap.set(formatName(me.name), me);
    if (s.mls) {
      s.mlsGroup = await MlsGroup.create(await layer.mlsIdentity(), Buffer.from(s.id));
      s.version = Number(s.mlsGroup.epoch);
    }
    layer.register(s);
    try {
      await layer.joinChannel(s.channel);
      s.channelJoined = true;
    } catch (err) {
      s.finish(`cannot subscribe to ${formatName(s.channel)}: ${(err as Error).message}`);
      throw err;
    }
    s.state = 'open';
    s.startHeartbeats();
    s.log?.info({ channel: formatName(s.channel), mls: s.mls }, 'group session created');
    return s;
  }

  /**
   * Invites one instance of `name` (anycast without an instance); resolves with the new member
   * once every member has the change. `identity` pins the SPIFFE ID the invitee must prove (the
   * data plane does not bind names to identities).
   */
  invite(name: Name | string, opts: { identity?: string } = {}): Promise<Member> {
    const n = typeof name === 'string' ? parseName(name) : name;
    return this.serialized(() => this.doInvite(n, opts.identity));
  }

  /** Removes a member (its exact name, or a service name when only one instance is a member). */
  remove(name: Name | string): Promise<void> {
    return this.serialized(async () => {
      const m = this.findMember(typeof name === 'string' ? name : formatName(name));
      await this.removeMember(m, 'removed');
    });
  }

  private serialized<T>(op: () => Promise<T>): Promise<T> {
    this.requireModerator();
    const run = this.changes.then(op, op);
    this.changes = run.catch(() => undefined);
    return run;
  }

  private requireModerator(): void {
    if (!this.isModerator) throw new SessionError(`only the moderator (${formatName(this.moderatorName)}) changes the membership of session ${this.id}`);
    this.requireOpen();
  }

  private findMember(text: string): Member {
    const exact = this.memberMap.get(text);
    if (exact) return exact;
    const matches = [...this.memberMap.entries()].filter(([k]) => k.startsWith(`${text}/`));
    if (matches.length === 1) return matches[0]![1];
    if (matches.length > 1) throw new SessionError(`${text} matches ${matches.length} members (${matches.map(([k]) => k).join(', ')}); name the instance`);
    throw new SessionError(`${text} is not a member of session ${this.id}`);
  }

  private async doInvite(name: Name, identity: string | undefined): Promise<Member> {
    this.requireOpen();
    const discover = frame({
      sessionId: this.id,
      type: FrameType.Discover,
      kind: SessionKind.Group,
      mls: this.mls,
      channel: this.channel,
      moderator: this.moderatorName,
      heartbeatMs: this.heartbeatMs,
      missedHeartbeats: this.missed,
      ...reliabilityFields(this.reliability),
    });
    const says = { what: `the invitation of ${formatName(name)}`, refused: 'the invitation', identity };
    const { answer, member } = await this.discover(name, discover, says, Date.now() + this.inviteTimeoutMs);
    const source = formatName(member.name);
    if (this.memberMap.has(source)) throw new SessionError(`${source} is already a member of session ${this.id}`);
    const twin = this.mls ? this.members.find((m) => m.identity === member.identity) : undefined;
    if (twin) {
      // An MLS group removes members by credential: two members with one identity could not be told apart.
      this.layer.transmit(member.name, frame({ sessionId: this.id, type: FrameType.Close, reason: 'another member already has this identity' }));
      throw new SessionError(`${source} proves ${member.identity}, which ${formatName(twin.name)} already has; an MLS group holds one member per identity`);
    }
    const others = this.otherMembers();
    let commit: Uint8Array = new Uint8Array(0);
    let welcome: Uint8Array = new Uint8Array(0);
    if (this.mlsGroup) ({ commit, welcome } = await this.mlsGroup.add([answer.body]));
    this.memberMap.set(source, member);
    this.gone.delete(source);
    this.version = this.mlsGroup ? Number(this.mlsGroup.epoch) : this.version + 1;
    await this.deliverCommit(others, commit, 'joined');
    try {
      await this.request(member.name, this.stateFrame(FrameType.Welcome, welcome, 'joined'), [FrameType.WelcomeAck], { what: 'the group welcome', from: member });
    } catch (err) {
      // Nobody is left in the roster who never joined: the addition is undone by a removal.
      await this.removeMember(member, 'removed', { notify: false });
      throw new SessionError(`${source} did not confirm its welcome (${(err as Error).message}); the invitation was undone`);
    }
    this.lastHeard.set(source, Date.now());
    this.membership('joined', member);
    return member;
  }

  private async removeMember(m: Member, why: 'removed' | 'left', how: { answer?: { frame: SessionFrame; to: Name }; notify?: boolean } = {}): Promise<void> {
    const key = formatName(m.name);
    if (key === formatName(this.moderatorName)) throw new SessionError('the moderator cannot remove itself; close the session instead');
    let commit: Uint8Array = new Uint8Array(0);
    if (this.mlsGroup) ({ commit } = await this.mlsGroup.remove([m.identity]));
    this.memberMap.delete(key);
    this.dropMember(key);
    this.version = this.mlsGroup ? Number(this.mlsGroup.epoch) : this.version + 1;
    await this.deliverCommit(this.otherMembers(), commit, why);
    // Tell the member itself; a leaver's request gets this as its answer.
    if (how.answer) this.answer(how.answer.to, how.answer.frame, { type: FrameType.Removed, reason: why, epoch: this.version });
    else if (how.notify !== false) {
      await this.request(m.name, frame({ sessionId: this.id, type: FrameType.Removed, reason: why, epoch: this.version }), [FrameType.CommitAck], {
        what: 'the removal notice',
        from: m,
      }).catch((err: Error) => this.log?.warn({ member: key, reason: err.message }, 'the removed member did not confirm'));
    }
    this.membership(why, m);
  }

  /** Sends the commit to each member and waits for all of them (or their retries to run out). */
  private async deliverCommit(to: Member[], commit: Uint8Array, why: MembershipChange): Promise<void> {
    const f = this.stateFrame(FrameType.Commit, commit, why);
    const results = await Promise.allSettled(to.map((m) => this.request(m.name, f, [FrameType.CommitAck], { what: `the commit for epoch ${this.version}`, from: m })));
    results.forEach((r, i) => {
      if (r.status === 'rejected') this.log?.warn({ member: formatName(to[i]!.name), epoch: this.version, reason: (r.reason as Error).message }, 'a member did not acknowledge a commit');
    });
  }

  private stateFrame(type: FrameType, body: Uint8Array, why: string): SessionFrame {
    return frame({
      sessionId: this.id,
      type,
      kind: SessionKind.Group,
      mls: this.mls,
      body,
      members: this.members,
      epoch: this.version,
      reason: why,
      channel: this.channel,
      moderator: this.moderatorName,
      heartbeatMs: this.heartbeatMs,
      reliable: this.reliability.reliable,
    });
  }

  private otherMembers(): Member[] {
    const me = formatName(this.layer.host.name);
    return this.members.filter((m) => formatName(m.name) !== me);
  }

  // -- invited member -----------------------------------------------------------------------

  /** The invited side, created when an invitation arrives. */
  static invited(layer: SessionLayer, f: SessionFrame, msg: ReceivedMessage): GroupSession {
    const moderator: Member = { name: msg.source!, identity: provenIdentity(msg) };
    const s = new GroupSession(
      layer,
      f.sessionId,
      f.mls,
      { reliability: reliabilityFromFrame(f), heartbeatMs: f.heartbeatMs || undefined, missedHeartbeats: f.missedHeartbeats || undefined },
      f.channel!,
      moderator,
      false,
    );
    s.armJoinTimer('the moderator never completed the invitation', msg.source!);
    return s;
  }

  protected override async handleControl(f: SessionFrame, msg: ReceivedMessage): Promise<void> {
    const from = formatName(msg.source!);
    if (this.isModerator) {
      if (f.type === FrameType.Leave) return this.leaveRequested(f, msg);
      if (f.type === FrameType.Join) {
        // A late answer to an invitation already settled (another instance answered first):
        // that instance must not stay half-joined.
        if (!this.memberMap.has(from)) this.layer.transmit(msg.source!, frame({ sessionId: this.id, type: FrameType.Close, reason: 'the invitation went to another instance' }));
        return;
      }
      this.layer.drop('unexpected', `${FrameType[f.type]} from ${from} is not expected by the moderator`, { session: this.id });
      return;
    }
    if (from !== formatName(this.moderatorName) || provenIdentity(msg) !== this.moderatorIdentity) {
      this.layer.drop('not-moderator', `${FrameType[f.type]} from ${from}, which is not the moderator`, { session: this.id });
      return;
    }
    switch (f.type) {
      case FrameType.Discover:
        if (this.state === 'open') {
          this.answer(msg.source!, f, { type: FrameType.Refuse, reason: 'already a member of this session' });
          return;
        }
        if (!this.channelJoined) {
          // Subscribed before answering, so the commit's multicasts already find this member.
          await this.layer.joinChannel(this.channel);
          if (this.state === 'closed') {
            this.layer.leaveChannel(this.channel); // finished while subscribing: nothing releases it later
            return;
          }
          this.channelJoined = true;
        }
        return this.offerJoin(msg.source!, f);
      case FrameType.Welcome:
        if (this.state === 'opening') await this.welcomed(f);
        this.answer(msg.source!, f, { type: FrameType.WelcomeAck });
        return;
      case FrameType.Commit:
        if (this.state !== 'open') return; // not acknowledged: it comes again once the welcome is in
        if (f.epoch > this.version) await this.applyCommit(f);
        this.answer(msg.source!, f, { type: FrameType.CommitAck });
        return;
      case FrameType.Removed:
        this.answer(msg.source!, f, { type: FrameType.CommitAck });
        // A late notice of an earlier removal must not end a membership that came after it.
        if (this.state === 'open' && f.epoch <= this.version) return;
        this.membership(f.reason === 'left' ? 'left' : 'removed', this.self());
        this.finish(`${f.reason === 'left' ? 'left' : 'removed by the moderator'}`);
        return;
      case FrameType.Close:
        this.answer(msg.source!, f, { type: FrameType.CommitAck });
        this.finish(f.reason ? `closed by the moderator: ${f.reason}` : 'closed by the moderator');
        return;
      default:
        this.layer.drop('unexpected', `${FrameType[f.type]} is not expected by a member`, { session: this.id });
    }
  }

  private async welcomed(f: SessionFrame): Promise<void> {
    if (this.mls) {
      if (!this.keyPackage) throw new MlsRefused('wrong-key-package', 'a welcome arrived before this member offered a key package');
      const group = await MlsGroup.join(await this.layer.mlsIdentity(), this.keyPackage, f.body);
      this.checkRoster(group, f.members);
      this.mlsGroup = group;
      this.version = Number(group.epoch);
    } else {
      this.version = f.epoch;
    }
    this.setMembers(f.members);
    clearTimeout(this.joinTimer);
    this.state = 'open';
    const now = Date.now();
    for (const k of this.memberMap.keys()) this.lastHeard.set(k, now);
    this.startHeartbeats();
    this.log?.info({ channel: formatName(this.channel), members: this.memberMap.size, mls: this.mls }, 'joined group session');
    this.layer.announce(this);
  }

  /** The moderator's member list must be what the MLS group says, identity for identity. */
  private checkRoster(group: MlsGroup, members: Member[]): void {
    const mls = group.members().map((m) => m.identity).sort();
    const listed = members.map((m) => m.identity).sort();
    if (mls.length !== listed.length || mls.some((id, i) => id !== listed[i])) {
      throw new MlsRefused('bad-credential', `member list (${listed.join(', ')}) does not match the MLS group (${mls.join(', ')})`);
    }
    if (!mls.includes(this.moderatorIdentity)) throw new MlsRefused('not-member', `the moderator ${this.moderatorIdentity} is not in the MLS group`);
  }

  private async applyCommit(f: SessionFrame): Promise<void> {
    if (this.mlsGroup) {
      const effect = await this.mlsGroup.processCommit(f.body, { allowedCommitters: [this.moderatorIdentity] });
      if (effect.removedMe) {
        this.membership('removed', this.self());
        this.finish('removed by the moderator');
        return;
      }
      this.checkRoster(this.mlsGroup, f.members);
      this.version = Number(this.mlsGroup.epoch);
    } else {
      // Without MLS a commit is the whole member list: a missed one is simply overtaken.
      this.version = f.epoch;
    }
    const before = new Map(this.memberMap);
    this.setMembers(f.members);
    for (const [k, m] of this.memberMap) {
      if (!before.has(k)) {
        this.lastHeard.set(k, Date.now());
        this.membership('joined', m);
      }
    }
    for (const [k, m] of before) {
      if (!this.memberMap.has(k)) {
        this.dropMember(k);
        this.membership(f.reason === 'left' ? 'left' : 'removed', m);
      }
    }
  }

  private setMembers(members: Member[]): void {
    this.memberMap.clear();
    for (const m of members) this.memberMap.set(formatName(m.name), m);
  }

  private self(): Member {
    return { name: this.layer.host.name, identity: this.layer.myIdentity };
  }

  /** Asks the moderator to take this member out; resolves when it has (or after its retries). */
  leave(): Promise<void> {
    if (this.isModerator) return this.close();
    if (this.state !== 'open') return Promise.resolve();
    // The moderator may first finish an invitation in progress: wait as long as one can take.
    const leave = frame({ sessionId: this.id, type: FrameType.Leave });
    this.leaving ??= this.request(this.moderatorName, leave, [FrameType.Removed], {
      what: 'the leave request',
      from: this.moderator,
      tries: Number.MAX_SAFE_INTEGER,
      deadlineMs: this.inviteTimeoutMs + (this.reliability.maxRetries + 1) * this.reliability.retryIntervalMs,
    })
      .then(
        () => undefined,
        (err: Error) => this.log?.warn({ reason: err.message }, 'the moderator did not confirm the leave; leaving anyway'),
      )
      .then(() => {
        if (this.state !== 'closed') {
          this.membership('left', this.self());
          this.finish('left the group');
        }
      });
    return this.leaving;
  }

  private leaveRequested(f: SessionFrame, msg: ReceivedMessage): void {
    const key = formatName(msg.source!);
    const m = this.memberMap.get(key);
    if (!m) {
      // Already out (a retransmitted request): answer again.
      this.answer(msg.source!, f, { type: FrameType.Removed, reason: 'left', epoch: this.version });
      return;
    }
    if (provenIdentity(msg) !== m.identity) {
      this.layer.drop('identity-mismatch', `leave request for ${key} proves ${provenIdentity(msg)}, member is ${m.identity}`, { session: this.id });
      return;
    }
    // Not awaited: the frame queue must keep moving (the commit's acknowledgements come through it).
    void this.serialized(() => (this.memberMap.has(key) ? this.removeMember(m, 'left', { answer: { frame: f, to: msg.source! } }) : Promise.resolve())).catch((err: Error) =>
      this.log?.warn({ member: key, reason: err.message }, 'could not remove a leaving member'),
    );
  }

  // -- liveness -----------------------------------------------------------------------------

  private startHeartbeats(): void {
    this.heartbeatTimer = setInterval(() => this.beat(), this.heartbeatMs);
    this.heartbeatTimer.unref?.();
    this.beat();
  }

  private beat(): void {
    if (this.state !== 'open') return;
    // Alone in the group (a moderator before its first invitation) there is nobody to tell.
    if (this.memberMap.size > 1) void this.sendMark(this.channel, this.outbound.low, MULTICAST);
    const now = Date.now();
    const me = formatName(this.layer.host.name);
    for (const [k, m] of this.memberMap) {
      if (k === me || this.offline.has(k)) continue;
      if (now - (this.lastHeard.get(k) ?? now) > this.heartbeatMs * this.missed) {
        this.offline.add(k);
        this.membership('offline', m);
      }
    }
  }

  protected override heardFrom(source: string): void {
    this.lastHeard.set(source, Date.now());
    const m = this.memberMap.get(source);
    if (m && this.offline.delete(source)) this.membership('online', m);
  }

  protected override departed(source: string): boolean {
    return this.gone.has(source);
  }

  private dropMember(key: string): void {
    this.gone.add(key);
    if (this.gone.size > 1024) this.gone.delete(this.gone.values().next().value!);
    this.outbound.forget(key);
    this.forgetInbound(key);
    this.lastHeard.delete(key);
    this.offline.delete(key);
  }

  private membership(type: MembershipChange, member: Member): void {
    const ev: MembershipEvent = { type, member, members: this.members, epoch: this.version };
    this.log?.info({ change: type, member: formatName(member.name), epoch: this.version }, 'group membership');
    try {
      this.emit('membership', ev);
    } catch (err) {
      this.layer.handlerError(err);
    }
  }

  // -- data ---------------------------------------------------------------------------------

  protected recipients(): string[] {
    const me = formatName(this.layer.host.name);
    return [...this.memberMap.keys()].filter((k) => k !== me);
  }

  protected recipientName(key: string): Name | undefined {
    return this.memberMap.get(key)?.name;
  }

  protected transmitData(f: SessionFrame, recipients: string[]): void {
    if (recipients.length > 0) this.layer.transmit(this.channel, f, MULTICAST);
  }

  protected memberIdentity(source: string): string | undefined {
    return this.memberMap.get(source)?.identity;
  }

  // -- closing ------------------------------------------------------------------------------

  /** Moderator: ends the session for everyone. Member: same as leave(). */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    if (!this.isModerator) return this.leave();
    if (this.state === 'open') {
      const f = frame({ sessionId: this.id, type: FrameType.Close, reason: 'closed by the moderator' });
      await Promise.allSettled(this.otherMembers().map((m) => this.request(m.name, f, [FrameType.CommitAck], { what: 'the close notice', tries: 3, from: m })));
    }
    this.finish('closed by the application');
  }

  protected override finish(reason: string): void {
    if (this.state === 'closed') return;
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.joinTimer);
    if (this.channelJoined) {
      this.channelJoined = false;
      this.layer.leaveChannel(this.channel);
    }
    super.finish(reason);
  }
}
