// A message as an app receives it. Built from the scanner's offsets: the payload is a view into
// the received bytes, and names, identity and metadata are decoded only when read. Decoding every
// name string eagerly was most of the receiver's CPU in the two-hop bench.

import { decodeMessage, decodeNameAt, type Name, type RouteView } from '../proto/dataplane.js';
import { bytesEqualAt, decodeUtf8 } from '../proto/wire.js';

const NO_METADATA: Readonly<Record<string, string>> = Object.freeze({});

export class ReceivedMessage {
  readonly messageId: number;
  readonly fanout: number;
  private readonly v: {
    srcStart: number;
    srcEnd: number;
    destStart: number;
    destEnd: number;
    identityStart: number;
    identityEnd: number;
    payloadStart: number;
    payloadEnd: number;
    contentTypeStart: number;
    contentTypeEnd: number;
    hasMetadata: boolean;
  };
  private cache: { source?: Name; destination?: Name; identity?: string; payload?: Buffer; metadata?: Record<string, string> } = {};

  /** `buf[start, end)` is the encoded Message that `view` was scanned from. */
  constructor(
    private readonly buf: Buffer,
    private readonly start: number,
    private readonly end: number,
    view: RouteView,
  ) {
    this.messageId = view.messageId;
    this.fanout = view.fanout;
    this.v = {
      srcStart: view.srcStart,
      srcEnd: view.srcEnd,
      destStart: view.destStart,
      destEnd: view.destEnd,
      identityStart: view.identityStart,
      identityEnd: view.identityEnd,
      payloadStart: view.payloadStart,
      payloadEnd: view.payloadEnd,
      contentTypeStart: view.contentTypeStart,
      contentTypeEnd: view.contentTypeEnd,
      hasMetadata: view.hasMetadata,
    };
  }

  /** The sending app's name, with its instance: reply here to reach that instance. */
  get source(): Name | undefined {
    if (this.v.srcStart < 0) return undefined;
    return (this.cache.source ??= decodeNameAt(this.buf, this.v.srcStart, this.v.srcEnd));
  }

  get destination(): Name | undefined {
    if (this.v.destStart < 0) return undefined;
    return (this.cache.destination ??= decodeNameAt(this.buf, this.v.destStart, this.v.destEnd));
  }

  /** Identity of the sender as stamped by its node (its SPIFFE ID on mTLS links; empty on plaintext). */
  get identity(): string {
    return (this.cache.identity ??= decodeUtf8(this.buf, this.v.identityStart, this.v.identityEnd));
  }

  get payload(): Buffer {
    return (this.cache.payload ??= this.buf.subarray(this.v.payloadStart, this.v.payloadEnd));
  }

  get contentType(): string {
    return decodeUtf8(this.buf, this.v.contentTypeStart, this.v.contentTypeEnd);
  }

  /** Compares the content type with `utf8` without decoding it (checked for every received message). */
  hasContentType(utf8: Uint8Array): boolean {
    return bytesEqualAt(this.buf, this.v.contentTypeStart, this.v.contentTypeEnd, utf8);
  }

  get metadata(): Record<string, string> {
    if (!this.v.hasMetadata) return NO_METADATA as Record<string, string>;
    return (this.cache.metadata ??= decodeMessage(this.buf, this.start, this.end).metadata ?? {});
  }

  /** True when the message carries metadata (checked without decoding it). */
  get hasMetadata(): boolean {
    return this.v.hasMetadata;
  }
}
