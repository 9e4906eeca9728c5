// An app that receives a message it cannot decode drops it and keeps its connection. Our nodes
// refuse such publishes, so a hand-written node on node:http2 plays a buggy or hostile relay.
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { SlimApp, type ReceivedMessage } from '../client/slim-app.js';
import { LinkKind, OPEN_CHANNEL_PATH, encodeMessage, parseName } from '../proto/dataplane.js';

function framed(body: Buffer): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

let server: http2.Http2Server | undefined;
let app: SlimApp | undefined;
afterEach(() => {
  app?.close();
  server?.close();
});

it('drops an undecodable message, counts it, and keeps receiving on the same connection', async () => {
  server = http2.createServer();
  server.on('stream', (stream, headers) => {
    expect(headers[':path']).toBe(OPEN_CHANNEL_PATH);
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    let negotiated = false;
    stream.on('data', () => {
      if (negotiated) return;
      negotiated = true;
      stream.write(framed(encodeMessage({ kind: 'link', link: { linkId: 'l', nodeId: 'fake', group: 'g', kind: LinkKind.PeerInGroup, protocolVersion: 1 } })));
      // A fresh app's first subscription ids are small: acknowledge the first few.
      for (let id = 1; id <= 4; id++) stream.write(framed(encodeMessage({ kind: 'subscriptionAck', subscriptionAck: { subscriptionId: id, success: true, error: '' } })));
      setTimeout(() => {
        // A publish whose payload field is a varint: the full decoder rejects it.
        const bad = Buffer.from([0x1a, 0x02, 0x10, 0x01]);
        const good = encodeMessage({
          kind: 'publish',
          publish: { header: { destination: parseName('org/ns/app/1'), identity: '', fanout: 0, ttl: 7, messageId: 5 }, payload: Buffer.from('after'), contentType: '' },
        });
        stream.write(Buffer.concat([framed(bad), framed(good)]));
      }, 50);
    });
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  app = await SlimApp.connect({ name: 'org/ns/app', instance: '1', slim: `http://127.0.0.1:${port}`, reconnect: false });
  const disconnects: string[] = [];
  app.on('disconnected', (why: string) => disconnects.push(why));
  const got = await new Promise<ReceivedMessage>((resolve) => app!.onMessage(resolve));
  expect(got.payload.toString()).toBe('after');
  expect(app.malformedDropped).toBe(1);
  expect(disconnects).toEqual([]);
  expect(app.isReady).toBe(true);
});
