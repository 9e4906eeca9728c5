// Codec for proto/session.proto: the frames the SDK's session layer carries inside publish
// payloads. Nodes never decode them, so this is not the forwarding hot path and protobufjs
// (the library @grpc/proto-loader is built on) does the work.

import protobuf from 'protobufjs';
import { protoPath } from './grpc-loader.js';
import type { Name } from './dataplane.js';

/** Content type of a publish whose payload is a SessionFrame. */
export const SESSION_CONTENT_TYPE = 'application/vnd.slim.session+proto';

export enum SessionKind {
  Unspecified = 0,
  PointToPoint = 1,
  Group = 2,
}

export enum FrameType {
  Unspecified = 0,
  Discover = 1,
  Join = 2,
  Refuse = 3,
  Welcome = 4,
  WelcomeAck = 5,
  Commit = 6,
  CommitAck = 7,
  Data = 8,
  Ack = 9,
  Heartbeat = 10,
  Leave = 11,
  Removed = 12,
  Close = 13,
}

export interface Member {
  name: Name;
  identity: string;
}

export interface SessionFrame {
  sessionId: string;
  type: FrameType;
  kind: SessionKind;
  mls: boolean;
  seq: number;
  low: number;
  body: Uint8Array;
  channel?: Name;
  members: Member[];
  epoch: number;
  reason: string;
  reliable: boolean;
  moderator?: Name;
  heartbeatMs: number;
  window: number;
  retryIntervalMs: number;
  maxRetries: number;
  missedHeartbeats: number;
}

let frameType: protobuf.Type | undefined;

function type(): protobuf.Type {
  if (!frameType) {
    const root = new protobuf.Root();
    // session.proto imports "dataplane.proto" from the same folder.
    root.resolvePath = (_origin, target) => protoPath(target.slice(target.lastIndexOf('/') + 1));
    root.loadSync('session.proto', { keepCase: false });
    frameType = root.lookupType('slim.session.v1.SessionFrame');
  }
  return frameType;
}

const EMPTY = new Uint8Array(0);

/** A frame with every field at its default, overridden by `f`. */
export function frame(f: Partial<SessionFrame> & Pick<SessionFrame, 'sessionId' | 'type'>): SessionFrame {
  return {
    kind: SessionKind.Unspecified,
    mls: false,
    seq: 0,
    low: 0,
    body: EMPTY,
    members: [],
    epoch: 0,
    reason: '',
    reliable: false,
    heartbeatMs: 0,
    window: 0,
    retryIntervalMs: 0,
    maxRetries: 0,
    missedHeartbeats: 0,
    ...f,
  };
}

export function encodeSessionFrame(f: SessionFrame): Uint8Array {
  return type().encode(f as unknown as Record<string, unknown>).finish();
}

export class SessionFrameError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'SessionFrameError';
  }
}

/** Decodes a frame; throws SessionFrameError naming what is wrong. */
export function decodeSessionFrame(bytes: Uint8Array): SessionFrame {
  let obj: Record<string, unknown>;
  try {
    const t = type();
    obj = t.toObject(t.decode(bytes), { longs: Number, enums: Number, bytes: Uint8Array, defaults: true, arrays: true }) as Record<string, unknown>;
  } catch (err) {
    throw new SessionFrameError(`not a session frame: ${(err as Error).message}`);
  }
  const f = obj as unknown as SessionFrame;
  if (!f.sessionId) throw new SessionFrameError('session frame without a session id');
  if (!(f.type in FrameType) || f.type === FrameType.Unspecified) throw new SessionFrameError(`unknown session frame type ${f.type}`);
  if (!Number.isSafeInteger(f.seq) || !Number.isSafeInteger(f.low) || !Number.isSafeInteger(f.epoch)) {
    throw new SessionFrameError('session frame number out of range');
  }
  // toObject leaves absent message fields out; give names their full shape.
  const fix = (n: Name | null | undefined): Name | undefined =>
    n ? { org: n.org ?? '', namespace: n.namespace ?? '', service: n.service ?? '', instance: n.instance ?? '' } : undefined;
  f.channel = fix(f.channel);
  f.moderator = fix(f.moderator);
  for (const m of f.members) {
    m.name = fix(m.name) ?? { org: '', namespace: '', service: '', instance: '' };
    m.identity ??= '';
  }
  return f;
}
