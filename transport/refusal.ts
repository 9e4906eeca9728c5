// How a TLS server tells a refused peer why: after its own verifier refused the peer's
// certificate, it answers the session with GOAWAY(INADEQUATE_SECURITY) whose debug data is the
// reason, rather than dropping the connection with nothing to go on.

import { constants as h2, type Http2Session } from 'node:http2';

const refusals = new WeakMap<Http2Session, string>();

/** Server side: refuse a session, with the reason in the GOAWAY frame. */
export function refuseSession(session: Http2Session, reason: string): void {
  try {
    session.goaway(h2.NGHTTP2_INADEQUATE_SECURITY, 0, Buffer.from(reason.slice(0, 512)));
  } catch {
    // already closing
  }
  // Last stream id 0: nghttp2 ignores every stream the peer opens from here on. close() would
  // destroy the idle session before the GOAWAY is flushed, so give the frame a moment.
  setTimeout(() => session.destroy(), 250).unref();
}

/** Client side: remember a refusal seen in a GOAWAY so the session's channels can report it. */
export function notePeerRefusal(session: Http2Session, errorCode: number, data: Buffer | undefined): string | undefined {
  if (errorCode !== h2.NGHTTP2_INADEQUATE_SECURITY) return undefined;
  const reason = `the server refused this connection's certificate: ${data?.length ? data.toString('utf8') : 'no reason given'}`;
  refusals.set(session, reason);
  return reason;
}

export function peerRefusal(session: Http2Session): string | undefined {
  return refusals.get(session);
}
