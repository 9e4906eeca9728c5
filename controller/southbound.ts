// ControllerService on grpc-js: the control channel nodes open. Registration is authenticated
// by the identity the node's connection proved (serveGrpc verified it when it was accepted).

import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { controllerServiceDefinition, type NodeMessage } from '../proto/controller.js';
import type { ConnectionTls } from '../identity/connection-tls.js';
import { verifyGrpcCall } from '../identity/grpc-tls.js';
import type { ControlPlane } from './control-plane.js';
import type { ControlStream } from './node-session.js';

const REGISTER_TIMEOUT_MS = 10_000;

export function addControllerService(server: grpc.Server, plane: ControlPlane, tls: ConnectionTls | undefined, heartbeatIntervalMs: number, log: Logger): void {
  server.addService(controllerServiceDefinition(), {
    OpenControlChannel: (stream: ControlStream) => {
      const peer = stream.getPeer();
      let identity = '';
      if (tls) {
        const verdict = verifyGrpcCall(tls, stream);
        if (!verdict.ok) {
          stream.emit('error', { code: grpc.status.UNAUTHENTICATED, details: verdict.message });
          return;
        }
        identity = verdict.id;
      }
      const timer = setTimeout(() => {
        log.warn({ peer }, `no registration within ${REGISTER_TIMEOUT_MS} ms on a control channel; closing it`);
        stream.emit('error', { code: grpc.status.DEADLINE_EXCEEDED, details: `register first, within ${REGISTER_TIMEOUT_MS} ms` });
      }, REGISTER_TIMEOUT_MS);
      timer.unref();
      const first = (m: NodeMessage): void => {
        stream.off('data', first);
        clearTimeout(timer);
        if (!m.register) {
          stream.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'the first message on a control channel must be register' });
          return;
        }
        const reg = plane.register(m.register, identity, stream, peer);
        if (!reg.ok) {
          stream.write({ register_reply: { accepted: false, reason: reg.reason, heartbeat_interval_ms: heartbeatIntervalMs } });
          stream.end();
          return;
        }
        stream.write({ register_reply: { accepted: true, reason: '', heartbeat_interval_ms: heartbeatIntervalMs } });
        plane.afterRegistration(reg.record, m.register.subscriptions);
      };
      stream.on('data', first);
      stream.on('error', () => clearTimeout(timer));
      stream.on('cancelled', () => clearTimeout(timer));
    },
  });
}
