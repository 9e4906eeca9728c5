import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { FrameError, FrameParser } from '../transport/frame-parser.js';
import { Status } from '../transport/grpc-status.js';

function frame(msg: Uint8Array, flag = 0): Buffer {
  const out = Buffer.alloc(5 + msg.length);
  out[0] = flag;
  out.writeUInt32BE(msg.length, 1);
  out.set(msg, 5);
  return out;
}

interface Delivery {
  buf: Buffer;
  start: number;
  end: number;
  /** Copy taken at delivery time. */
  bytes: Buffer;
}

function collector(max = 1 << 20): { parser: FrameParser; got: Delivery[] } {
  const got: Delivery[] = [];
  const parser = new FrameParser(max, (buf, start, end) => {
    expect(start).toBeGreaterThanOrEqual(0);
    expect(end).toBeGreaterThanOrEqual(start);
    expect(end).toBeLessThanOrEqual(buf.length);
    got.push({ buf, start, end, bytes: Buffer.from(buf.subarray(start, end)) });
  });
  return { parser, got };
}

function catchFrameError(f: () => void): FrameError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(FrameError);
    return e as FrameError;
  }
  throw new Error('expected a FrameError');
}

const m1 = Buffer.from('hello');
const m2 = Buffer.from('second message, a bit longer');
const m3 = Buffer.from([0, 1, 2, 3, 255]);

describe('FrameParser', () => {
  it('hands out a message that is whole in its chunk as offsets into that chunk (no copy)', () => {
    const { parser, got } = collector();
    const chunk = frame(m1);
    parser.push(chunk);
    expect(got).toHaveLength(1);
    expect(got[0]!.buf).toBe(chunk);
    expect(got[0]!.start).toBe(5);
    expect(got[0]!.end).toBe(5 + m1.length);
    expect(got[0]!.bytes).toEqual(m1);
    expect(parser.idle).toBe(true);
  });

  it('delivers several messages in one chunk, each as offsets into it', () => {
    const { parser, got } = collector();
    const chunk = Buffer.concat([frame(m1), frame(m2), frame(Buffer.alloc(0)), frame(m3)]);
    parser.push(chunk);
    expect(got.map((d) => d.bytes)).toEqual([m1, m2, Buffer.alloc(0), m3]);
    for (const d of got) expect(d.buf).toBe(chunk);
    expect(got.map((d) => [d.start, d.end])).toEqual([
      [5, 5 + m1.length],
      [10 + m1.length, 10 + m1.length + m2.length],
      [15 + m1.length + m2.length, 15 + m1.length + m2.length],
      [20 + m1.length + m2.length, 20 + m1.length + m2.length + m3.length],
    ]);
    expect(parser.idle).toBe(true);
  });

  it('reassembles a message delivered one byte at a time', () => {
    const { parser, got } = collector();
    const bytes = Buffer.concat([frame(m2), frame(m1)]);
    for (let i = 0; i < bytes.length; i++) {
      parser.push(bytes.subarray(i, i + 1));
      const complete = i === 5 + m2.length - 1 || i === bytes.length - 1;
      expect(parser.idle, `after byte ${i}`).toBe(complete);
    }
    expect(got.map((d) => d.bytes)).toEqual([m2, m1]);
  });

  it('handles a header split across chunks', () => {
    for (let split = 1; split < 5; split++) {
      const { parser, got } = collector();
      const bytes = frame(m2);
      parser.push(bytes.subarray(0, split));
      expect(got).toHaveLength(0);
      expect(parser.idle).toBe(false);
      parser.push(bytes.subarray(split));
      expect(got.map((d) => d.bytes), `split ${split}`).toEqual([m2]);
      expect(parser.idle).toBe(true);
    }
  });

  it('handles a body split across chunks, followed by a whole message in the same chunk', () => {
    const { parser, got } = collector();
    const bytes = Buffer.concat([frame(m2), frame(m1)]);
    const cut = 5 + 10;
    parser.push(bytes.subarray(0, cut));
    expect(got).toHaveLength(0);
    expect(parser.idle).toBe(false);
    const rest = bytes.subarray(cut);
    parser.push(rest);
    expect(got.map((d) => d.bytes)).toEqual([m2, m1]);
    // The reassembled one is its own buffer, the second is a view into the last chunk.
    expect(got[0]!.buf).not.toBe(rest);
    expect(got[0]!.start).toBe(0);
    expect(got[0]!.end).toBe(m2.length);
    expect(got[1]!.buf).toBe(rest);
    expect(parser.idle).toBe(true);
  });

  it('a reassembled message is not overwritten by later chunks', () => {
    const { parser, got } = collector();
    const bytes = Buffer.concat([frame(m2), frame(m2)]);
    parser.push(bytes.subarray(0, 8));
    parser.push(bytes.subarray(8, 5 + m2.length + 3));
    parser.push(bytes.subarray(5 + m2.length + 3));
    expect(got).toHaveLength(2);
    expect(got[0]!.buf.subarray(got[0]!.start, got[0]!.end)).toEqual(m2);
    expect(got[1]!.buf.subarray(got[1]!.start, got[1]!.end)).toEqual(m2);
  });

  it('delivers zero-length messages, whole or with a split header', () => {
    const { parser, got } = collector();
    parser.push(frame(Buffer.alloc(0)));
    expect(got).toHaveLength(1);
    expect(got[0]!.end - got[0]!.start).toBe(0);
    const empty = frame(Buffer.alloc(0));
    parser.push(empty.subarray(0, 2));
    expect(parser.idle).toBe(false);
    expect(got).toHaveLength(1);
    parser.push(empty.subarray(2));
    expect(got).toHaveLength(2);
    expect(got[1]!.end - got[1]!.start).toBe(0);
    expect(parser.idle).toBe(true);
  });

  it('an empty chunk changes nothing', () => {
    const { parser, got } = collector();
    parser.push(Buffer.alloc(0));
    expect(parser.idle).toBe(true);
    parser.push(frame(m1).subarray(0, 3));
    parser.push(Buffer.alloc(0));
    expect(parser.idle).toBe(false);
    parser.push(frame(m1).subarray(3));
    expect(got.map((d) => d.bytes)).toEqual([m1]);
  });

  it('idle is true only between messages', () => {
    const { parser } = collector();
    expect(parser.idle).toBe(true);
    const bytes = frame(m1);
    parser.push(bytes.subarray(0, 1)); // partial header
    expect(parser.idle).toBe(false);
    parser.push(bytes.subarray(1, 5)); // header complete, body pending
    expect(parser.idle).toBe(false);
    parser.push(bytes.subarray(5, 7)); // partial body
    expect(parser.idle).toBe(false);
    parser.push(bytes.subarray(7));
    expect(parser.idle).toBe(true);
  });

  it('rejects a compressed message with UNIMPLEMENTED', () => {
    const { parser, got } = collector();
    const e = catchFrameError(() => parser.push(frame(m1, 1)));
    expect(e.code).toBe(Status.UNIMPLEMENTED);
    expect(e.code).toBe(12);
    expect(e.name).toBe('FrameError');
    expect(e.message).toMatch(/compressed/);
    expect(got).toHaveLength(0);
  });

  it('rejects a compressed flag in a split header too', () => {
    const { parser } = collector();
    const bytes = frame(m1, 1);
    parser.push(bytes.subarray(0, 3));
    expect(catchFrameError(() => parser.push(bytes.subarray(3))).code).toBe(Status.UNIMPLEMENTED);
  });

  it('rejects an invalid flag with INVALID_ARGUMENT', () => {
    for (const flag of [7, 2, 0x80, 0xff]) {
      const { parser, got } = collector();
      const e = catchFrameError(() => parser.push(frame(m1, flag)));
      expect(e.code, `flag ${flag}`).toBe(Status.INVALID_ARGUMENT);
      expect(e.message).toContain(`flag ${flag}`);
      expect(got).toHaveLength(0);
    }
    expect(Status.INVALID_ARGUMENT).toBe(3);
  });

  it('rejects an invalid flag after a good message in the same chunk, having delivered the good one', () => {
    const { parser, got } = collector();
    const e = catchFrameError(() => parser.push(Buffer.concat([frame(m1), frame(m2, 7)])));
    expect(e.code).toBe(Status.INVALID_ARGUMENT);
    expect(got.map((d) => d.bytes)).toEqual([m1]);
  });

  it('rejects an oversize message with RESOURCE_EXHAUSTED as soon as its header is in', () => {
    const { parser, got } = collector(10);
    // Exactly the limit is fine.
    parser.push(frame(Buffer.alloc(10, 1)));
    expect(got).toHaveLength(1);
    const e = catchFrameError(() => parser.push(frame(Buffer.alloc(11, 1))));
    expect(e.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(e.code).toBe(8);
    expect(e.message).toMatch(/11 bytes/);

    // A huge length prefix is rejected from the header alone (no body, no allocation).
    const huge = collector(4 * 1024 * 1024);
    const header = Buffer.from([0, 0xff, 0xff, 0xff, 0xff]);
    expect(catchFrameError(() => huge.parser.push(header)).code).toBe(Status.RESOURCE_EXHAUSTED);
    const split = collector(4 * 1024 * 1024);
    split.parser.push(header.subarray(0, 2));
    expect(catchFrameError(() => split.parser.push(header.subarray(2))).code).toBe(Status.RESOURCE_EXHAUSTED);
  });

  it('property: any split of framed random messages yields exactly those messages', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (messages, cutSeeds) => {
          const stream = Buffer.concat(messages.map((m) => frame(m)));
          const cuts = [...new Set(cutSeeds.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
          const bounds = [0, ...cuts, stream.length];
          const { parser, got } = collector(300);
          for (let i = 0; i + 1 < bounds.length; i++) {
            // Copy each chunk so no delivery can alias the original stream.
            parser.push(Buffer.from(stream.subarray(bounds[i], bounds[i + 1])));
          }
          expect(got.map((d) => d.bytes)).toEqual(messages.map((m) => Buffer.from(m)));
          // Views handed out earlier must still hold their message at the end.
          expect(got.map((d) => Buffer.from(d.buf.subarray(d.start, d.end)))).toEqual(messages.map((m) => Buffer.from(m)));
          expect(parser.idle).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('property: a stream cut before its end leaves the parser not idle, and delivers only complete messages', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 50 }), { minLength: 1, maxLength: 6 }), fc.nat(), (messages, seed) => {
        const frames = messages.map((m) => frame(m));
        const stream = Buffer.concat(frames);
        const cut = seed % stream.length; // strictly before the end
        const { parser, got } = collector();
        parser.push(stream.subarray(0, cut));
        // Messages whose frame ends at or before the cut are delivered, nothing else.
        let end = 0;
        let complete = 0;
        for (const f of frames) {
          end += f.length;
          if (end <= cut) complete++;
        }
        expect(got).toHaveLength(complete);
        const atBoundary = frames.slice(0, complete).reduce((n, f) => n + f.length, 0) === cut;
        expect(parser.idle).toBe(atBoundary);
      }),
      { numRuns: 500 },
    );
  });
});
