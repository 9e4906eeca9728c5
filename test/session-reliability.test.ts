// The reliability halves on their own, with fake timers: what a sender retransmits and when it
// gives up, and what a receiver hands over for every arrival order.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Inbound, Outbound, SessionDeliveryError, reliabilityOptions } from '../client/session/reliability.js';

describe('Outbound', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const opts = reliabilityOptions({ retryIntervalMs: 100, maxRetries: 2, window: 4 });

  it('retransmits to the recipients that have not acknowledged, then fails naming them', async () => {
    const sent: string[] = [];
    const gaps: string[] = [];
    const out = new Outbound<string>('s1', opts, { retransmit: (item, seq, to) => sent.push(`${item}#${seq}->${to.join('+')}`), gaveUp: (seq, low, missing) => gaps.push(`${seq}<${low}:${missing.join('+')}`) });
    const seq = await out.reserve();
    const done = out.track(seq, 'm', ['a', 'b']);
    const failed = done.catch((e: unknown) => e);
    expect(out.ack(seq, 'a')).toBe(true);
    expect(out.ack(seq, 'a')).toBe(false); // a duplicate ack changes nothing
    await vi.advanceTimersByTimeAsync(100);
    expect(sent).toEqual(['m#1->b']);
    await vi.advanceTimersByTimeAsync(100);
    expect(sent).toEqual(['m#1->b', 'm#1->b']);
    await vi.advanceTimersByTimeAsync(100);
    const err = await failed;
    expect(err).toBeInstanceOf(SessionDeliveryError);
    expect((err as SessionDeliveryError).missing).toEqual(['b']);
    expect((err as SessionDeliveryError).message).toContain('not acknowledged by b after 2 retransmission(s)');
    expect(out.low).toBe(2);
    expect(gaps).toEqual(['1<2:b']); // the receivers that missed it hear the new mark
  });

  it('resolves when the last recipient acknowledges or is forgotten', async () => {
    const out = new Outbound<string>('s1', opts, { retransmit: () => undefined, gaveUp: () => undefined });
    const s1 = await out.reserve();
    const p1 = out.track(s1, 'x', ['a']);
    const s2 = await out.reserve();
    const p2 = out.track(s2, 'y', ['a', 'b']);
    out.ack(s1, 'a');
    await p1;
    out.ack(s2, 'a');
    out.forget('b');
    await p2;
    expect(out.inFlight).toBe(0);
  });

  it('keeps low at a sequence number taken but not yet tracked (still being encrypted)', async () => {
    const out = new Outbound<string>('s1', opts, { retransmit: () => undefined, gaveUp: () => undefined });
    const s1 = await out.reserve();
    const s2 = await out.reserve();
    void out.track(s2, 'second', ['a']);
    expect(out.low).toBe(s1);
    out.abandon(s1);
    expect(out.low).toBe(s2);
  });

  it('holds send() at the window until a slot frees', async () => {
    const out = new Outbound<string>('s1', opts, { retransmit: () => undefined, gaveUp: () => undefined });
    const seqs: number[] = [];
    for (let i = 0; i < 4; i++) {
      const s = await out.reserve();
      seqs.push(s);
      void out.track(s, 'm', ['a']).catch(() => undefined);
    }
    let got = false;
    const fifth = out.reserve().then(() => (got = true));
    await vi.advanceTimersByTimeAsync(0);
    expect(got).toBe(false);
    out.ack(seqs[0]!, 'a');
    await fifth;
    expect(got).toBe(true);
  });

  it('concurrent senders cannot overfill the window', async () => {
    const out = new Outbound<string>('s1', opts, { retransmit: () => undefined, gaveUp: () => undefined });
    const taken: number[] = [];
    const all = Array.from({ length: 10 }, () => out.reserve().then((s) => (taken.push(s), void out.track(s, 'm', ['a']).catch(() => undefined))));
    await vi.advanceTimersByTimeAsync(0);
    expect(taken).toEqual([1, 2, 3, 4]);
    out.ack(1, 'a');
    await vi.advanceTimersByTimeAsync(0);
    expect(taken).toEqual([1, 2, 3, 4, 5]);
    out.close(new Error('done'));
    await Promise.allSettled(all);
  });

  it('best effort neither waits nor retransmits', async () => {
    const sent: number[] = [];
    const out = new Outbound<string>('s1', reliabilityOptions({ reliable: false }), { retransmit: (_i, seq) => sent.push(seq), gaveUp: () => undefined });
    const seq = await out.reserve();
    await out.track(seq, 'm', ['a']);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(sent).toEqual([]);
  });

  it('close() rejects everything unacknowledged', async () => {
    const out = new Outbound<string>('s1', opts, { retransmit: () => undefined, gaveUp: () => undefined });
    const p = out.track(await out.reserve(), 'm', ['a']);
    out.close(new Error('gone'));
    await expect(p).rejects.toThrow('gone');
  });
});

describe('reliabilityOptions', () => {
  it('names the bad field', () => {
    expect(() => reliabilityOptions({ retryIntervalMs: 0 })).toThrow('retryIntervalMs must be a whole number of milliseconds from 1 to 2147483647, got 0');
    expect(() => reliabilityOptions({ retryIntervalMs: 3e9 })).toThrow('retryIntervalMs must be a whole number of milliseconds');
    expect(() => reliabilityOptions({ maxRetries: -1 })).toThrow('maxRetries must be a non-negative integer');
    expect(() => reliabilityOptions({ window: 5000 })).toThrow('window must be at most 1000');
  });
});

describe('Inbound', () => {
  function inbound(window = 16): { inb: Inbound<string>; out: string[] } {
    const out: string[] = [];
    const inb = new Inbound<string>(window, (item, seq) => out.push(`${seq}:${item}`));
    return { inb, out };
  }

  it('hands over in order whatever the arrival order, once each', () => {
    const { inb, out } = inbound();
    for (const seq of [3, 1, 3, 2, 5, 4, 1, 5]) {
      if (inb.arrival(seq) === 'new') inb.accept(seq, `m${seq}`, 1);
    }
    expect(out).toEqual(['1:m1', '2:m2', '3:m3', '4:m4', '5:m5']);
    expect(inb.duplicates).toBe(3);
  });

  it('starts at the sender low mark, not at the first arrival', () => {
    const { inb, out } = inbound();
    expect(inb.arrival(7)).toBe('new');
    inb.accept(7, 'late', 6);
    expect(out).toEqual([]);
    expect(inb.arrival(6)).toBe('new');
    inb.accept(6, 'early', 6);
    expect(out).toEqual(['6:early', '7:late']);
  });

  it('skips a gap the sender gave up on once low passes it', () => {
    const { inb, out } = inbound();
    inb.accept(1, 'a', 1);
    inb.accept(3, 'c', 2);
    expect(out).toEqual(['1:a']);
    inb.advance(3); // 2 was given up on
    expect(out).toEqual(['1:a', '3:c']);
    expect(inb.skipped).toBe(1);
    expect(inb.arrival(2)).toBe('duplicate');
  });

  it('refuses sequence numbers far beyond the window, and only authenticated arrivals change state', () => {
    const { inb, out } = inbound(4);
    expect(inb.arrival(400)).toBe('new'); // nothing known yet: classification alone changes nothing
    inb.accept(1, 'a', 1);
    expect(inb.arrival(100)).toBe('beyond-window');
    expect(inb.arrival(2)).toBe('new');
    inb.accept(2, 'b', 2);
    expect(out).toEqual(['1:a', '2:b']);
  });

  it('a gap given up on after the messages behind it arrived is skipped when the new mark comes', () => {
    const { inb, out } = inbound();
    inb.accept(1, 'a', 1);
    inb.accept(3, 'c', 2); // sent while 2 was still being retried
    expect(out).toEqual(['1:a']);
    inb.advance(3); // the sender's gap notice
    expect(out).toEqual(['1:a', '3:c']);
  });
});
