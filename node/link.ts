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
  ) {
    this.identityBytes = Buffer.from(identity, 'utf8');
    this.maxTargetClass = maxTargetClassFrom(kind);
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
   * horizon, DESIGN §4's two-step routing): from a local app, anywhere (2); from a node of
   * another group, to local apps or nodes of this group (1: the second step); from a node of
   * this group, to local apps only (0). A message therefore crosses at most app → other group
   * → same group → app, and never loops.
   */
  readonly maxTargetClass: number;
}

function maxTargetClassFrom(kind: LinkKind): number {
  return kind === LinkKind.App ? 2 : kind === LinkKind.RemoteGroup ? 1 : 0;
}
