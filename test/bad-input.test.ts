// What a node does with input it must not accept: every malformed frame, message or request
// ends the offending stream with the right gRPC status and a readable grpc-message, is counted,
// and leaves the node serving everyone else (a request/reply between two healthy SDK apps on
// the same node still works afterwards). Per-message problems that are the sender's mistake
// (bad subscription name, publish without destination) are answered on the stream, which stays
// open. The node runs in this process so its stats can be read directly; the bad peers are raw
// node:http2 clients writing gRPC frames by hand.

import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { pino } from 'pino';
import { SlimApp, type ReceivedMessage } from '../client/slim-app.js';
import { parseNodeConfig } from '../node/config.js';
import { SlimNode } from '../node/node.js';
import { freePort } from '../harness/processes.js';
import {
  ErrorCode,
  LinkKind,
  OPEN_CHANNEL_PATH,
  PROTOCOL_VERSION,
  decodeMessage,
  encodeMessage,
  type Link,
  type Message,
  type Name,
} from '../proto/dataplane.js';
import { FrameParser } from '../transport/frame-parser.js';
import { Status } from '../transport/grpc-status.js';
import { eventually } from './support/local-nodes.js';
import { lenField as lenFieldBytes, varintField as varintFieldBytes } from './support/wire-bytes.js';

const MAX_MESSAGE_SIZE = 64 * 1024;

// -- raw gRPC client -------------------------------------------------------------------------------

interface EndStatus {
  /** HTTP :status of the response headers (0 when none arrived). */
  httpStatus: number;
  /** grpc-status from the trailers (or a trailers-only response); undefined when none came. */
  grpcStatus: number | undefined;
  /** grpc-message, percent-decoded. */
  grpcMessage: string;
}

function frame(body: Uint8Array, flag = 0, declaredLength = body.length): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out[0] = flag;
  out.writeUInt32BE(declaredLength, 1);
  out.set(body, 5);
  return out;
}

/** One OpenChannel stream written by hand: frames go out as given, replies are decoded. */
class RawChannel {
  readonly stream: ClientHttp2Stream;
  readonly received: Message[] = [];
  readonly ended: Promise<EndStatus>;
  endStatus: EndStatus | undefined;
  private httpStatus = 0;
  private waiters: { pred: (m: Message) => boolean; resolve: (m: Message) => void }[] = [];

  constructor(session: ClientHttp2Session, headers: Record<string, string> = {}) {
    this.stream = session.request(
      { ':method': 'POST', ':path': OPEN_CHANNEL_PATH, 'content-type': 'application/grpc', te: 'trailers', ...headers },
      { endStream: false },
    );
    const parser = new FrameParser(16 * 1024 * 1024, (buf, start, end) => {
      const m = decodeMessage(buf, start, end);
      this.received.push(m);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(m)) return true;
        w.resolve(m);
        return false;
      });
    });
    this.stream.on('data', (chunk: Buffer) => parser.push(chunk));
    this.stream.on('error', () => undefined);
    this.ended = new Promise((resolve) => {
      const finish = (h: IncomingHttpHeaders): void => {
        if (this.endStatus) return;
        const raw = h['grpc-status'];
        const msg = h['grpc-message'];
        this.endStatus = {
          httpStatus: this.httpStatus,
          grpcStatus: raw === undefined ? undefined : Number(raw),
          grpcMessage: msg === undefined ? '' : decodeURIComponent(String(msg)),
        };
        resolve(this.endStatus);
        // As a gRPC client does once it has the status: finish our side so the stream closes.
        if (!this.stream.destroyed) this.stream.end();
      };
      this.stream.on('response', (h) => {
        this.httpStatus = Number(h[':status']);
        if (h['grpc-status'] !== undefined || this.httpStatus !== 200) finish(h);
      });
      this.stream.on('trailers', (t) => finish(t));
      this.stream.on('close', () => finish({}));
    });
  }

  write(bytes: Uint8Array): void {
    this.stream.write(bytes);
  }

  send(m: Message): void {
    this.write(frame(encodeMessage(m)));
  }

  /** The first received message (already seen or future) matching `pred`. */
  waitFor(pred: (m: Message) => boolean, what: string, timeoutMs = 3000): Promise<Message> {
    const seen = this.received.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms (stream ${JSON.stringify(this.endStatus)})`)), timeoutMs);
      this.waiters.push({
        pred,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
      void this.ended.then((s) => {
        clearTimeout(timer);
        reject(new Error(`stream ended before ${what}: ${JSON.stringify(s)}`));
      });
    });
  }

  /** Resolves with the end status, failing the test if the stream does not end in time. */
  async end(timeoutMs = 3000): Promise<EndStatus> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`stream did not end within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([this.ended, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends a link negotiation and waits for the node's answer. */
  async negotiate(link: Partial<Link> = {}): Promise<void> {
    this.send({
      kind: 'link',
      link: { linkId: 'raw-link', nodeId: '', group: '', kind: LinkKind.App, app: RAW_APP, protocolVersion: PROTOCOL_VERSION, ...link },
    });
    await this.waitFor((m) => m.kind === 'link', 'link answer');
  }

  close(): void {
    if (!this.stream.destroyed) this.stream.close(http2.constants.NGHTTP2_CANCEL);
  }
}

// -- hand-written protobuf, for messages our encoder would never produce ----------------------------

const lenField = (field: number, body: Uint8Array | string): Buffer => Buffer.from(lenFieldBytes(field, body));
const varintField = (field: number, v: number): Buffer => Buffer.from(varintFieldBytes(field, v));

function nameBytes(n: Name): Buffer {
  return Buffer.concat([lenField(1, n.org), lenField(2, n.namespace), lenField(3, n.service), ...(n.instance ? [lenField(4, n.instance)] : [])]);
}

// -- fixture -----------------------------------------------------------------------------------------

const RAW_APP: Name = { org: 'org', namespace: 'ns', service: 'raw', instance: 'r1' };
const BOB: Name = { org: 'org', namespace: 'ns', service: 'bob', instance: '' };

let node: SlimNode;
let port: number;
let alice: SlimApp;
let bob: SlimApp;
/** Everything bob received that was not a request (requests are the payloads starting "ping"). */
let bobGot: ReceivedMessage[];
let bobDisconnects: string[];
let sessions: ClientHttp2Session[];
let healthChecks = 0;

function session(): ClientHttp2Session {
  const s = http2.connect(`http://127.0.0.1:${port}`);
  s.on('error', () => undefined);
  sessions.push(s);
  return s;
}

function raw(headers: Record<string, string> = {}, s: ClientHttp2Session = session()): RawChannel {
  return new RawChannel(s, headers);
}

/** Two healthy SDK apps on the node still do a request/reply. */
async function expectHealthy(): Promise<void> {
  const n = ++healthChecks;
  const reply = await alice.request('org/ns/bob', `ping ${n}`, { timeoutMs: 3000 });
  expect(reply.payload.toString()).toBe(`pong ${n}`);
}

beforeEach(async () => {
  port = await freePort();
  const cfg = parseNodeConfig(
    `services:\n  slim/0:\n    node_id: n1\n    group_name: g\n    dataplane:\n      max_message_size: 64KiB\n      servers:\n        - endpoint: "127.0.0.1:${port}"\n          tls: { insecure: true }\nobservability: { endpoint: "" }\n`,
  );
  node = new SlimNode(cfg, pino({ level: 'silent' }));
  await node.start();
  sessions = [];
  const url = `http://127.0.0.1:${port}`;
  alice = await SlimApp.connect({ name: 'org/ns/alice', slim: url, requestTimeoutMs: 3000 });
  bob = await SlimApp.connect({ name: 'org/ns/bob', slim: url, requestTimeoutMs: 3000 });
  bobGot = [];
  bobDisconnects = [];
  bob.on('disconnected', (why: string) => bobDisconnects.push(why));
  bob.onMessage((m) => {
    const text = m.payload.toString();
    if (text.startsWith('ping ')) bob.reply(m, `pong ${text.slice(5)}`);
    else bobGot.push(m);
  });
  await expectHealthy();
});

afterEach(async () => {
  alice?.close();
  bob?.close();
  for (const s of sessions) s.destroy();
  await node?.stop();
});

/** Waits until the node has counted `n` under `key` in one of its stats maps. */
async function counted(map: Map<string, number>, key: string, n = 1): Promise<void> {
  await eventually(() => (map.get(key) ?? 0) === n, 3000, `${key} counted ${n} time(s) (now ${map.get(key) ?? 0})`);
}

// -- the cases -----------------------------------------------------------------------------------------

describe('a node facing malformed frames', () => {
  it('closes with INVALID_ARGUMENT on garbage protobuf bytes after a valid link', async () => {
    const ch = raw();
    await ch.negotiate();
    ch.write(frame(Buffer.from('this is not protobuf at all')));
    const s = await ch.end();
    expect(s.httpStatus).toBe(200);
    expect(s.grpcStatus).toBe(Status.INVALID_ARGUMENT);
    expect(s.grpcMessage).toMatch(/^malformed message: .+/);
    await counted(node.stats.streamErrors, 'INVALID_ARGUMENT');
    await expectHealthy();
  });

  it('closes with INVALID_ARGUMENT on a truncated varint', async () => {
    const ch = raw();
    await ch.negotiate();
    // Unknown field 9 as a varint whose continuation bit promises a byte that never comes.
    ch.write(frame(Buffer.from([0x48, 0x80])));
    const s = await ch.end();
    expect(s.grpcStatus).toBe(Status.INVALID_ARGUMENT);
    expect(s.grpcMessage).toContain('truncated varint');
    await counted(node.stats.streamErrors, 'INVALID_ARGUMENT');
    await expectHealthy();
  });

  it('closes with UNIMPLEMENTED on a compressed-flag frame (no grpc-encoding negotiated)', async () => {
    const ch = raw();
    await ch.negotiate();
    ch.write(frame(encodeMessage({ kind: 'subscribe', subscribe: { name: RAW_APP, subscriptionId: 1 } }), 1));
    const s = await ch.end();
    expect(s.grpcStatus).toBe(Status.UNIMPLEMENTED);
    expect(s.grpcMessage).toMatch(/compressed message .*grpc-encoding/);
    await counted(node.stats.streamErrors, 'UNIMPLEMENTED');
    await expectHealthy();
  });

  it('closes with INVALID_ARGUMENT on frame flag 7', async () => {
    const ch = raw();
    await ch.negotiate();
    ch.write(frame(Buffer.from([0x0a, 0x00]), 7));
    const s = await ch.end();
    expect(s.grpcStatus).toBe(Status.INVALID_ARGUMENT);
    expect(s.grpcMessage).toBe('invalid gRPC frame flag 7');
    await counted(node.stats.streamErrors, 'INVALID_ARGUMENT');
    await expectHealthy();
  });

  it('refuses a frame declaring 1 MiB (max 64 KiB) with RESOURCE_EXHAUSTED from its header alone', async () => {
    const ch = raw();
    await ch.negotiate();
    // Only the 5-byte header: the body is never sent, so the refusal must come from the header.
    ch.write(frame(Buffer.alloc(0), 0, 1024 * 1024));
    const s = await ch.end();
    expect(s.grpcStatus).toBe(Status.RESOURCE_EXHAUSTED);
    expect(s.grpcMessage).toBe(`message of ${1024 * 1024} bytes exceeds the maximum message size of ${MAX_MESSAGE_SIZE} bytes`);
    await counted(node.stats.streamErrors, 'RESOURCE_EXHAUSTED');
    await expectHealthy();
  });
});

describe('a node facing bad requests and negotiations', () => {
  it('refuses a channel whose first message is not a link (INVALID_ARGUMENT, refusal no_negotiation)', async () => {
    const ch = raw();
    ch.send({ kind: 'subscribe', subscribe: { name: RAW_APP, subscriptionId: 1 } });
    const s = await ch.end();
    expect(s.grpcStatus).toBe(Status.INVALID_ARGUMENT);
    expect(s.grpcMessage).toBe('the first message on a channel must be a link negotiation');
    expect(ch.received).toEqual([]);
    await counted(node.stats.refusals, 'no_negotiation');
    await counted(node.stats.streamErrors, 'INVALID_ARGUMENT');
    await expectHealthy();
  });

  it('answers a wrong content-type with HTTP 415', async () => {
    const ch = raw({ 'content-type': 'application/json' });
    const s = await ch.end();
    expect(s.httpStatus).toBe(415);
    expect(s.grpcStatus).toBeUndefined();
    await counted(node.stats.refusals, 'bad_request');
    await expectHealthy();
  });

  it('answers an unknown path with UNIMPLEMENTED (trailers-only)', async () => {
    const ch = raw({ ':path': '/slim.dataplane.v1.DataPlaneService/NoSuchMethod' });
    const s = await ch.end();
    expect(s.httpStatus).toBe(200);
    expect(s.grpcStatus).toBe(Status.UNIMPLEMENTED);
    expect(s.grpcMessage).toBe('unknown method /slim.dataplane.v1.DataPlaneService/NoSuchMethod');
    await counted(node.stats.refusals, 'bad_request');
    await expectHealthy();
  });
});

describe('a node facing bad messages on an established link', () => {
  it('refuses a subscription with a malformed name in a failed subscriptionAck and keeps the stream open', async () => {
    const ch = raw();
    await ch.negotiate();
    ch.send({ kind: 'subscribe', subscribe: { name: { org: 'org', namespace: 'ns', service: 'bad name!', instance: '' }, subscriptionId: 5 } });
    const ack = await ch.waitFor((m) => m.kind === 'subscriptionAck' && m.subscriptionAck.subscriptionId === 5, 'ack 5');
    expect(ack).toEqual({ kind: 'subscriptionAck', subscriptionAck: { subscriptionId: 5, success: false, error: expect.stringContaining('service "bad name!"') } });

    ch.send({ kind: 'subscribe', subscribe: { name: { org: 'org', namespace: '', service: 'svc', instance: '' }, subscriptionId: 6 } });
    const ack6 = await ch.waitFor((m) => m.kind === 'subscriptionAck' && m.subscriptionAck.subscriptionId === 6, 'ack 6');
    expect(ack6).toEqual({ kind: 'subscriptionAck', subscriptionAck: { subscriptionId: 6, success: false, error: 'invalid name: namespace is empty' } });
    expect(node.stats.dropped.get('invalid_name')).toBe(2);

    // Still open: a valid subscription on the same stream is accepted.
    ch.send({ kind: 'subscribe', subscribe: { name: RAW_APP, subscriptionId: 7 } });
    const ack7 = await ch.waitFor((m) => m.kind === 'subscriptionAck' && m.subscriptionAck.subscriptionId === 7, 'ack 7');
    expect(ack7).toEqual({ kind: 'subscriptionAck', subscriptionAck: { subscriptionId: 7, success: true, error: '' } });
    expect(ch.endStatus).toBeUndefined();
    await expectHealthy();
  });

  it('answers a publish without destination with an INVALID_MESSAGE error carrying its message id, stream open', async () => {
    const ch = raw();
    await ch.negotiate();
    ch.send({ kind: 'publish', publish: { header: { source: RAW_APP, identity: '', fanout: 0, ttl: 0, messageId: 4242 }, payload: Buffer.from('x'), contentType: '' } });
    const err = await ch.waitFor((m) => m.kind === 'error', 'delivery error');
    if (err.kind !== 'error') throw new Error('unreachable');
    expect(err.error.messageId).toBe(4242);
    expect(err.error.code).toBe(ErrorCode.InvalidMessage);
    expect(err.error.code).toBe(2);
    expect(err.error.reason).toMatch(/no destination/);
    expect(node.stats.dropped.get('no_destination')).toBe(1);

    // Still open: a publish to bob on the same stream is delivered.
    ch.send({ kind: 'publish', publish: { header: { source: RAW_APP, destination: BOB, identity: '', fanout: 0, ttl: 3, messageId: 4243 }, payload: Buffer.from('after the bad one'), contentType: '' } });
    await eventually(() => bobGot.length === 1, 3000, 'bob got the publish');
    expect(bobGot[0]!.payload.toString()).toBe('after the bad one');
    expect(ch.endStatus).toBeUndefined();
    await expectHealthy();
  });

  it('routes and delivers a publish carrying unknown fields (top-level 9, header 12)', async () => {
    const ch = raw();
    await ch.negotiate();
    const publish = (ttl: number, payload: string): Buffer => {
      const header = Buffer.concat([
        lenField(1, nameBytes(RAW_APP)),
        lenField(2, nameBytes(BOB)),
        ...(ttl ? [varintField(5, ttl)] : []),
        varintField(6, 77),
        lenField(12, 'a header field from a newer schema'),
      ]);
      return Buffer.concat([varintField(9, 123456), lenField(3, Buffer.concat([lenField(1, header), lenField(2, payload)]))]);
    };
    // With a one-byte TTL the node copies the bytes through; without one it re-encodes the header.
    ch.write(frame(publish(5, 'copied through')));
    ch.write(frame(publish(0, 're-encoded')));
    await eventually(() => bobGot.length === 2, 3000, 'bob got both publishes');
    expect(bobGot.map((m) => m.payload.toString())).toEqual(['copied through', 're-encoded']);
    expect(bobGot.map((m) => m.messageId)).toEqual([77, 77]);
    expect(bobGot[0]!.source).toEqual(RAW_APP);
    expect(ch.endStatus).toBeUndefined();
    expect(ch.received.filter((m) => m.kind === 'error')).toEqual([]);
    await expectHealthy();
  });

  it('drops a TTL-1 publish from a node link as ttl_expired and still delivers a TTL-2 one', async () => {
    const ch = raw();
    // A fake node of the same group.
    await ch.negotiate({ linkId: 'fake-link', nodeId: 'fake', group: 'g', kind: LinkKind.PeerInGroup, app: undefined });
    // The node replays its local apps' interest to a new node link: bob's name among it.
    await ch.waitFor((m) => m.kind === 'subscribe' && m.subscribe.name?.service === 'bob', "bob's interest");
    const fromNode = (ttl: number, text: string): Message => ({
      kind: 'publish',
      publish: { header: { source: { org: 'org', namespace: 'ns', service: 'far', instance: 'x' }, destination: BOB, identity: '', fanout: 0, ttl, messageId: ttl }, payload: Buffer.from(text), contentType: '' },
    });
    ch.send(fromNode(1, 'ttl 1'));
    ch.send(fromNode(2, 'ttl 2'));
    await eventually(() => bobGot.length === 1, 3000, 'bob got the TTL-2 publish');
    expect(bobGot[0]!.payload.toString()).toBe('ttl 2');
    expect(node.stats.dropped.get('ttl_expired')).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(bobGot.map((m) => m.payload.toString())).toEqual(['ttl 2']);
    expect(ch.endStatus).toBeUndefined();
    await expectHealthy();
  });

  // The forwarder only scans a publish, so the scanner must reject whatever the receiving app's
  // full decoder would: here the payload field (Publish field 2) is sent as a varint.
  it('does not let a publish the full decoder rejects break the receiving app\'s connection', async () => {
    const ch = raw();
    await ch.negotiate();
    const header = Buffer.concat([lenField(1, nameBytes(RAW_APP)), lenField(2, nameBytes(BOB)), varintField(5, 5), varintField(6, 9)]);
    const poison = lenField(3, Buffer.concat([lenField(1, header), varintField(2, 1)]));
    ch.write(frame(poison));
    const st = await ch.end();
    expect(st.grpcStatus).toBe(Status.INVALID_ARGUMENT);
    expect(st.grpcMessage).toContain('Publish.payload has wire type 0');
    expect(bobDisconnects).toEqual([]);
    await expectHealthy();
  });
});

describe('random bytes as one frame after a valid link', () => {
  it('never crash the node: the stream ends with a status or the bytes are accepted, and healthy apps keep working', async () => {
    const valid = encodeMessage({
      kind: 'publish',
      publish: {
        header: { source: RAW_APP, destination: { org: 'org', namespace: 'ns', service: 'nobody', instance: '' }, identity: '', fanout: 2, ttl: 4, messageId: 99 },
        payload: Buffer.from('payload'),
        contentType: 'text/plain',
      },
      metadata: { k: 'v' },
    });
    const arbitrary = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      // Mostly valid messages with a few bytes changed reach deeper into the decoders.
      fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }).map((edits) => {
        const b = Buffer.from(valid);
        for (const [i, v] of edits) b[i] = v;
        return new Uint8Array(b);
      }),
    );
    let accepted = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(arbitrary, async (bytes) => {
        // A session per run: nghttp2 ends a session after ~1000 client stream resets (rapid-reset guard).
        const s = session();
        const ch = raw({}, s);
        try {
          await ch.negotiate();
          ch.write(frame(bytes));
          // A probe after the random frame: acknowledged if the stream survived it.
          ch.send({ kind: 'subscribe', subscribe: { name: { org: 'org', namespace: 'ns', service: 'probe', instance: '' }, subscriptionId: 424242 } });
          const outcome = await Promise.race([
            ch.waitFor((m) => m.kind === 'subscriptionAck' && m.subscriptionAck.subscriptionId === 424242, 'probe ack').then(
              () => 'accepted' as const,
              () => 'no-ack' as const,
            ),
            ch.end(),
          ]);
          if (outcome === 'accepted') accepted++;
          else {
            const st = outcome === 'no-ack' ? await ch.end() : outcome;
            // Anything but a DecodeError (INTERNAL) would be a bug in the node's decoders.
            expect(st.grpcStatus, JSON.stringify(st)).toBe(Status.INVALID_ARGUMENT);
            expect(st.grpcMessage).toMatch(/^malformed message: .+/);
            refused++;
          }
        } finally {
          ch.close();
          s.destroy();
          sessions.pop();
        }
        await expectHealthy();
      }),
      { numRuns: 100 },
    );
    expect(accepted + refused).toBe(100);
    expect(refused).toBeGreaterThan(0);
    await expectHealthy();
  }, 30_000);
});
