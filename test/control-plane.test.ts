// The control plane's reconciliation with scripted nodes (no processes): subscriptions racing
// re-registrations and removals converge to what the node last reported; a group that gets an
// external endpoint late is exposed then. (Found by review; each case failed before the fix.)
import { describe, expect, it } from 'vitest';
import { ScriptedNode, registerScripted as register, scriptedPlane as plane, tick } from './support/scripted-node.js';

const N = 'org/ns/alice/1';

function fleet(): { a0: ScriptedNode; a1: ScriptedNode; b0: ScriptedNode } {
  return {
    a0: new ScriptedNode('a0', 'A', '10.0.0.1:1', 'lb-a:1'),
    a1: new ScriptedNode('a1', 'A', '10.0.0.2:1', 'lb-a:1'),
    b0: new ScriptedNode('b0', 'B', '10.1.0.1:1', 'lb-b:1'),
  };
}

/** Three registered nodes with N subscribed on a0 and its routes installed. */
async function subscribed(): Promise<{ p: ReturnType<typeof plane>; a0: ScriptedNode; a1: ScriptedNode; b0: ScriptedNode }> {
  const p = plane();
  const f = fleet();
  for (const n of [f.a0, f.a1, f.b0]) register(p, n);
  f.a0.sub(N);
  await tick(50);
  return { p, ...f };
}

describe('control plane reconciliation', () => {
  it('installs step 1 in the group and step 2 in the other groups', async () => {
    const { p, a1, b0 } = await subscribed();
    expect([...a1.routes]).toEqual([`${N} -> node/a0`]);
    expect([...b0.routes]).toEqual([`${N} -> group/A`]);
    p.stop();
  });

  it('node ids repeat across groups (every cluster has a slim-0): both register, each gets its own routes', async () => {
    const p = plane();
    const a = [new ScriptedNode('slim-0', 'A', '10.0.0.1:1', 'lb-a:1'), new ScriptedNode('slim-1', 'A', '10.0.0.2:1', 'lb-a:1')];
    const b = [new ScriptedNode('slim-0', 'B', '10.1.0.1:1', 'lb-b:1'), new ScriptedNode('slim-1', 'B', '10.1.0.2:1', 'lb-b:1')];
    for (const n of [...a, ...b]) expect(register(p, n)).toBeDefined();
    expect([...p.records.values()].map((r) => `${r.group}/${r.id}`).sort()).toEqual(['A/slim-0', 'A/slim-1', 'B/slim-0', 'B/slim-1']);
    a[0]!.sub('org/ns/alice/1');
    b[1]!.sub('org/ns/bob/1');
    await tick(50);
    // "node/slim-0" on a node of A is A's slim-0 (its local endpoint), never B's.
    expect([...a[1]!.routes].sort()).toEqual(['org/ns/alice/1 -> node/slim-0', 'org/ns/bob/1 -> group/B']);
    expect(a[1]!.conns.get('node/slim-0')).toMatchObject({ endpoint: '10.0.0.1:1', node_id: 'slim-0' });
    expect([...b[0]!.routes].sort()).toEqual(['org/ns/alice/1 -> group/A', 'org/ns/bob/1 -> node/slim-1']);
    expect(b[0]!.conns.get('node/slim-1')).toMatchObject({ endpoint: '10.1.0.2:1', node_id: 'slim-1' });
    expect([...b[1]!.routes]).toEqual(['org/ns/alice/1 -> group/A']);
    p.stop();
  });

  it('a node that comes back while its removal is under way keeps its subscription', async () => {
    const { p, a1, b0, ...rest } = await subscribed();
    let a0 = rest.a0;
    b0.hold = true; // slow to acknowledge the step-2 removal
    a0.drop();
    await tick(150); // grace (100 ms) over: removal started, waiting on b0
    expect(b0.held.length).toBeGreaterThan(0);
    a0 = a0.reopen();
    register(p, a0); // back, still subscribed
    b0.release();
    await tick(100);
    expect(p.planner.isSubscribed('A/a0', N)).toBe(true);
    expect([...a1.routes]).toEqual([`${N} -> node/a0`]);
    expect([...b0.routes]).toEqual([`${N} -> group/A`]);
    p.stop();
  });

  it('an unsubscribe in flight does not win over a registration that still holds the name', async () => {
    const { p, a1, b0, ...rest } = await subscribed();
    let a0 = rest.a0;
    b0.hold = true;
    a0.unsub(N);
    await tick(10);
    a0.subs.add(N); // the app subscribed again while the channel was down
    a0.drop();
    a0 = a0.reopen();
    register(p, a0);
    b0.release();
    await tick(100);
    expect(p.planner.isSubscribed('A/a0', N)).toBe(true);
    expect([...a1.routes]).toEqual([`${N} -> node/a0`]);
    expect([...b0.routes]).toEqual([`${N} -> group/A`]);
    p.stop();
  });

  it('a subscribe queued behind an unsubscribe does not outlive a registration without the name', async () => {
    const { p, a1, b0, ...rest } = await subscribed();
    let a0 = rest.a0;
    a1.hold = true;
    a0.unsub(N);
    await tick(10);
    a0.sub(N); // queued behind the unsubscribe
    a0.subs.delete(N); // and gone again before the node reconnects
    a0.drop();
    a0 = a0.reopen();
    register(p, a0);
    a1.release();
    await tick(100);
    expect(p.planner.isSubscribed('A/a0', N)).toBe(false);
    expect([...a1.routes]).toEqual([]);
    expect([...b0.routes]).toEqual([]);
    p.stop();
  });

  it('exposes a subscription once its group gets an external endpoint', async () => {
    const p = plane();
    let a0 = new ScriptedNode('a0', 'A', '10.0.0.1:1', '');
    const b0 = new ScriptedNode('b0', 'B', '10.1.0.1:1', 'lb-b:1');
    register(p, a0);
    register(p, b0);
    a0.sub(N);
    await tick(50);
    expect([...b0.routes]).toEqual([]); // nothing to dial into A yet
    a0.drop();
    a0 = new ScriptedNode('a0', 'A', '10.0.0.1:1', 'lb-a:1');
    a0.subs.add(N);
    register(p, a0); // restarted with its external endpoint configured
    await tick(100);
    expect([...b0.routes]).toEqual([`${N} -> group/A`]);
    p.stop();
  });

  it('refuses a second live node under the same id and identity with other endpoints', () => {
    const p = plane();
    const a0 = new ScriptedNode('a0', 'A', '10.0.0.1:1', 'lb-a:1');
    register(p, a0);
    const twin = new ScriptedNode('a0', 'A', '10.0.0.9:1', 'lb-a:1');
    const r = p.register(twin.reg(), '', twin as never, 'twin-peer');
    expect(r).toEqual({ ok: false, reason: expect.stringContaining('two nodes share this id') });
    // The same node reconnecting (same endpoints) replaces its old channel.
    expect(p.register(a0.reopen().reg(), '', a0.reopen() as never, 'a0').ok).toBe(true);
    p.stop();
  });
});
