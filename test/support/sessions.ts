// Helpers for session tests.
import type { SessionMessage } from '../../client/session/session.js';

/** The next `n` messages of a session's stream, or an error naming how many came in time. */
export async function take(it: AsyncIterator<SessionMessage>, n: number, timeoutMs = 10_000): Promise<SessionMessage[]> {
  const out: SessionMessage[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < n) {
    const r = await Promise.race([it.next(), new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), Math.max(1, deadline - Date.now())))]);
    if (r === 'timeout') throw new Error(`only ${out.length} of ${n} messages within ${timeoutMs} ms`);
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}
