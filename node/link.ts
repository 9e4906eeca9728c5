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
    /** True when this node dialled the link (dataplane.clients). */
    readonly dialled: boolean,
    readonly linkId: string,
    /** For apps, the name announced at negotiation (informational: routing uses subscriptions). */
    readonly appName = '',
  ) {
    this.identityBytes = Buffer.from(identity, 'utf8');
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
}
