// Protobuf wire-format primitives shared by the hand-written codecs in this folder.
// Kept separate from any one schema so the data-plane codec and its fast scanner read and
// write bytes the same way.

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_LEN = 2;
export const WIRE_FIXED32 = 5;

export class DecodeError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'DecodeError';
  }
}

/** Position-carrying cursor over a byte range; the hot path reuses one per call site. */
export interface Cursor {
  buf: Buffer;
  pos: number;
  end: number;
}

export function readVarint(c: Cursor): number {
  const buf = c.buf;
  let pos = c.pos;
  const end = c.end;
  if (pos >= end) throw new DecodeError('truncated varint');
  let b = buf[pos++]!;
  if (b < 0x80) {
    c.pos = pos;
    return b;
  }
  // Up to 28 bits with bit operations, beyond that with multiplication so values up to
  // 2^53 stay exact (ids are numbers in this codebase).
  let result = b & 0x7f;
  let shift = 7;
  while (true) {
    if (pos >= end) throw new DecodeError('truncated varint');
    b = buf[pos++]!;
    if (shift < 28) result |= (b & 0x7f) << shift;
    else result += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) break;
    shift += 7;
    if (shift > 63) throw new DecodeError('varint longer than 10 bytes');
  }
  c.pos = pos;
  return result;
}

/** Reads a length prefix and returns the end of the delimited range, checking bounds. */
export function readLength(c: Cursor): number {
  const len = readVarint(c);
  const stop = c.pos + len;
  if (stop > c.end) throw new DecodeError('length-delimited field runs past the end of its message');
  return stop;
}

export function skipField(c: Cursor, wireType: number): void {
  switch (wireType) {
    case WIRE_VARINT:
      readVarint(c);
      return;
    case WIRE_FIXED64:
      c.pos += 8;
      break;
    case WIRE_LEN:
      c.pos = readLength(c);
      return;
    case WIRE_FIXED32:
      c.pos += 4;
      break;
    default:
      throw new DecodeError(`unsupported wire type ${wireType}`);
  }
  if (c.pos > c.end) throw new DecodeError('truncated fixed-width field');
}

export function varintSize(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  let n = 4;
  let x = Math.floor(v / 0x10000000);
  while (x > 0) {
    n++;
    x = Math.floor(x / 128);
  }
  return n;
}

export function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v = v >= 0x100000000 ? Math.floor(v / 128) : v >>> 7;
  }
  buf[pos++] = v;
  return pos;
}

/**
 * UTF-8 length of `s`. Names and ids are short ASCII; counting them in JS avoids a call into
 * C++ (Buffer.byteLength) per string, which dominated publish encoding (bench/codec.ts).
 */
export function utf8Length(s: string): number {
  const n = s.length;
  if (n > 64) return Buffer.byteLength(s);
  for (let i = 0; i < n; i++) if (s.charCodeAt(i) >= 0x80) return Buffer.byteLength(s);
  return n;
}

/** Writes `s` (whose UTF-8 length is `len`) at `pos`; returns the end. */
export function writeUtf8(buf: Buffer, pos: number, s: string, len: number): number {
  if (len === s.length && len <= 64) {
    for (let i = 0; i < len; i++) buf[pos + i] = s.charCodeAt(i);
    return pos + len;
  }
  return pos + buf.write(s, pos, len, 'utf8');
}

/** Size of a string field (tag + length + bytes), 0 when empty (proto3 default). */
export function stringFieldSize(tagSize: number, s: string): number {
  if (s.length === 0) return 0;
  const n = utf8Length(s);
  return tagSize + varintSize(n) + n;
}

export function writeStringField(buf: Buffer, pos: number, tag: number, s: string): number {
  if (s.length === 0) return pos;
  buf[pos++] = tag;
  const n = utf8Length(s);
  pos = writeVarint(buf, pos, n);
  return writeUtf8(buf, pos, s, n);
}

export function varintFieldSize(tagSize: number, v: number): number {
  return v === 0 ? 0 : tagSize + varintSize(v);
}

export function writeVarintField(buf: Buffer, pos: number, tag: number, v: number): number {
  if (v === 0) return pos;
  buf[pos++] = tag;
  return writeVarint(buf, pos, v);
}

export function readString(c: Cursor): string {
  const stop = readLength(c);
  const s = decodeUtf8(c.buf, c.pos, stop);
  c.pos = stop;
  return s;
}

// Buffer's slice methods without toString's argument handling; present on every Node Buffer
// though not in @types/node.
type SlicingBuffer = Buffer & { latin1Slice(start: number, end: number): string; utf8Slice(start: number, end: number): string };

/** Short ASCII strings take the latin1 path, which skips UTF-8 validation. */
export function decodeUtf8(b: Buffer, start: number, end: number): string {
  const buf = b as SlicingBuffer;
  if (end - start <= 64) {
    let ascii = true;
    for (let i = start; i < end; i++) {
      if (buf[i]! >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return buf.latin1Slice(start, end);
  }
  return buf.utf8Slice(start, end);
}

/** True when buf[start, end) holds exactly the bytes of `want`. */
export function bytesEqualAt(buf: Uint8Array, start: number, end: number, want: Uint8Array): boolean {
  if (end - start !== want.length) return false;
  for (let i = 0; i < want.length; i++) if (buf[start + i] !== want[i]) return false;
  return true;
}

export function tag(field: number, wireType: number): number {
  return (field << 3) | wireType;
}
