// HTTP/2 settings shared by the data-plane server and dialler.
import type { Http2Session, Settings } from 'node:http2';

/** Per-stream window: a whole burst of small messages fits without waiting for WINDOW_UPDATE. */
export const STREAM_WINDOW = 4 * 1024 * 1024;
/** Per-connection window: several busy streams share one pooled session. */
export const SESSION_WINDOW = 16 * 1024 * 1024;

export const HTTP2_SETTINGS: Settings = {
  initialWindowSize: STREAM_WINDOW,
  // A link is one stream (apps and nodes open one channel per session); the cap bounds how much
  // one connection can make a node hold in partly received messages (streams x max message size).
  maxConcurrentStreams: 16,
  // Larger DATA frames mean fewer frame headers and callbacks per coalesced batch.
  maxFrameSize: 256 * 1024,
  enablePush: false,
};

/** nghttp2 refuses work past maxSessionMemory (MiB); windows above need room to be honoured. */
export const MAX_SESSION_MEMORY_MB = 64;

/**
 * TCP_NODELAY has to be set on the raw socket (DataPlaneServer's 'connection' event, the
 * dialler's `noDelay` connect option): an http2 session's socket proxy throws on setNoDelay.
 */
export function tuneSession(session: Http2Session): void {
  const apply = (): void => {
    try {
      session.setLocalWindowSize(SESSION_WINDOW);
    } catch {
      // session already closing; nothing to tune
    }
  };
  if (session.connecting) session.once('connect', apply);
  else apply();
}

/**
 * PINGs the peer every `intervalMs` and destroys the session when an answer takes longer than
 * `timeoutMs`: a silent peer (cut network, frozen process) is noticed by both ends, not left to TCP.
 * Returns a function that stops the timer; it also stops when the session closes.
 */
export function keepAlive(session: Http2Session, intervalMs: number, timeoutMs: number, peer: string): () => void {
  const timer = setInterval(() => {
    if (session.connecting || session.destroyed || session.closed) return;
    const deadline = setTimeout(() => session.destroy(new Error(`no PING answer from ${peer} in ${timeoutMs} ms`)), timeoutMs);
    deadline.unref();
    try {
      session.ping(() => clearTimeout(deadline));
    } catch {
      clearTimeout(deadline);
    }
  }, intervalMs);
  timer.unref();
  const stop = (): void => clearInterval(timer);
  session.once('close', stop);
  return stop;
}
