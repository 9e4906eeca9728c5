import { describe, it, expect } from 'vitest';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import protobuf from 'protobufjs';
import {
  DecodeError,
  ErrorCode,
  Kind,
  LinkKind,
  RouteView,
  decodeMessage,
  encodeMessage,
  formatName,
  messageSize,
  nameProblem,
  parseName,
  scanMessage,
  writeMessage,
  type Header,
  type Message,
  type Name,
} from '../proto/dataplane.js';
import { readVarint, varintSize } from '../proto/wire.js';
import { fixed32Field, key, lenField, varint, varintField } from './support/wire-bytes.js';

// ---------------------------------------------------------------------------------------------
// Helpers

const PROTO_PATH = fileURLToPath(new URL('../proto/dataplane.proto', import.meta.url));
const root = protobuf.loadSync(PROTO_PATH);
const PbMessage = root.lookupType('slim.dataplane.v1.Message');

const fixed64Field = (field: number): number[] => [...key(field, 1), 1, 2, 3, 4, 5, 6, 7, 8];

const nm = (org: string, namespace: string, service: string, instance = ''): Name => ({
  org,
  namespace,
  service,
  instance,
});

/** What decodeMessage is expected to return for `m`: payloads as Buffers, empty metadata dropped. */
function normalize(m: Message): unknown {
  const out: Record<string, unknown> = { ...m };
  if (m.kind === 'publish') out.publish = { ...m.publish, payload: Buffer.from(m.publish.payload) };
  if (!m.metadata || Object.keys(m.metadata).length === 0) delete out.metadata;
  else out.metadata = { ...m.metadata };
  return out;
}

function roundTrip(m: Message): Message {
  const buf = encodeMessage(m);
  expect(buf.length).toBe(messageSize(m));
  return decodeMessage(buf);
}

/** Decoded Message with payload turned into a Buffer so Buffer/Uint8Array views compare equal. */
function comparable(m: Message): unknown {
  return normalize(m);
}

// Conversion between our objects and protobufjs plain objects (protobufjs camel-cases field names).
function toPbjs(m: Message): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (m.kind !== 'none') o[m.kind] = (m as Record<string, unknown>)[m.kind];
  if (m.metadata) o.metadata = m.metadata;
  return o;
}

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function nameFromPbjs(o: Obj | null | undefined): Name | undefined {
  return o ? nm(o.org, o.namespace, o.service, o.instance) : undefined;
}

function fromPbjs(o: Obj): Message {
  let m: Message;
  switch (o.kind as string | undefined) {
    case 'subscribe':
    case 'unsubscribe': {
      const s = o[o.kind] as Obj;
      const body = { name: nameFromPbjs(s.name), subscriptionId: s.subscriptionId as number };
      m = o.kind === 'subscribe' ? { kind: 'subscribe', subscribe: body } : { kind: 'unsubscribe', unsubscribe: body };
      break;
    }
    case 'publish': {
      const p = o.publish as Obj;
      const h = p.header as Obj | null;
      const header: Header | undefined = h
        ? {
            source: nameFromPbjs(h.source),
            destination: nameFromPbjs(h.destination),
            identity: h.identity,
            fanout: h.fanout,
            ttl: h.ttl,
            messageId: h.messageId,
          }
        : undefined;
      m = { kind: 'publish', publish: { header, payload: Buffer.from(p.payload), contentType: p.contentType } };
      break;
    }
    case 'link': {
      const l = o.link as Obj;
      m = {
        kind: 'link',
        link: {
          linkId: l.linkId,
          nodeId: l.nodeId,
          group: l.group,
          kind: l.kind,
          app: nameFromPbjs(l.app),
          protocolVersion: l.protocolVersion,
        },
      };
      break;
    }
    case 'subscriptionAck': {
      const a = o.subscriptionAck as Obj;
      m = { kind: 'subscriptionAck', subscriptionAck: { subscriptionId: a.subscriptionId, success: a.success, error: a.error } };
      break;
    }
    case 'error': {
      const e = o.error as Obj;
      m = {
        kind: 'error',
        error: { messageId: e.messageId, code: e.code, reason: e.reason, destination: nameFromPbjs(e.destination) },
      };
      break;
    }
    default:
      m = { kind: 'none' };
  }
  const md = o.metadata as Record<string, string> | undefined;
  if (md && Object.keys(md).length > 0) m.metadata = { ...md };
  return m;
}

function pbjsDecode(buf: Uint8Array): Message {
  const decoded = PbMessage.decode(buf);
  const obj = PbMessage.toObject(decoded, { longs: Number, enums: Number, defaults: true, oneofs: true });
  return fromPbjs(obj);
}

function pbjsEncode(m: Message): Buffer {
  const err = PbMessage.verify(toPbjs(m));
  expect(err).toBeNull();
  return Buffer.from(PbMessage.encode(PbMessage.fromObject(toPbjs(m))).finish());
}

// ---------------------------------------------------------------------------------------------
// Fixtures: one of every kind

const bigPayload = Buffer.alloc(70000);
for (let i = 0; i < bigPayload.length; i++) bigPayload[i] = (i * 31 + 7) & 0xff;

const fullHeader: Header = {
  source: nm('acme', 'prod', 'sender', 'pod-1'),
  destination: nm('acme', 'prod', 'receiver'),
  identity: 'spiffe://cluster-a.example/ns/prod/sa/sender',
  fanout: 3,
  ttl: 7,
  messageId: 2 ** 40 + 5,
};

const samples: Record<string, Message> = {
  subscribe: { kind: 'subscribe', subscribe: { name: nm('acme', 'prod', 'svc', 'i-1'), subscriptionId: 42 } },
  subscribeNoId: { kind: 'subscribe', subscribe: { name: nm('acme', 'prod', 'svc'), subscriptionId: 0 } },
  unsubscribe: { kind: 'unsubscribe', unsubscribe: { name: nm('a', 'b', 'c'), subscriptionId: 2 ** 33 } },
  publish: {
    kind: 'publish',
    publish: { header: fullHeader, payload: Buffer.from('hello world'), contentType: 'text/plain' },
  },
  publishBig: {
    kind: 'publish',
    publish: {
      header: { ...fullHeader, messageId: Number.MAX_SAFE_INTEGER, fanout: 2 ** 32 - 1, ttl: 2 ** 32 - 1 },
      payload: bigPayload,
      contentType: 'application/octet-stream',
    },
  },
  publishUnicode: {
    kind: 'publish',
    publish: {
      header: {
        source: nm('ünï', 'çødé', '服务', '😀'),
        destination: nm('org', 'ns', 'svc', 'inst'),
        identity: 'spiffe://例え.jp/🦀',
        fanout: 0,
        ttl: 0,
        messageId: 0,
      },
      payload: new Uint8Array(0),
      contentType: 'text/plain; charset=utf-8; ☃',
    },
  },
  publishNoHeader: { kind: 'publish', publish: { payload: new Uint8Array([0, 1, 2, 255]), contentType: '' } },
  link: {
    kind: 'link',
    link: {
      linkId: 'link-1',
      nodeId: '',
      group: '',
      kind: LinkKind.App,
      app: nm('acme', 'prod', 'app', 'x'),
      protocolVersion: 1,
    },
  },
  linkPeer: {
    kind: 'link',
    link: { linkId: 'l2', nodeId: 'node-7', group: 'cluster-b', kind: LinkKind.RemoteGroup, protocolVersion: 1 },
  },
  ackOk: { kind: 'subscriptionAck', subscriptionAck: { subscriptionId: 99, success: true, error: '' } },
  ackFail: {
    kind: 'subscriptionAck',
    subscriptionAck: { subscriptionId: 2 ** 40, success: false, error: 'not allowed: ✗' },
  },
  error: {
    kind: 'error',
    error: { messageId: 2 ** 40, code: ErrorCode.NoRoute, reason: 'no route to acme/prod/x', destination: nm('acme', 'prod', 'x') },
  },
  errorQueue: { kind: 'error', error: { messageId: 1, code: ErrorCode.QueueFull, reason: '' } },
  metadataOnly: { kind: 'none', metadata: { a: '1', 'ключ': 'значение', empty: '' } },
  publishWithMetadata: {
    kind: 'publish',
    publish: { header: { identity: '', fanout: 0, ttl: 1, messageId: 1 }, payload: Buffer.from([9]), contentType: '' },
    metadata: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', '': 'empty key' },
  },
  none: { kind: 'none' },
};

// ---------------------------------------------------------------------------------------------

describe('encodeMessage / decodeMessage round trip', () => {
  for (const [name, m] of Object.entries(samples)) {
    it(`round-trips ${name}`, () => {
      expect(comparable(roundTrip(m))).toEqual(normalize(m));
    });
  }

  it('encodes a publish byte-exactly as the proto3 spec says', () => {
    const m: Message = {
      kind: 'publish',
      publish: {
        header: { destination: nm('o', 'n', 's'), identity: 'id', fanout: 2, ttl: 300, messageId: 2 ** 40 },
        payload: Buffer.from('hi'),
        contentType: 'c',
      },
    };
    const dest = [...lenField(1, 'o'), ...lenField(2, 'n'), ...lenField(3, 's')];
    const header = [
      ...lenField(2, dest),
      ...lenField(3, 'id'),
      ...varintField(4, 2),
      ...varintField(5, 300),
      ...varintField(6, 2 ** 40),
    ];
    const expected = lenField(3, [...lenField(1, header), ...lenField(2, 'hi'), ...lenField(3, 'c')]);
    expect([...encodeMessage(m)]).toEqual(expected);
  });

  it('omits proto3 default values', () => {
    const m: Message = { kind: 'subscriptionAck', subscriptionAck: { subscriptionId: 0, success: false, error: '' } };
    expect([...encodeMessage(m)]).toEqual([...key(5, 2), 0]);
    expect(encodeMessage({ kind: 'none' }).length).toBe(0);
  });

  it('keeps metadata keys that collide with Object.prototype members, including "__proto__"', () => {
    const md: Record<string, string> = { constructor: 'c', toString: 't', hasOwnProperty: 'h' };
    Object.defineProperty(md, '__proto__', { value: 'p', enumerable: true, writable: true, configurable: true });
    const m: Message = { kind: 'none', metadata: md };
    const buf = encodeMessage(m);
    // Hand-check that the entry is on the wire.
    expect(buf.includes(Buffer.from([...lenField(1, '__proto__'), ...lenField(2, 'p')]))).toBe(true);
    const d = decodeMessage(buf);
    expect(Object.keys(d.metadata!).sort()).toEqual(['__proto__', 'constructor', 'hasOwnProperty', 'toString']);
    expect(Object.getOwnPropertyDescriptor(d.metadata, '__proto__')?.value).toBe('p');
    expect(Object.getPrototypeOf(d.metadata)).toBe(Object.prototype);
    expect(d.metadata!.constructor).toBe('c');
    expect(d).toEqual(m);
  });

  it('a repeated metadata key keeps the last value', () => {
    const entry = (k: string, v: string) => lenField(15, [...lenField(1, k), ...lenField(2, v)]);
    const buf = Buffer.from([...entry('k', 'first'), ...entry('k', 'second'), ...entry('__proto__', 'a'), ...entry('__proto__', 'b')]);
    const d = decodeMessage(buf);
    expect(d.metadata!.k).toBe('second');
    expect(Object.getOwnPropertyDescriptor(d.metadata, '__proto__')?.value).toBe('b');
  });

  it('sizes and writes varints exactly at every 7-bit boundary up to 2^53', () => {
    const values = [0, 1, 2 ** 53 - 1, Number.MAX_SAFE_INTEGER];
    for (let bits = 7; bits <= 53; bits += 7) values.push(2 ** bits - 1, 2 ** bits, 2 ** bits + 1);
    for (let bits = 0; bits <= 53; bits++) values.push(2 ** bits);
    for (const v of values) {
      expect(varintSize(v), `varintSize(${v})`).toBe(varint(v).length);
      const m: Message = { kind: 'subscribe', subscribe: { subscriptionId: v } };
      const buf = encodeMessage(m);
      const expected = v === 0 ? [...key(1, 2), 0] : lenField(1, varintField(2, v));
      expect([...buf], `encode ${v}`).toEqual(expected);
      expect(decodeMessage(buf), `decode ${v}`).toEqual(m);
    }
  });

  it('writeMessage writes at an offset and returns the end', () => {
    const m = samples.publish!;
    const size = messageSize(m);
    const buf = Buffer.alloc(size + 20, 0xee);
    const end = writeMessage(buf, 10, m);
    expect(end).toBe(10 + size);
    expect(buf[9]).toBe(0xee);
    expect(buf[end]).toBe(0xee);
    expect(comparable(decodeMessage(buf, 10, end))).toEqual(normalize(m));
  });

  it('decodes a message embedded in a larger buffer using start/end', () => {
    const inner = encodeMessage(samples.link!);
    const buf = Buffer.concat([Buffer.from([0xff, 0xff, 0xff]), inner, Buffer.from([0xff, 0xff])]);
    expect(decodeMessage(buf, 3, 3 + inner.length)).toEqual(samples.link);
  });

  it('publish payload is a view into the input, not a copy', () => {
    const buf = encodeMessage(samples.publish!);
    const m = decodeMessage(buf);
    if (m.kind !== 'publish') throw new Error('expected publish');
    expect(m.publish.payload.buffer).toBe(buf.buffer);
  });

  it('rejects malformed input with DecodeError', () => {
    const good = encodeMessage(samples.publish!);
    expect(() => decodeMessage(good.subarray(0, good.length - 1))).toThrow(DecodeError);
    // Known field with the wrong wire type.
    expect(() => decodeMessage(Buffer.from(varintField(3, 1)))).toThrow(DecodeError);
    // Field number 0.
    expect(() => decodeMessage(Buffer.from([0x02, 0x00]))).toThrow(DecodeError);
    // Group wire types are not supported.
    expect(() => decodeMessage(Buffer.from([...key(9, 3)]))).toThrow(DecodeError);
    // A 10-byte varint (the longest protobuf allows) is fine, an 11-byte one is not.
    expect(decodeMessage(Buffer.from([...key(9, 0), ...Array<number>(9).fill(0xff), 0x01]))).toEqual({ kind: 'none' });
    expect(() => decodeMessage(Buffer.from([...key(9, 0), ...Array<number>(10).fill(0xff), 0x01]))).toThrow(DecodeError);
    const v = new RouteView();
    expect(() => scanMessage(Buffer.from([...key(9, 0), ...Array<number>(10).fill(0xff), 0x01]), 0, 12, v)).toThrow(DecodeError);
    // Truncated fixed64.
    expect(() => decodeMessage(Buffer.from([...key(9, 1), 1, 2, 3]))).toThrow(DecodeError);
  });
});

describe('interop with protobufjs', () => {
  for (const [name, m] of Object.entries(samples)) {
    it(`protobufjs decodes our ${name}`, () => {
      expect(comparable(pbjsDecode(encodeMessage(m)))).toEqual(normalize(m));
    });
    it(`we decode protobufjs's ${name}`, () => {
      expect(comparable(decodeMessage(pbjsEncode(m)))).toEqual(normalize(m));
    });
  }

  it('protobufjs encodes explicit defaults (empty strings, zeros) and we still decode them', () => {
    const obj = {
      publish: {
        header: { identity: '', fanout: 0, ttl: 0, messageId: 0, destination: { org: '', namespace: '', service: '', instance: '' } },
        payload: Buffer.alloc(0),
        contentType: '',
      },
    };
    const bytes = Buffer.from(PbMessage.encode(PbMessage.fromObject(obj)).finish());
    // protobufjs writes the explicitly set zero values, so this is longer than our encoding.
    const m = decodeMessage(bytes);
    expect(comparable(m)).toEqual({
      kind: 'publish',
      publish: {
        header: { identity: '', fanout: 0, ttl: 0, messageId: 0, destination: nm('', '', '') },
        payload: Buffer.alloc(0),
        contentType: '',
      },
    });
  });

  it('agrees with protobufjs on random messages in both directions', () => {
    fc.assert(
      fc.property(messageArb({ pbjsSafeKeys: true }), (m) => {
        expect(comparable(pbjsDecode(encodeMessage(m)))).toEqual(normalize(m));
        expect(comparable(decodeMessage(pbjsEncode(m)))).toEqual(normalize(m));
      }),
      { numRuns: 300 },
    );
  });
});

describe('unknown fields', () => {
  const dest = [
    ...fixed32Field(7),
    ...lenField(1, 'acme'),
    ...varintField(9, 123456),
    ...lenField(2, 'prod'),
    ...lenField(12, 'junk'),
    ...lenField(3, 'svc'),
    ...fixed64Field(10),
    ...lenField(4, 'inst'),
    ...varintField(100, 1),
  ];
  const source = [...varintField(9, 5), ...lenField(1, 'src-org'), ...fixed64Field(11), ...lenField(2, 'n'), ...lenField(3, 's')];
  const header = [
    ...varintField(9, 2 ** 35),
    ...lenField(1, source),
    ...lenField(12, [1, 2, 3, 4, 5]),
    ...lenField(2, dest),
    ...fixed32Field(13),
    ...lenField(3, 'spiffe://x/y'),
    ...fixed64Field(14),
    ...varintField(4, 2),
    ...lenField(7, lenField(1, 'nested unknown message')),
    ...varintField(5, 200),
    ...varintField(6, 77),
    ...varintField(8, 0),
  ];
  const publish = [
    ...varintField(9, 1),
    ...lenField(1, header),
    ...fixed32Field(5),
    ...lenField(2, 'payload'),
    ...fixed64Field(6),
    ...lenField(3, 'ct'),
    ...lenField(12, 'more'),
  ];
  const bytes = Buffer.from([
    ...varintField(9, 300),
    ...fixed64Field(10),
    ...lenField(12, 'ignored'),
    ...lenField(3, publish),
    ...fixed32Field(11),
    ...lenField(15, [...lenField(1, 'k'), ...varintField(9, 1), ...lenField(2, 'v')]),
    ...varintField(9, 2 ** 40),
  ]);
  const expected: Message = {
    kind: 'publish',
    publish: {
      header: {
        source: nm('src-org', 'n', 's'),
        destination: nm('acme', 'prod', 'svc', 'inst'),
        identity: 'spiffe://x/y',
        fanout: 2,
        ttl: 200,
        messageId: 77,
      },
      payload: Buffer.from('payload'),
      contentType: 'ct',
    },
    metadata: { k: 'v' },
  };

  it('are skipped by decodeMessage at every level', () => {
    expect(comparable(decodeMessage(bytes))).toEqual(normalize(expected));
  });

  it('are skipped by protobufjs too (sanity check of the fixture)', () => {
    expect(comparable(pbjsDecode(bytes))).toEqual(normalize(expected));
  });

  it('are skipped by scanMessage at every level', () => {
    const v = new RouteView();
    scanMessage(bytes, 0, bytes.length, v);
    expect(v.kind).toBe(Kind.Publish);
    expect(v.hasDestination).toBe(true);
    expect(bytes.toString('utf8', v.orgStart, v.orgEnd)).toBe('acme');
    expect(bytes.toString('utf8', v.nsStart, v.nsEnd)).toBe('prod');
    expect(bytes.toString('utf8', v.svcStart, v.svcEnd)).toBe('svc');
    expect(bytes.toString('utf8', v.instStart, v.instEnd)).toBe('inst');
    expect(bytes.toString('utf8', v.identityStart, v.identityEnd)).toBe('spiffe://x/y');
    expect(v.fanout).toBe(2);
    expect(v.ttl).toBe(200);
    expect(v.ttlLen).toBe(2);
    expect(readVarint({ buf: bytes, pos: v.ttlPos, end: bytes.length })).toBe(200);
    expect(v.messageId).toBe(77);
  });

  it('unknown fields in non-publish kinds are ignored', () => {
    const sub = Buffer.from([
      ...fixed32Field(20),
      ...lenField(1, [...varintField(7, 1), ...lenField(1, lenField(1, 'o')), ...fixed64Field(3), ...varintField(2, 5)]),
    ]);
    expect(decodeMessage(sub)).toEqual({ kind: 'subscribe', subscribe: { name: nm('o', '', ''), subscriptionId: 5 } });
    const v = new RouteView();
    scanMessage(sub, 0, sub.length, v);
    expect(v.kind).toBe(Kind.Subscribe);
  });
});

describe('scanMessage', () => {
  function scan(buf: Buffer, start = 0, end = buf.length): RouteView {
    const v = new RouteView();
    scanMessage(buf, start, end, v);
    return v;
  }

  it('finds the routing fields of a publish', () => {
    const buf = encodeMessage(samples.publish!);
    const v = scan(buf);
    expect(v.kind).toBe(Kind.Publish);
    expect(v.hasDestination).toBe(true);
    expect(buf.toString('utf8', v.orgStart, v.orgEnd)).toBe('acme');
    expect(buf.toString('utf8', v.nsStart, v.nsEnd)).toBe('prod');
    expect(buf.toString('utf8', v.svcStart, v.svcEnd)).toBe('receiver');
    // No instance on the destination (the source has one, it must not leak in).
    expect(v.instEnd - v.instStart).toBe(0);
    expect(buf.toString('utf8', v.identityStart, v.identityEnd)).toBe(fullHeader.identity);
    expect(v.fanout).toBe(3);
    expect(v.ttl).toBe(7);
    expect(v.ttlLen).toBe(1);
    expect(buf[v.ttlPos]).toBe(7);
    expect(buf[v.ttlPos - 1]).toBe(5 << 3); // the ttl tag precedes it
    expect(v.messageId).toBe(2 ** 40 + 5);
  });

  it('reports an instance, unicode components and multi-byte ttl', () => {
    const m: Message = {
      kind: 'publish',
      publish: {
        header: { destination: nm('örg', '名前', 'sérvice', 'ínst-1'), identity: '', fanout: 0, ttl: 2 ** 20, messageId: 2 ** 32 },
        payload: bigPayload,
        contentType: 'x',
      },
    };
    const buf = encodeMessage(m);
    const v = scan(buf);
    expect(buf.toString('utf8', v.orgStart, v.orgEnd)).toBe('örg');
    expect(buf.toString('utf8', v.nsStart, v.nsEnd)).toBe('名前');
    expect(buf.toString('utf8', v.svcStart, v.svcEnd)).toBe('sérvice');
    expect(buf.toString('utf8', v.instStart, v.instEnd)).toBe('ínst-1');
    expect(v.identityEnd - v.identityStart).toBe(0);
    expect(v.fanout).toBe(0);
    expect(v.ttl).toBe(2 ** 20);
    expect(v.ttlLen).toBe(varintSize(2 ** 20));
    expect(v.messageId).toBe(2 ** 32);
  });

  it('the ttl can be patched in place at ttlPos', () => {
    const buf = encodeMessage(samples.publish!);
    const v = scan(buf);
    buf[v.ttlPos] = 6; // same varint length
    const m = decodeMessage(buf);
    if (m.kind !== 'publish') throw new Error('expected publish');
    expect(m.publish.header!.ttl).toBe(6);
  });

  it('absent ttl gives ttlPos -1', () => {
    const m: Message = {
      kind: 'publish',
      publish: { header: { destination: nm('a', 'b', 'c'), identity: '', fanout: 0, ttl: 0, messageId: 0 }, payload: Buffer.from('x'), contentType: '' },
    };
    const v = scan(encodeMessage(m));
    expect(v.kind).toBe(Kind.Publish);
    expect(v.ttlPos).toBe(-1);
    expect(v.ttl).toBe(0);
    expect(v.ttlLen).toBe(0);
    expect(v.hasDestination).toBe(true);
  });

  it('a publish without header has no destination', () => {
    const v = scan(encodeMessage(samples.publishNoHeader!));
    expect(v.kind).toBe(Kind.Publish);
    expect(v.hasDestination).toBe(false);
    expect(v.ttlPos).toBe(-1);
  });

  it('scans a message inside a larger buffer with offsets relative to that buffer', () => {
    const inner = encodeMessage(samples.publish!);
    const buf = Buffer.concat([Buffer.alloc(17, 0xff), inner, Buffer.alloc(9, 0xff)]);
    const v = scan(buf, 17, 17 + inner.length);
    expect(v.orgStart).toBeGreaterThanOrEqual(17);
    expect(buf.toString('utf8', v.orgStart, v.orgEnd)).toBe('acme');
    expect(buf.toString('utf8', v.svcStart, v.svcEnd)).toBe('receiver');
    expect(buf[v.ttlPos]).toBe(7);
  });

  it('reports only the kind of non-publish messages', () => {
    const cases: [string, Kind][] = [
      ['subscribe', Kind.Subscribe],
      ['unsubscribe', Kind.Unsubscribe],
      ['link', Kind.Link],
      ['ackOk', Kind.SubscriptionAck],
      ['ackFail', Kind.SubscriptionAck],
      ['error', Kind.Error],
      ['metadataOnly', Kind.None],
      ['none', Kind.None],
    ];
    const v = new RouteView();
    for (const [name, kind] of cases) {
      // Scan a publish first: the view is reused and must be reset.
      const pub = encodeMessage(samples.publish!);
      scanMessage(pub, 0, pub.length, v);
      expect(v.kind).toBe(Kind.Publish);
      const buf = encodeMessage(samples[name]!);
      scanMessage(buf, 0, buf.length, v);
      expect(v.kind, name).toBe(kind);
      expect(v.hasDestination, name).toBe(false);
      expect(v.ttlPos, name).toBe(-1);
      expect(v.ttl, name).toBe(0);
      expect(v.fanout, name).toBe(0);
      expect(v.messageId, name).toBe(0);
      expect(v.orgEnd - v.orgStart, name).toBe(0);
      expect(v.identityEnd - v.identityStart, name).toBe(0);
    }
  });

  it('rejects a nested field whose last varint runs past the nested length, at every level', () => {
    // A varint in an unknown field that starts inside the nested message and ends after it: the
    // bytes as a whole parse, so only the length bookkeeping can catch it.
    const overrun = [...key(9, 0), 0x80]; // continuation bit set, completed by the next byte
    const dest = [...lenField(1, 'o'), ...lenField(3, 's')];
    const cases: Record<string, number[]> = {
      name: lenField(3, lenField(1, [...lenField(2, [...dest, ...overrun]), 0x01, ...lenField(3, 'id')])),
      header: lenField(3, [...lenField(1, [...lenField(2, dest), ...overrun]), 0x01, ...lenField(3, 'ct')]),
      publish: [...lenField(3, [...lenField(1, lenField(2, dest)), ...overrun]), 0x01],
    };
    for (const [level, bytes] of Object.entries(cases)) {
      const buf = Buffer.from(bytes);
      expect(() => decodeMessage(buf), level).toThrow(DecodeError);
      expect(() => scan(buf), level).toThrow(DecodeError);
    }
    // The first key inside the publish written as a 2-byte varint that straddles its end.
    const header = lenField(2, dest);
    const straddle = Buffer.from([...lenField(3, [0x8a]), 0x00, ...varint(header.length), ...header]);
    expect(() => decodeMessage(straddle)).toThrow(DecodeError);
    expect(() => scan(straddle)).toThrow(DecodeError);
    // The same fixtures without the overrun are fine.
    const ok = Buffer.from(lenField(3, lenField(1, [...lenField(2, [...dest, ...varintField(9, 1)]), ...lenField(3, 'id')])));
    expect(scan(ok).hasDestination).toBe(true);
    expect(decodeMessage(ok).kind).toBe('publish');
  });

  it('throws DecodeError on truncated publish', () => {
    const buf = encodeMessage(samples.publish!);
    for (let cut = 1; cut < buf.length; cut++) {
      expect(() => scan(buf, 0, cut), `cut at ${cut}`).toThrow(DecodeError);
    }
  });

  it('agrees with decodeMessage on random publishes', () => {
    fc.assert(
      fc.property(publishArb, (m) => {
        const buf = encodeMessage(m);
        const v = scan(buf);
        const h = m.publish.header;
        expect(v.kind).toBe(Kind.Publish);
        expect(v.hasDestination).toBe(h?.destination !== undefined);
        const d = h?.destination ?? nm('', '', '');
        expect(buf.toString('utf8', v.orgStart, v.orgEnd)).toBe(d.org);
        expect(buf.toString('utf8', v.nsStart, v.nsEnd)).toBe(d.namespace);
        expect(buf.toString('utf8', v.svcStart, v.svcEnd)).toBe(d.service);
        expect(buf.toString('utf8', v.instStart, v.instEnd)).toBe(d.instance);
        expect(buf.toString('utf8', v.identityStart, v.identityEnd)).toBe(h?.identity ?? '');
        expect(v.fanout).toBe(h?.fanout ?? 0);
        expect(v.ttl).toBe(h?.ttl ?? 0);
        expect(v.messageId).toBe(h?.messageId ?? 0);
        if (h && h.ttl !== 0) {
          expect(v.ttlLen).toBe(varintSize(h.ttl));
          expect(readVarint({ buf, pos: v.ttlPos, end: buf.length })).toBe(h.ttl);
        } else expect(v.ttlPos).toBe(-1);
      }),
      { numRuns: 300 },
    );
  });
});

describe('names', () => {
  it('parses names with and without instance', () => {
    expect(parseName('acme/prod/svc')).toEqual(nm('acme', 'prod', 'svc'));
    expect(parseName('acme/prod/svc/pod-1')).toEqual(nm('acme', 'prod', 'svc', 'pod-1'));
    expect(parseName('a.b_c~d/n:1@x/s+e=f-g/i')).toEqual(nm('a.b_c~d', 'n:1@x', 's+e=f-g', 'i'));
  });

  it('rejects the wrong number of parts', () => {
    expect(() => parseName('acme/prod')).toThrow(/must be org\/namespace\/service/);
    expect(() => parseName('acme')).toThrow();
    expect(() => parseName('a/b/c/d/e')).toThrow(/must be org\/namespace\/service/);
  });

  it('rejects empty components', () => {
    expect(() => parseName('/prod/svc')).toThrow(/org is empty/);
    expect(() => parseName('acme//svc')).toThrow(/namespace is empty/);
    expect(() => parseName('acme/prod/')).toThrow(/service is empty/);
    expect(() => parseName('acme/prod/svc/')).toThrow(/empty instance/);
    expect(() => parseName('')).toThrow();
  });

  it('rejects bad characters', () => {
    for (const bad of ['ac me/prod/svc', 'acme/pr#od/svc', 'acme/prod/sv?c', 'acme/prod/svc/in st', 'acme/prød/svc', 'acme/prod/svc/*']) {
      expect(() => parseName(bad), bad).toThrow(/characters outside/);
    }
  });

  it('nameProblem', () => {
    expect(nameProblem(undefined)).toBe('name is missing');
    expect(nameProblem(nm('a', 'b', 'c'))).toBeUndefined();
    expect(nameProblem(nm('a', 'b', 'c', 'd'))).toBeUndefined();
    expect(nameProblem(nm('', 'b', 'c'))).toMatch(/org is empty/);
    expect(nameProblem(nm('a', '', 'c'))).toMatch(/namespace is empty/);
    expect(nameProblem(nm('a', 'b', ''))).toMatch(/service is empty/);
    expect(nameProblem(nm('a/x', 'b', 'c'))).toMatch(/characters outside/);
    expect(nameProblem(nm('a', 'b', 'c', 'd/e'))).toMatch(/instance/);
    expect(nameProblem(nm('x'.repeat(256), 'b', 'c'))).toMatch(/longer than 255/);
    expect(nameProblem(nm('x'.repeat(255), 'b', 'c'))).toBeUndefined();
    expect(nameProblem(nm('a', 'b', 'c', 'x'.repeat(256)))).toMatch(/too long/);
  });

  it('formatName round-trips with parseName', () => {
    expect(formatName(nm('a', 'b', 'c'))).toBe('a/b/c');
    expect(formatName(nm('a', 'b', 'c', 'd'))).toBe('a/b/c/d');
    const part = fc.stringMatching(/^[A-Za-z0-9._~:@+=-]{1,20}$/);
    fc.assert(
      fc.property(part, part, part, fc.option(part, { nil: '' }), (o, n, s, i) => {
        const name = nm(o, n, s, i);
        expect(nameProblem(name)).toBeUndefined();
        const text = formatName(name);
        expect(parseName(text)).toEqual(name);
        expect(formatName(parseName(text))).toBe(text);
      }),
      { numRuns: 200 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Arbitraries

const str = fc.string({ unit: 'binary', maxLength: 24 });
const u32 = fc.integer({ min: 0, max: 2 ** 32 - 1 });
const u64 = fc.oneof(fc.integer({ min: 0, max: 2 ** 32 }), fc.maxSafeNat(), fc.constantFrom(0, 1, 127, 128, 2 ** 28, 2 ** 35, 2 ** 40, 2 ** 49, 2 ** 53 - 1));
const bytes = fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ minLength: 100, maxLength: 400 }));
const nameArb: fc.Arbitrary<Name> = fc.record({ org: str, namespace: str, service: str, instance: str });
const optName = fc.option(nameArb, { nil: undefined });
const headerArb: fc.Arbitrary<Header> = fc.record({
  source: optName,
  destination: optName,
  identity: str,
  fanout: u32,
  ttl: u32,
  messageId: u64,
});
const publishArb = fc.record({
  kind: fc.constant('publish' as const),
  publish: fc.record({ header: fc.option(headerArb, { nil: undefined }), payload: bytes, contentType: str }),
});
const subscribeBody = fc.record({ name: optName, subscriptionId: u64 });

function messageArb(opts: { pbjsSafeKeys?: boolean } = {}): fc.Arbitrary<Message> {
  const body: fc.Arbitrary<Message> = fc.oneof(
    fc.record({ kind: fc.constant('subscribe' as const), subscribe: subscribeBody }),
    fc.record({ kind: fc.constant('unsubscribe' as const), unsubscribe: subscribeBody }),
    publishArb,
    fc.record({
      kind: fc.constant('link' as const),
      link: fc.record({
        linkId: str,
        nodeId: str,
        group: str,
        kind: fc.constantFrom(LinkKind.Unspecified, LinkKind.App, LinkKind.PeerInGroup, LinkKind.RemoteGroup),
        app: optName,
        protocolVersion: u32,
      }),
    }),
    fc.record({
      kind: fc.constant('subscriptionAck' as const),
      subscriptionAck: fc.record({ subscriptionId: u64, success: fc.boolean(), error: str }),
    }),
    fc.record({
      kind: fc.constant('error' as const),
      error: fc.record({
        messageId: u64,
        code: fc.constantFrom(ErrorCode.Unspecified, ErrorCode.NoRoute, ErrorCode.InvalidMessage, ErrorCode.TtlExpired, ErrorCode.QueueFull),
        reason: str,
        destination: optName,
      }),
    }),
    fc.constant({ kind: 'none' as const }),
  );
  // protobufjs itself stores map entries with plain assignment, so it cannot represent a
  // "__proto__" key; keep those out of the cross-check only.
  const mdKey = opts.pbjsSafeKeys ? str.filter((k) => k !== '__proto__') : str;
  const metadata = fc.option(fc.dictionary(mdKey, str, { maxKeys: 5, noNullPrototype: true }), { nil: undefined });
  return fc.tuple(body, metadata).map(([b, md]) => (md === undefined ? b : { ...b, metadata: md }));
}

describe('property: random messages round-trip', () => {
  it('decodeMessage(encodeMessage(m)) equals m', () => {
    fc.assert(
      fc.property(messageArb(), (m) => {
        const buf = encodeMessage(m);
        expect(buf.length).toBe(messageSize(m));
        expect(comparable(decodeMessage(buf))).toEqual(normalize(m));
      }),
      { numRuns: 1000 },
    );
  });

  it('encoding is deterministic and re-encoding a decoded message gives the same bytes', () => {
    fc.assert(
      fc.property(messageArb(), (m) => {
        const buf = encodeMessage(m);
        expect(encodeMessage(decodeMessage(buf)).equals(buf)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});
