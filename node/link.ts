// A negotiated connection of this node: an app or another node at the end of one Channel.

import type { Channel } from '../transport/channel.js';
import { LinkKind } from '../proto/dataplane.js';

export class Link {
  /** UTF-8 bytes of `identity`, compared against a publish's identity field on the hot path. */
  readonly identityBytes: Buffer;
  /** The peer's node id for node links; empty for apps. */
  readonly label: string;

  constructor(
    readonly channel: Channel,
    readonly kind: LinkKind,
    readonly peerNodeId: string,
    readonly peerGroup: string,
    /** Identity proven by the transport (certificate); empty on plaintext. */
    readonly identity: string,
    /** True when this node dialled the link (dataplane.clients or a controlled connection). */
    readonly dialled: boolean,
    readonly linkId: string,
    /** For apps, the name announced at negotiation (informational: routing uses subscriptions). */
    readonly appName = '',
    /** The node's routes come from a controller, which routes other groups in two steps. */
    twoStep = false,
  ) {
    this.identityBytes = Buffer.from(identity, 'utf8');
    this.maxTargetClass = maxTargetClassFrom(kind, twoStep);
    this.label =
      kind === LinkKind.App ? `app ${appName || '?'} (${channel.remoteAddress})` : `node ${peerNodeId} (${peerGroup}, ${channel.remoteAddress})`;
  }

  get id(): number {
    return this.channel.id;
  }

  /** The peer proved an identity (a certificate with a SPIFFE ID); plaintext links prove none. */
  get authenticated(): boolean {
    return this.identity !== '';
  }

  get isApp(): boolean {
    return this.kind === LinkKind.App;
  }

  /** Routing class: 0 local app, 1 node of this group, 2 node of another group. */
  get routeClass(): number {
    return this.kind === LinkKind.App ? 0 : this.kind === LinkKind.PeerInGroup ? 1 : 2;
  }

  /**
   * The highest routing class a publish received on this link may be forwarded to (split
   * horizon): from a local app, anywhere (2); from a node of this group, to local apps only
   * (0). From a node of another group: under a controller, to local apps or nodes of this group
   * (1: DESIGN §4's second step, towards the subscriber's node); with static links only, to local
   * apps (0) — those are a full mesh, so the sender reached every subscriber's node directly and
   * a second step would deliver a multicast twice. A message crosses at most app → other group
   * → same group → app, and never loops.
   */
  readonly maxTargetClass: number;
}

function maxTargetClassFrom(kind: LinkKind, twoStep: boolean): number {
  return kind === LinkKind.App ? 2 : kind === LinkKind.RemoteGroup && twoStep ? 1 : 0;
}
