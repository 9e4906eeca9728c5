// HTTP/2 settings shared by the data-plane server and dialler.
import type { Http2Session, Settings } from 'node:http2';

/** Per-stream window: a whole burst of small messages fits without waiting for WINDOW_UPDATE. */
export const STREAM_WINDOW = 4 * 1024 * 1024;
/** Per-connection window: several busy streams share one pooled session. */
export const SESSION_WINDOW = 16 * 1024 * 1024;

export const HTTP2_SETTINGS: Settings = {
  initialWindowSize: STREAM_WINDOW,
  // Larger DATA frames mean fewer frame headers and callbacks per coalesced batch.
  maxFrameSize: 256 * 1024,
  enablePush: false,
};

/** nghttp2 refuses work past maxSessionMemory (MiB); windows above need room to be honoured. */
export const MAX_SESSION_MEMORY_MB = 64;

export function tuneSession(session: Http2Session): void {
  const apply = (): void => {
    try {
      session.setLocalWindowSize(SESSION_WINDOW);
      // Writes are already coalesced per event-loop turn; Nagle would only add delay (tens of
      // ms with delayed ACKs) to a lone request/reply.
      (session.socket as { setNoDelay?: (v: boolean) => void } | undefined)?.setNoDelay?.(true);
    } catch {
      // session already closing; nothing to tune
    }
  };
  if (session.connecting) session.once('connect', apply);
  else apply();
}
