// Codec for proto/dataplane.proto, written by hand because it is the data-plane hot path.
//
// Why not protobufjs (which @grpc/proto-loader already brings): `npm run bench:codec` on the
// 2-core dev box measured a 100-byte publish at ~420k decode+encode/s through protobufjs and
// ~850k/s here (encode 1.5 µs vs 0.4 µs). More important, the forwarder never builds an object
// for a publish it forwards: `scanMessage` reads only the routing fields (destination, ttl,
// fanout, identity) as offsets (~0.15 µs) and the node copies the bytes through with the TTL
// patched in place.
// Interop with the reference library is covered by test/proto-codec.test.ts (protobufjs
// decodes what we encode and vice versa) and the grpc-js interop tests.

import {
  Cursor,
  DecodeError,
  WIRE_LEN,
  WIRE_VARINT,
  readLength,
  decodeUtf8,
  readString,
  readVarint,
  skipField,
  stringFieldSize,
  tag,
  varintFieldSize,
  varintSize,
  writeStringField,
  writeVarint,
  writeVarintField,
} from './wire.js';

export { DecodeError } from './wire.js';

export const DATAPLANE_SERVICE = 'slim.dataplane.v1.DataPlaneService';
export const OPEN_CHANNEL_PATH = `/${DATAPLANE_SERVICE}/OpenChannel`;
export const PROTOCOL_VERSION = 1;
export const DEFAULT_TTL = 8;

export interface Name {
  org: string;
  namespace: string;
  service: string;
  /** Empty: any instance of the service. */
  instance: string;
}

export interface Header {
  source?: Name;
  destination?: Name;
  identity: string;
  fanout: number;
  ttl: number;
  messageId: number;
}

export interface Subscribe {
  name?: Name;
  subscriptionId: number;
}

export type Unsubscribe = Subscribe;

export interface Publish {
  header?: Header;
  payload: Uint8Array;
  contentType: string;
}

export enum LinkKind {
  Unspecified = 0,
  App = 1,
  PeerInGroup = 2,
  RemoteGroup = 3,
}

export interface Link {
  linkId: string;
  nodeId: string;
  group: string;
  kind: LinkKind;
  app?: Name;
  protocolVersion: number;
}

export interface SubscriptionAck {
  subscriptionId: number;
  success: boolean;
  error: string;
}

export enum ErrorCode {
  Unspecified = 0,
  NoRoute = 1,
  InvalidMessage = 2,
  TtlExpired = 3,
  QueueFull = 4,
}

export interface DeliveryError {
  messageId: number;
  code: ErrorCode;
  reason: string;
  destination?: Name;
}

/** Field numbers of the `kind` oneof in Message; also what scanMessage reports. */
export enum Kind {
  None = 0,
  Subscribe = 1,
  Unsubscribe = 2,
  Publish = 3,
  Link = 4,
  SubscriptionAck = 5,
  Error = 6,
}

export type MessageBody =
  | { kind: 'subscribe'; subscribe: Subscribe }
  | { kind: 'unsubscribe'; unsubscribe: Unsubscribe }
  | { kind: 'publish'; publish: Publish }
  | { kind: 'link'; link: Link }
  | { kind: 'subscriptionAck'; subscriptionAck: SubscriptionAck }
  | { kind: 'error'; error: DeliveryError }
  | { kind: 'none' };

export type Message = MessageBody & { metadata?: Record<string, string> };

const METADATA_FIELD = 15;

// ---------------------------------------------------------------------------------------------
// Sizing and writing. Every writer returns the position after what it wrote; sizes are computed
// first so nested messages get their length prefix without a second buffer.

function encodeNameFields(buf: Buffer, pos: number, n: Name): number {
  pos = writeStringField(buf, pos, tag(1, WIRE_LEN), n.org);
  pos = writeStringField(buf, pos, tag(2, WIRE_LEN), n.namespace);
  pos = writeStringField(buf, pos, tag(3, WIRE_LEN), n.service);
  return writeStringField(buf, pos, tag(4, WIRE_LEN), n.instance);
}

// An app names the same few destinations and itself in every publish. Frozen names (parseName's,
// an app's own) cannot change, so their encoding is computed once and copied afterwards: it was
// a third of the sender's CPU in the two-hop bench.
const encodedNames = new WeakMap<Name, Buffer>();

function frozenNameBytes(n: Name): Buffer | undefined {
  if (!Object.isFrozen(n)) return undefined;
  let b = encodedNames.get(n);
  if (b === undefined) {
    const size =
      stringFieldSize(1, n.org) + stringFieldSize(1, n.namespace) + stringFieldSize(1, n.service) + stringFieldSize(1, n.instance);
    b = Buffer.allocUnsafe(size);
    encodeNameFields(b, 0, n);
    encodedNames.set(n, b);
  }
  return b;
}

function nameSize(n: Name): number {
  const cached = frozenNameBytes(n);
  if (cached) return cached.length;
  return (
    stringFieldSize(1, n.org) +
    stringFieldSize(1, n.namespace) +
    stringFieldSize(1, n.service) +
    stringFieldSize(1, n.instance)
  );
}

function writeName(buf: Buffer, pos: number, n: Name): number {
  const cached = frozenNameBytes(n);
  if (cached) {
    buf.set(cached, pos);
    return pos + cached.length;
  }
  return encodeNameFields(buf, pos, n);
}

function nestedSize(inner: number): number {
  return 1 + varintSize(inner) + inner;
}

function writeNested<T>(
  buf: Buffer,
  pos: number,
  field: number,
  size: number,
  value: T,
  write: (b: Buffer, p: number, v: T) => number,
): number {
  buf[pos++] = tag(field, WIRE_LEN);
  pos = writeVarint(buf, pos, size);
  return write(buf, pos, value);
}

function subscribeSize(s: Subscribe): number {
  return (s.name ? nestedSize(nameSize(s.name)) : 0) + varintFieldSize(1, s.subscriptionId);
}

function writeSubscribe(buf: Buffer, pos: number, s: Subscribe): number {
  if (s.name) pos = writeNested(buf, pos, 1, nameSize(s.name), s.name, writeName);
  return writeVarintField(buf, pos, tag(2, WIRE_VARINT), s.subscriptionId);
}

function bytesFieldSize(b: Uint8Array): number {
  return b.length === 0 ? 0 : 1 + varintSize(b.length) + b.length;
}

// A publish is encoded for every message an app sends, so its nested sizes are computed once
// per encode here instead of once per nesting level.
interface PublishLayout {
  source: number;
  destination: number;
  header: number;
  publish: number;
}

const layout: PublishLayout = { source: 0, destination: 0, header: 0, publish: 0 };

function layoutPublish(p: Publish): PublishLayout {
  const h = p.header;
  layout.source = h?.source ? nameSize(h.source) : 0;
  layout.destination = h?.destination ? nameSize(h.destination) : 0;
  layout.header = h
    ? (h.source ? nestedSize(layout.source) : 0) +
      (h.destination ? nestedSize(layout.destination) : 0) +
      stringFieldSize(1, h.identity) +
      varintFieldSize(1, h.fanout) +
      varintFieldSize(1, h.ttl) +
      varintFieldSize(1, h.messageId)
    : 0;
  layout.publish = (h ? nestedSize(layout.header) : 0) + bytesFieldSize(p.payload) + stringFieldSize(1, p.contentType);
  return layout;
}

function writePublishField(buf: Buffer, pos: number, p: Publish): number {
  const l = layoutPublish(p);
  buf[pos++] = tag(Kind.Publish, WIRE_LEN);
  pos = writeVarint(buf, pos, l.publish);
  const h = p.header;
  if (h) {
    buf[pos++] = tag(1, WIRE_LEN);
    pos = writeVarint(buf, pos, l.header);
    if (h.source) {
      buf[pos++] = tag(1, WIRE_LEN);
      pos = writeVarint(buf, pos, l.source);
      pos = writeName(buf, pos, h.source);
    }
    if (h.destination) {
      buf[pos++] = tag(2, WIRE_LEN);
      pos = writeVarint(buf, pos, l.destination);
      pos = writeName(buf, pos, h.destination);
    }
    pos = writeStringField(buf, pos, tag(3, WIRE_LEN), h.identity);
    pos = writeVarintField(buf, pos, tag(4, WIRE_VARINT), h.fanout);
    pos = writeVarintField(buf, pos, tag(5, WIRE_VARINT), h.ttl);
    pos = writeVarintField(buf, pos, tag(6, WIRE_VARINT), h.messageId);
  }
  if (p.payload.length > 0) {
    buf[pos++] = tag(2, WIRE_LEN);
    pos = writeVarint(buf, pos, p.payload.length);
    buf.set(p.payload, pos);
    pos += p.payload.length;
  }
  return writeStringField(buf, pos, tag(3, WIRE_LEN), p.contentType);
}

function linkSize(l: Link): number {
  return (
    stringFieldSize(1, l.linkId) +
    stringFieldSize(1, l.nodeId) +
    stringFieldSize(1, l.group) +
    varintFieldSize(1, l.kind) +
    (l.app ? nestedSize(nameSize(l.app)) : 0) +
    varintFieldSize(1, l.protocolVersion)
  );
}

function writeLink(buf: Buffer, pos: number, l: Link): number {
  pos = writeStringField(buf, pos, tag(1, WIRE_LEN), l.linkId);
  pos = writeStringField(buf, pos, tag(2, WIRE_LEN), l.nodeId);
  pos = writeStringField(buf, pos, tag(3, WIRE_LEN), l.group);
  pos = writeVarintField(buf, pos, tag(4, WIRE_VARINT), l.kind);
  if (l.app) pos = writeNested(buf, pos, 5, nameSize(l.app), l.app, writeName);
  return writeVarintField(buf, pos, tag(6, WIRE_VARINT), l.protocolVersion);
}

function ackSize(a: SubscriptionAck): number {
  return varintFieldSize(1, a.subscriptionId) + (a.success ? 2 : 0) + stringFieldSize(1, a.error);
}

function writeAck(buf: Buffer, pos: number, a: SubscriptionAck): number {
  pos = writeVarintField(buf, pos, tag(1, WIRE_VARINT), a.subscriptionId);
  pos = writeVarintField(buf, pos, tag(2, WIRE_VARINT), a.success ? 1 : 0);
  return writeStringField(buf, pos, tag(3, WIRE_LEN), a.error);
}

function errorSize(e: DeliveryError): number {
  return (
    varintFieldSize(1, e.messageId) +
    varintFieldSize(1, e.code) +
    stringFieldSize(1, e.reason) +
    (e.destination ? nestedSize(nameSize(e.destination)) : 0)
  );
}

function writeError(buf: Buffer, pos: number, e: DeliveryError): number {
  pos = writeVarintField(buf, pos, tag(1, WIRE_VARINT), e.messageId);
  pos = writeVarintField(buf, pos, tag(2, WIRE_VARINT), e.code);
  pos = writeStringField(buf, pos, tag(3, WIRE_LEN), e.reason);
  if (e.destination) pos = writeNested(buf, pos, 4, nameSize(e.destination), e.destination, writeName);
  return pos;
}

function bodySize(m: Message): number {
  switch (m.kind) {
    case 'subscribe':
      return nestedSize(subscribeSize(m.subscribe));
    case 'unsubscribe':
      return nestedSize(subscribeSize(m.unsubscribe));
    case 'publish':
      return nestedSize(layoutPublish(m.publish).publish);
    case 'link':
      return nestedSize(linkSize(m.link));
    case 'subscriptionAck':
      return nestedSize(ackSize(m.subscriptionAck));
    case 'error':
      return nestedSize(errorSize(m.error));
    case 'none':
      return 0;
  }
}

function metadataEntrySize(k: string, v: string): number {
  return stringFieldSize(1, k) + stringFieldSize(1, v);
}

export function messageSize(m: Message): number {
  let n = bodySize(m);
  if (m.metadata) {
    for (const k in m.metadata) n += nestedSize(metadataEntrySize(k, m.metadata[k]!));
  }
  return n;
}

/** Writes `m` at `pos` (the caller sized the buffer with messageSize) and returns the end. */
export function writeMessage(buf: Buffer, pos: number, m: Message): number {
  switch (m.kind) {
    case 'subscribe':
      pos = writeNested(buf, pos, Kind.Subscribe, subscribeSize(m.subscribe), m.subscribe, writeSubscribe);
      break;
    case 'unsubscribe':
      pos = writeNested(buf, pos, Kind.Unsubscribe, subscribeSize(m.unsubscribe), m.unsubscribe, writeSubscribe);
      break;
    case 'publish':
      pos = writePublishField(buf, pos, m.publish);
      break;
    case 'link':
      pos = writeNested(buf, pos, Kind.Link, linkSize(m.link), m.link, writeLink);
      break;
    case 'subscriptionAck':
      pos = writeNested(buf, pos, Kind.SubscriptionAck, ackSize(m.subscriptionAck), m.subscriptionAck, writeAck);
      break;
    case 'error':
      pos = writeNested(buf, pos, Kind.Error, errorSize(m.error), m.error, writeError);
      break;
    case 'none':
      break;
  }
  if (m.metadata) {
    for (const k in m.metadata) {
      const v = m.metadata[k]!;
      buf[pos++] = tag(METADATA_FIELD, WIRE_LEN);
      pos = writeVarint(buf, pos, metadataEntrySize(k, v));
      pos = writeStringField(buf, pos, tag(1, WIRE_LEN), k);
      pos = writeStringField(buf, pos, tag(2, WIRE_LEN), v);
    }
  }
  return pos;
}

export function encodeMessage(m: Message): Buffer {
  const out = Buffer.allocUnsafe(messageSize(m));
  writeMessage(out, 0, m);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Full decoding: for control messages, the SDK, and the rare forwarder path that must rewrite
// a header. Bytes fields are views into the input buffer, not copies.

export function emptyName(): Name {
  return { org: '', namespace: '', service: '', instance: '' };
}

function fieldHeader(c: Cursor): [number, number] {
  const key = readVarint(c);
  const field = key >>> 3;
  if (field === 0) throw new DecodeError('field number 0');
  return [field, key & 7];
}

function expectWire(actual: number, expected: number, what: string): void {
  if (actual !== expected) throw new DecodeError(`${what} has wire type ${actual}, expected ${expected}`);
}

function decodeName(c: Cursor, stop: number): Name {
  const n = emptyName();
  const outer = c.end;
  c.end = stop;
  while (c.pos < stop) {
    const [f, w] = fieldHeader(c);
    if (f >= 1 && f <= 4) {
      expectWire(w, WIRE_LEN, 'Name field');
      const s = readString(c);
      if (f === 1) n.org = s;
      else if (f === 2) n.namespace = s;
      else if (f === 3) n.service = s;
      else n.instance = s;
    } else skipField(c, w);
  }
  c.end = outer;
  return n;
}

function decodeSubscribe(c: Cursor, stop: number): Subscribe {
  const s: Subscribe = { subscriptionId: 0 };
  const outer = c.end;
  c.end = stop;
  while (c.pos < stop) {
    const [f, w] = fieldHeader(c);
    if (f === 1) {
      expectWire(w, WIRE_LEN, 'Subscribe.name');
      s.name = decodeName(c, readLength(c));
    } else if (f === 2) {
      expectWire(w, WIRE_VARINT, 'Subscribe.subscription_id');
      s.subscriptionId = readVarint(c);
    } else skipField(c, w);
  }
  c.end = outer;
  return s;
}

// A publish is walked by the scanner (one walker for its grammar, so the node's fast path and the
// full decoder accept the same bytes) and built from the offsets it records.
let publishView: RouteView | undefined;

function decodePublish(c: Cursor, stop: number): Publish {
  const v = (publishView ??= new RouteView());
  v.resetPublish();
  scanPublish(c, stop, v);
  const buf = c.buf;
  const p: Publish = {
    payload: v.payloadEnd > v.payloadStart ? buf.subarray(v.payloadStart, v.payloadEnd) : EMPTY,
    contentType: decodeUtf8(buf, v.contentTypeStart, v.contentTypeEnd),
  };
  if (v.hasHeader) {
    p.header = {
      identity: decodeUtf8(buf, v.identityStart, v.identityEnd),
      fanout: v.fanout,
      ttl: v.ttl,
      messageId: v.messageId,
    };
    if (v.srcStart >= 0) p.header.source = decodeNameAt(buf, v.srcStart, v.srcEnd);
    if (v.destStart >= 0) p.header.destination = decodeNameAt(buf, v.destStart, v.destEnd);
  }
  return p;
}

function decodeLink(c: Cursor, stop: number): Link {
  const l: Link = { linkId: '', nodeId: '', group: '', kind: LinkKind.Unspecified, protocolVersion: 0 };
  const outer = c.end;
  c.end = stop;
  while (c.pos < stop) {
    const [f, w] = fieldHeader(c);
    switch (f) {
      case 1:
      case 2:
      case 3: {
        expectWire(w, WIRE_LEN, 'Link string');
        const s = readString(c);
        if (f === 1) l.linkId = s;
        else if (f === 2) l.nodeId = s;
        else l.group = s;
        break;
      }
      case 4:
        expectWire(w, WIRE_VARINT, 'Link.kind');
        l.kind = readVarint(c);
        break;
      case 5:
        expectWire(w, WIRE_LEN, 'Link.app');
        l.app = decodeName(c, readLength(c));
        break;
      case 6:
        expectWire(w, WIRE_VARINT, 'Link.protocol_version');
        l.protocolVersion = readVarint(c);
        break;
      default:
        skipField(c, w);
    }
  }
  c.end = outer;
  return l;
}

function decodeAck(c: Cursor, stop: number): SubscriptionAck {
  const a: SubscriptionAck = { subscriptionId: 0, success: false, error: '' };
  const outer = c.end;
  c.end = stop;
  while (c.pos < stop) {
    const [f, w] = fieldHeader(c);
    if (f === 1 || f === 2) {
      expectWire(w, WIRE_VARINT, 'SubscriptionAck number');
      const v = readVarint(c);
      if (f === 1) a.subscriptionId = v;
      else a.success = v !== 0;
    } else if (f === 3) {
      expectWire(w, WIRE_LEN, 'SubscriptionAck.error');
      a.error = readString(c);
    } else skipField(c, w);
  }
  c.end = outer;
  return a;
}

function decodeError(c: Cursor, stop: number): DeliveryError {
  const e: DeliveryError = { messageId: 0, code: ErrorCode.Unspecified, reason: '' };
  const outer = c.end;
  c.end = stop;
  while (c.pos < stop) {
    const [f, w] = fieldHeader(c);
    if (f === 1 || f === 2) {
      expectWire(w, WIRE_VARINT, 'DeliveryError number');
      const v = readVarint(c);
      if (f === 1) e.messageId = v;
      else e.code = v;
    } else if (f === 3) {
      expectWire(w, WIRE_LEN, 'DeliveryError.reason');
      e.reason = readString(c);
    } else if (f === 4) {
      expectWire(w, WIRE_LEN, 'DeliveryError.destination');
      e.destination = decodeName(c, readLength(c));
    } else skipField(c, w);
  }
  c.end = outer;
  return e;
}

function decodeMetadataEntry(c: Cursor, stop: number, into: Record<string, string>): void {
  let k = '';
  let v = '';
  const outer = c.end;
  c.end = stop;
  while (c.pos < stop) {
    const [f, w] = fieldHeader(c);
    if (f === 1 || f === 2) {
      expectWire(w, WIRE_LEN, 'metadata entry');
      if (f === 1) k = readString(c);
      else v = readString(c);
    } else skipField(c, w);
  }
  c.end = outer;
  // Plain assignment of "__proto__" would hit the Object.prototype setter and drop the entry.
  if (k === '__proto__') Object.defineProperty(into, k, { value: v, enumerable: true, writable: true, configurable: true });
  else into[k] = v;
}

const EMPTY = new Uint8Array(0);

/** Decodes one Message occupying buf[start, end). Throws DecodeError on malformed input. */
export function decodeMessage(buf: Buffer, start = 0, end = buf.length): Message {
  const c: Cursor = { buf, pos: start, end };
  let body: MessageBody = { kind: 'none' };
  let metadata: Record<string, string> | undefined;
  while (c.pos < end) {
    const [f, w] = fieldHeader(c);
    if ((f >= Kind.Subscribe && f <= Kind.Error) || f === METADATA_FIELD) {
      expectWire(w, WIRE_LEN, `Message field ${f}`);
      const stop = readLength(c);
      switch (f) {
        case Kind.Subscribe:
          body = { kind: 'subscribe', subscribe: decodeSubscribe(c, stop) };
          break;
        case Kind.Unsubscribe:
          body = { kind: 'unsubscribe', unsubscribe: decodeSubscribe(c, stop) };
          break;
        case Kind.Publish:
          body = { kind: 'publish', publish: decodePublish(c, stop) };
          break;
        case Kind.Link:
          body = { kind: 'link', link: decodeLink(c, stop) };
          break;
        case Kind.SubscriptionAck:
          body = { kind: 'subscriptionAck', subscriptionAck: decodeAck(c, stop) };
          break;
        case Kind.Error:
          body = { kind: 'error', error: decodeError(c, stop) };
          break;
        default:
          decodeMetadataEntry(c, stop, (metadata ??= {}));
      }
      c.pos = stop;
    } else skipField(c, w);
  }
  return metadata ? { ...body, metadata } : body;
}

// ---------------------------------------------------------------------------------------------
// The forwarder's scanner: finds the routing fields of a message without allocating.

/** Offsets into the scanned buffer; -1 where a field is absent. Reused across calls. */
export class RouteView {
  kind: Kind = Kind.None;
  orgStart = 0;
  orgEnd = 0;
  nsStart = 0;
  nsEnd = 0;
  svcStart = 0;
  svcEnd = 0;
  instStart = 0;
  instEnd = 0;
  /** Encoded destination / source Name (content, without tag and length); start < 0 when absent. */
  destStart = -1;
  destEnd = -1;
  srcStart = -1;
  srcEnd = -1;
  identityStart = 0;
  identityEnd = 0;
  fanout = 0;
  ttl = 0;
  /** Position of the TTL varint, -1 when the field is absent. */
  ttlPos = -1;
  ttlLen = 0;
  messageId = 0;
  payloadStart = 0;
  payloadEnd = 0;
  contentTypeStart = 0;
  contentTypeEnd = 0;
  hasMetadata = false;
  hasHeader = false;

  get hasDestination(): boolean {
    return this.destStart >= 0;
  }

  reset(): void {
    this.kind = Kind.None;
    this.hasMetadata = false;
    this.resetPublish();
  }

  resetPublish(): void {
    this.payloadStart = this.payloadEnd = this.contentTypeStart = this.contentTypeEnd = 0;
    this.resetHeader();
  }

  resetHeader(): void {
    this.hasHeader = false;
    this.orgStart = this.orgEnd = this.nsStart = this.nsEnd = 0;
    this.svcStart = this.svcEnd = this.instStart = this.instEnd = 0;
    this.destStart = this.destEnd = this.srcStart = this.srcEnd = -1;
    this.identityStart = this.identityEnd = 0;
    this.fanout = this.ttl = this.messageId = 0;
    this.ttlPos = -1;
    this.ttlLen = 0;
  }
}

const scanCursor: Cursor = { buf: Buffer.alloc(0), pos: 0, end: 0 };

// The scanner accepts exactly what decodeMessage accepts (same wire-type rules for every known
// field, the source name and metadata entries included), so a node never forwards bytes that the
// receiving app's full decoder would reject. A repeated message field replaces the earlier one,
// as in decodeMessage (and protobufjs), so the two also agree on what a message says.

function wireCheck(actual: number, expected: number, what: string): void {
  if (actual !== expected) throw new DecodeError(`${what} has wire type ${actual}, expected ${expected}`);
}

/** Walks a Name, checking its fields; records offsets into `v` when `v` is given. */
function scanName(c: Cursor, stop: number, v: RouteView | null): void {
  while (c.pos < stop) {
    const key = readVarint(c);
    const f = key >>> 3;
    const w = key & 7;
    if (f >= 1 && f <= 4) {
      wireCheck(w, WIRE_LEN, 'Name field');
      const end = readLength(c);
      if (end > stop) throw new DecodeError('Name field runs past the end of its message');
      if (v !== null) {
        if (f === 1) {
          v.orgStart = c.pos;
          v.orgEnd = end;
        } else if (f === 2) {
          v.nsStart = c.pos;
          v.nsEnd = end;
        } else if (f === 3) {
          v.svcStart = c.pos;
          v.svcEnd = end;
        } else {
          v.instStart = c.pos;
          v.instEnd = end;
        }
      }
      c.pos = end;
    } else if (f === 0) throw new DecodeError('field number 0');
    else skipField(c, w);
  }
  if (c.pos !== stop) throw new DecodeError('Name overruns its length');
}

function scanHeader(c: Cursor, stop: number, v: RouteView): void {
  v.resetHeader();
  v.hasHeader = true;
  while (c.pos < stop) {
    const key = readVarint(c);
    const f = key >>> 3;
    const w = key & 7;
    switch (f) {
      case 1:
      case 2: {
        wireCheck(w, WIRE_LEN, 'Header name');
        const end = readLength(c);
        if (f === 2) {
          v.orgStart = v.orgEnd = v.nsStart = v.nsEnd = v.svcStart = v.svcEnd = v.instStart = v.instEnd = 0;
          v.destStart = c.pos;
          v.destEnd = end;
          scanName(c, end, v);
        } else {
          v.srcStart = c.pos;
          v.srcEnd = end;
          scanName(c, end, null);
        }
        break;
      }
      case 3: {
        wireCheck(w, WIRE_LEN, 'Header.identity');
        const end = readLength(c);
        v.identityStart = c.pos;
        v.identityEnd = end;
        c.pos = end;
        break;
      }
      case 4:
        wireCheck(w, WIRE_VARINT, 'Header number');
        v.fanout = readVarint(c);
        break;
      case 5:
        wireCheck(w, WIRE_VARINT, 'Header number');
        v.ttlPos = c.pos;
        v.ttl = readVarint(c);
        v.ttlLen = c.pos - v.ttlPos;
        break;
      case 6:
        wireCheck(w, WIRE_VARINT, 'Header number');
        v.messageId = readVarint(c);
        break;
      case 0:
        throw new DecodeError('field number 0');
      default:
        skipField(c, w);
    }
  }
  if (c.pos !== stop) throw new DecodeError('Header overruns its length');
}

function scanPublish(c: Cursor, stop: number, v: RouteView): void {
  const outer = c.end;
  c.end = stop;
  while (c.pos < stop) {
    const key = readVarint(c);
    const f = key >>> 3;
    const w = key & 7;
    if (f === 1) {
      wireCheck(w, WIRE_LEN, 'Publish.header');
      const hEnd = readLength(c);
      c.end = hEnd;
      scanHeader(c, hEnd, v);
      c.end = stop;
    } else if (f === 2 || f === 3) {
      wireCheck(w, WIRE_LEN, f === 2 ? 'Publish.payload' : 'Publish.content_type');
      const end = readLength(c);
      if (f === 2) {
        v.payloadStart = c.pos;
        v.payloadEnd = end;
      } else {
        v.contentTypeStart = c.pos;
        v.contentTypeEnd = end;
      }
      c.pos = end;
    } else if (f === 0) throw new DecodeError('field number 0');
    else skipField(c, w);
  }
  c.end = outer;
  if (c.pos !== stop) throw new DecodeError('Publish overruns its length');
}

function scanMetadataEntry(c: Cursor, stop: number): void {
  while (c.pos < stop) {
    const key = readVarint(c);
    const f = key >>> 3;
    const w = key & 7;
    if (f === 1 || f === 2) {
      wireCheck(w, WIRE_LEN, 'metadata entry');
      c.pos = readLength(c);
    } else if (f === 0) throw new DecodeError('field number 0');
    else skipField(c, w);
  }
  if (c.pos !== stop) throw new DecodeError('metadata entry overruns its length');
}

/**
 * Fills `v` with the routing fields of the Message in buf[start, end), checking the whole
 * publish as decodeMessage would. Other kinds report just their kind (the node decodes those in
 * full: they are rare). Throws DecodeError where decodeMessage would.
 */
export function scanMessage(buf: Buffer, start: number, end: number, v: RouteView): void {
  v.reset();
  const c = scanCursor;
  c.buf = buf;
  c.pos = start;
  c.end = end;
  try {
    while (c.pos < end) {
      const key = readVarint(c);
      const f = key >>> 3;
      const w = key & 7;
      if (f >= Kind.Subscribe && f <= Kind.Error) {
        wireCheck(w, WIRE_LEN, `Message field ${f}`);
        const stop = readLength(c);
        // A later oneof member replaces an earlier one: drop earlier routing fields.
        v.resetPublish();
        v.kind = f as Kind;
        if (f === Kind.Publish) scanPublish(c, stop, v);
        else c.pos = stop;
      } else if (f === METADATA_FIELD) {
        wireCheck(w, WIRE_LEN, 'Message field 15');
        const stop = readLength(c);
        scanMetadataEntry(c, stop);
        v.hasMetadata = true;
      } else if (f === 0) throw new DecodeError('field number 0');
      else skipField(c, w);
    }
  } finally {
    c.buf = EMPTY_BUF;
  }
}

const EMPTY_BUF = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------------
// Names as text: "org/ns/service" or "org/ns/service/instance".

/**
 * A node's identity across a deployment: node ids are unique within a group only (every
 * cluster's StatefulSet has a slim-0), so links and the controller key nodes by both.
 */
export function nodeKey(group: string, nodeId: string): string {
  return `${group}/${nodeId}`;
}

export function formatName(n: Name): string {
  const base = `${n.org}/${n.namespace}/${n.service}`;
  return n.instance ? `${base}/${n.instance}` : base;
}

const NAME_PART = /^[A-Za-z0-9._~:@+=-]+$/;

/** Why `n` is not a valid routable name, or undefined when it is. */
export function nameProblem(n: Name | undefined): string | undefined {
  if (!n) return 'name is missing';
  const parts: [string, string][] = [
    ['org', n.org],
    ['namespace', n.namespace],
    ['service', n.service],
  ];
  for (const [what, value] of parts) {
    if (!value) return `${what} is empty`;
    if (value.length > 255) return `${what} is longer than 255 characters`;
    if (!NAME_PART.test(value)) return `${what} "${value}" has characters outside [A-Za-z0-9._~:@+=-]`;
  }
  if (n.instance && (n.instance.length > 255 || !NAME_PART.test(n.instance))) {
    return `instance "${n.instance}" has characters outside [A-Za-z0-9._~:@+=-] or is too long`;
  }
  return undefined;
}

/** Decodes the Name whose fields occupy buf[start, end) (offsets from a RouteView). */
export function decodeNameAt(buf: Buffer, start: number, end: number): Name {
  return decodeName({ buf, pos: start, end }, end);
}

/** Parses "org/ns/service[/instance]" into a frozen Name; throws an Error naming the problem. */
export function parseName(text: string): Name {
  const parts = text.split('/');
  if (parts.length < 3 || parts.length > 4) {
    throw new Error(`name "${text}" must be org/namespace/service or org/namespace/service/instance`);
  }
  const n: Name = { org: parts[0]!, namespace: parts[1]!, service: parts[2]!, instance: parts[3] ?? '' };
  if (parts.length === 4 && !n.instance) throw new Error(`name "${text}" has an empty instance`);
  const problem = nameProblem(n);
  if (problem) throw new Error(`name "${text}": ${problem}`);
  return Object.freeze(n);
}
