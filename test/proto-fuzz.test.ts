import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  DecodeError,
  Kind,
  RouteView,
  decodeMessage,
  encodeMessage,
  scanMessage,
  type Message,
} from '../proto/dataplane.js';
import { varint } from './support/wire-bytes.js';

// Every malformed input must end in a DecodeError: anything else (RangeError, TypeError, ...)
// would escape the node's per-message error handling. Hangs show up as the test timing out.

const RUNS = 2000;
const TIMEOUT_MS = 5000;

/** Runs `f`; fails the property if it throws anything but a DecodeError. Returns whether it returned. */
function onlyDecodeError(f: () => void): boolean {
  try {
    f();
    return true;
  } catch (e) {
    if (!(e instanceof DecodeError)) {
      throw new Error(`expected DecodeError, got ${(e as Error)?.name}: ${(e as Error)?.message}`, { cause: e });
    }
    expect(e.name).toBe('DecodeError');
    return false;
  }
}

const view = new RouteView();

function checkScanInvariants(v: RouteView, start: number, end: number): void {
  if (v.kind !== Kind.Publish) {
    expect(v.hasDestination).toBe(false);
    expect(v.ttlPos).toBe(-1);
    return;
  }
  for (const [a, b] of [
    [v.orgStart, v.orgEnd],
    [v.nsStart, v.nsEnd],
    [v.svcStart, v.svcEnd],
    [v.instStart, v.instEnd],
    [v.identityStart, v.identityEnd],
  ] as const) {
    if (a === 0 && b === 0) continue; // absent
    expect(a).toBeGreaterThanOrEqual(start);
    expect(b).toBeGreaterThanOrEqual(a);
    expect(b).toBeLessThanOrEqual(end);
  }
  if (v.ttlPos !== -1) {
    expect(v.ttlPos).toBeGreaterThanOrEqual(start);
    expect(v.ttlPos + v.ttlLen).toBeLessThanOrEqual(end);
    expect(v.ttlLen).toBeGreaterThanOrEqual(1);
  }
}

/** Feeds buf[start, end) to both decoders. */
function feed(buf: Buffer, start = 0, end = buf.length): void {
  onlyDecodeError(() => decodeMessage(buf, start, end));
  if (onlyDecodeError(() => scanMessage(buf, start, end, view))) checkScanInvariants(view, start, end);
}

// A valid publish to mutate: every header field present, plus metadata.
const validPublish: Message = {
  kind: 'publish',
  publish: {
    header: {
      source: { org: 'acme', namespace: 'prod', service: 'sender', instance: 'pod-1' },
      destination: { org: 'acme', namespace: 'prod', service: 'receiver', instance: 'pod-2' },
      identity: 'spiffe://cluster-a/ns/prod/sa/sender',
      fanout: 2,
      ttl: 300,
      messageId: 2 ** 40,
    },
    payload: Buffer.from('some payload bytes'),
    contentType: 'application/json',
  },
  metadata: { trace: 'abc' },
};
const validBytes = encodeMessage(validPublish);

type Mutation =
  | { op: 'set'; at: number; value: number }
  | { op: 'xor'; at: number; mask: number }
  | { op: 'insert'; at: number; value: number }
  | { op: 'delete'; at: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('xor' as const), at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat() }),
);

function mutate(base: Buffer, muts: Mutation[], truncateTo: number | undefined): Buffer {
  const bytes = [...base];
  for (const m of muts) {
    if (bytes.length === 0 && m.op !== 'insert') continue;
    const at = m.at % Math.max(1, m.op === 'insert' ? bytes.length + 1 : bytes.length);
    if (m.op === 'set') bytes[at] = m.value;
    else if (m.op === 'xor') bytes[at] = bytes[at]! ^ m.mask;
    else if (m.op === 'insert') bytes.splice(at, 0, m.value);
    else bytes.splice(at, 1);
  }
  const out = Buffer.from(bytes);
  return truncateTo === undefined ? out : out.subarray(0, truncateTo % (out.length + 1));
}

// Protobuf-shaped garbage: fields with arbitrary numbers and wire types, lengths that may lie,
// nested to a few levels, so the decoders get past their first byte more often than with noise.

const { tree } = fc.letrec<{ tree: number[]; field: number[] }>((tie) => ({
  tree: fc.array(tie('field'), { maxLength: 6 }).map((fs) => fs.flat()),
  field: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    // varint, maybe oversized
    fc
      .tuple(fc.integer({ min: 0, max: 20 }), fc.oneof(fc.nat(), fc.maxSafeNat(), fc.constant(2 ** 62)))
      .map(([f, v]) => [...varint(f * 8), ...varint(v)]),
    // length-delimited with a correct length around a nested tree
    fc.tuple(fc.integer({ min: 0, max: 20 }), tie('tree')).map(([f, body]) => [...varint(f * 8 + 2), ...varint(body.length), ...body]),
    // length-delimited with a lying length
    fc
      .tuple(fc.integer({ min: 0, max: 20 }), fc.nat({ max: 2 ** 31 }), fc.uint8Array({ maxLength: 8 }))
      .map(([f, len, body]) => [...varint(f * 8 + 2), ...varint(len), ...body]),
    // any wire type (including groups 3/4 and invalid 6/7) with a few bytes after it
    fc
      .tuple(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 7 }), fc.uint8Array({ maxLength: 9 }))
      .map(([f, w, rest]) => [...varint(f * 8 + w), ...rest]),
    // an unterminated varint
    fc.integer({ min: 1, max: 12 }).map((n) => Array<number>(n).fill(0xff)),
  ),
}));

describe('decoder robustness (fuzz)', () => {
  it(
    'random bytes: returns or throws DecodeError',
    () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 128 }), (bytes) => {
          feed(Buffer.from(bytes));
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT_MS,
  );

  it(
    'protobuf-shaped garbage: returns or throws DecodeError',
    () => {
      fc.assert(
        fc.property(tree, (bytes) => {
          feed(Buffer.from(bytes));
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT_MS,
  );

  it(
    'mutations of a valid publish: returns or throws DecodeError',
    () => {
      fc.assert(
        fc.property(fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.option(fc.nat(), { nil: undefined }), (muts, cut) => {
          feed(mutate(validBytes, muts, cut));
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT_MS,
  );

  it(
    'every truncation of a valid publish throws DecodeError from both decoders',
    () => {
      // Cutting exactly after the publish field (before the metadata entry) leaves a valid message.
      const publishEnd = encodeMessage({ ...validPublish, metadata: undefined }).length;
      expect(decodeMessage(validBytes.subarray(0, publishEnd))).toMatchObject({ kind: 'publish' });
      for (let cut = 1; cut < validBytes.length; cut++) {
        if (cut === publishEnd) continue;
        const part = validBytes.subarray(0, cut);
        expect(() => decodeMessage(part), `decode cut ${cut}`).toThrow(DecodeError);
        expect(() => scanMessage(part, 0, part.length, view), `scan cut ${cut}`).toThrow(DecodeError);
      }
    },
    TIMEOUT_MS,
  );

  it(
    'a sub-range of a larger buffer is never read outside [start, end)',
    () => {
      fc.assert(
        fc.property(
          fc.uint8Array({ maxLength: 16 }),
          fc.array(mutationArb, { maxLength: 3 }),
          fc.uint8Array({ maxLength: 16 }),
          (before, muts, after) => {
            const mid = mutate(validBytes, muts, undefined);
            const buf = Buffer.concat([before, mid, after]);
            const start = before.length;
            const end = start + mid.length;
            const decodedAlone = tryDecode(Buffer.from(mid));
            const decodedInside = tryDecode(buf, start, end);
            // The bytes around the range must not change the result.
            expect(decodedInside.ok).toBe(decodedAlone.ok);
            if (decodedAlone.ok && decodedInside.ok) {
              expect(normalizePayload(decodedInside.value)).toEqual(normalizePayload(decodedAlone.value));
            }
            feed(buf, start, end);
          },
        ),
        { numRuns: RUNS },
      );
    },
    TIMEOUT_MS,
  );

  it(
    'when both decoders accept an input they agree on its kind and routing fields',
    () => {
      const kindOf: Record<Message['kind'], Kind> = {
        none: Kind.None,
        subscribe: Kind.Subscribe,
        unsubscribe: Kind.Unsubscribe,
        publish: Kind.Publish,
        link: Kind.Link,
        subscriptionAck: Kind.SubscriptionAck,
        error: Kind.Error,
      };
      let compared = 0;
      fc.assert(
        fc.property(fc.array(mutationArb, { maxLength: 3 }), (muts) => {
          const buf = mutate(validBytes, muts, undefined);
          const d = tryDecode(buf);
          if (!d.ok || !onlyDecodeError(() => scanMessage(buf, 0, buf.length, view))) return;
          compared++;
          expect(view.kind).toBe(kindOf[d.value.kind]);
          if (d.value.kind !== 'publish') return;
          const h = d.value.publish.header;
          const dest = h?.destination;
          expect(view.hasDestination).toBe(dest !== undefined);
          expect(buf.toString('utf8', view.orgStart, view.orgEnd)).toBe(dest?.org ?? '');
          expect(buf.toString('utf8', view.svcStart, view.svcEnd)).toBe(dest?.service ?? '');
          expect(buf.toString('utf8', view.instStart, view.instEnd)).toBe(dest?.instance ?? '');
          expect(view.ttl).toBe(h?.ttl ?? 0);
          expect(view.fanout).toBe(h?.fanout ?? 0);
          expect(view.messageId).toBe(h?.messageId ?? 0);
        }),
        { numRuns: RUNS },
      );
      // Most small mutations land in strings or the payload and leave a decodable message.
      expect(compared).toBeGreaterThan(RUNS / 10);
    },
    TIMEOUT_MS,
  );

  it('a non-publish kind after a publish reports no routing fields', () => {
    const sub = encodeMessage({ kind: 'subscribe', subscribe: { subscriptionId: 1 } });
    const buf = Buffer.concat([validBytes, sub]);
    expect(decodeMessage(buf).kind).toBe('subscribe');
    scanMessage(buf, 0, buf.length, view);
    expect(view.kind).toBe(Kind.Subscribe);
    expect(view.hasDestination).toBe(false);
    expect(view.ttlPos).toBe(-1);
    expect(view.orgEnd - view.orgStart).toBe(0);
  });

  it('the unmutated publish decodes (fixture sanity)', () => {
    expect(decodeMessage(validBytes)).toMatchObject({ kind: 'publish', metadata: { trace: 'abc' } });
    scanMessage(validBytes, 0, validBytes.length, view);
    expect(view.kind).toBe(Kind.Publish);
    expect(view.ttl).toBe(300);
  });
});

function tryDecode(buf: Buffer, start = 0, end = buf.length): { ok: true; value: Message } | { ok: false } {
  try {
    return { ok: true, value: decodeMessage(buf, start, end) };
  } catch (e) {
    if (!(e instanceof DecodeError)) throw e;
    return { ok: false };
  }
}

function normalizePayload(m: Message): unknown {
  return m.kind === 'publish' ? { ...m, publish: { ...m.publish, payload: Buffer.from(m.publish.payload) } } : m;
}
