// npm run bench:codec: the data-plane codec per message, ours against protobufjs (the library
// @grpc/proto-loader uses), for a 100-byte publish. Prints ns per operation.

import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { REPO_ROOT } from '../harness/processes.js';
import { RouteView, decodeMessage, encodeMessage, messageSize, parseName, scanMessage, writeMessage, type Message } from '../proto/dataplane.js';

const require = createRequire(import.meta.url);
const protobuf = require('protobufjs') as typeof import('protobufjs');

const N = Number(process.argv[2] ?? 1_000_000);
const dest = parseName('bench/ns/receiver');
const source = parseName('bench/ns/sender/0123456789abcdef');
const payload = Buffer.alloc(100, 0x61);
const publish = (messageId: number): Message => ({
  kind: 'publish',
  publish: { header: { source, destination: dest, identity: '', fanout: 0, ttl: 8, messageId }, payload, contentType: '' },
});

function time(label: string, fn: (i: number) => void): number {
  for (let i = 0; i < N / 10; i++) fn(i); // warm up the JIT
  const t = performance.now();
  for (let i = 0; i < N; i++) fn(i);
  const ns = ((performance.now() - t) * 1e6) / N;
  process.stdout.write(`${label.padEnd(34)} ${ns.toFixed(0).padStart(6)} ns/msg  (${Math.round(1e9 / ns).toLocaleString('en-US')} /s)\n`);
  return ns;
}

const encoded = encodeMessage(publish(1));
const batch = Buffer.allocUnsafe(1 << 20);
let pos = 0;
process.stdout.write(`100-byte publish, ${encoded.length} bytes encoded, ${N.toLocaleString('en-US')} iterations\n`);
const ourEnc = time('slim-ts encode (object -> bytes)', (i) => {
  const m = publish(i);
  if (pos + messageSize(m) > batch.length) pos = 0;
  pos = writeMessage(batch, pos, m);
});
const ourDec = time('slim-ts decode (bytes -> object)', () => decodeMessage(encoded, 0, encoded.length));
const view = new RouteView();
time('slim-ts scan (routing fields only)', () => scanMessage(encoded, 0, encoded.length, view));

const root = protobuf.loadSync(resolve(REPO_ROOT, 'proto/dataplane.proto'));
const T = root.lookupType('slim.dataplane.v1.Message');
const pbObj = { publish: { header: { source, destination: dest, identity: '', fanout: 0, ttl: 8, messageId: 1 }, payload, contentType: '' } };
const pbEnc = time('protobufjs encode', () => T.encode(pbObj).finish());
const pbDec = time('protobufjs decode', () => T.decode(encoded));
process.stdout.write(`decode+encode: slim-ts ${Math.round(1e9 / (ourEnc + ourDec)).toLocaleString('en-US')}/s, protobufjs ${Math.round(1e9 / (pbEnc + pbDec)).toLocaleString('en-US')}/s\n`);
