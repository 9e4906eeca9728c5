// The route planner alone: what each node should hold for the subscriptions in the network.
import { describe, expect, it } from 'vitest';
import { RoutePlanner, type PlannerNode } from '../controller/route-planner.js';
import { routeKey } from '../proto/controller.js';

function node(id: string, group: string, i: number): PlannerNode {
  return { id, nodeId: id, group, localEndpoint: `10.0.${group === 'a' ? 1 : 2}.${i}:46357`, externalEndpoint: `slim.${group}.example:46357`, tls: true };
}

function routesOf(p: RoutePlanner, id: string): string[] {
  return [...(p.wantedFor(id)?.routes.values() ?? [])].map((r) => `${r.name} -> ${r.connectionId}`).sort();
}

function connsOf(p: RoutePlanner, id: string): string[] {
  return [...(p.wantedFor(id)?.connections.keys() ?? [])].sort();
}

function twoGroups(): RoutePlanner {
  const p = new RoutePlanner();
  for (const [id, g, i] of [['a0', 'a', 0], ['a1', 'a', 1], ['b0', 'b', 0], ['b1', 'b', 1]] as const) p.upsertNode(node(id, g, i));
  return p;
}

describe('route planner', () => {
  it('step 1 gives the subscriber\'s group mates a route to its local endpoint, step 2 every other group a route to the group', () => {
    const p = twoGroups();
    expect([...p.subscribe('a0', 'org/ns/alice')].sort()).toEqual(['a1']);
    expect(routesOf(p, 'a1')).toEqual(['org/ns/alice -> node/a0']);
    expect(routesOf(p, 'b0')).toEqual([]); // nothing crosses groups before step 1 is acknowledged
    expect(p.connectionSpec('node/a0', 'a')).toEqual({ id: 'node/a0', endpoint: '10.0.1.0:46357', tls: true, node_id: 'a0' });

    expect([...p.exposeRemote('a0', 'org/ns/alice')].sort()).toEqual(['b0', 'b1']);
    expect(routesOf(p, 'b0')).toEqual(['org/ns/alice -> group/a']);
    expect(connsOf(p, 'b1')).toEqual(['group/a']);
    expect(p.connectionSpec('group/a', 'b')).toEqual({ id: 'group/a', endpoint: 'slim.a.example:46357', tls: true, group: 'a' });
    expect(routesOf(p, 'a0')).toEqual([]); // never a route to itself
  });

  it('counts references: a group route stays while any subscriber in that group remains', () => {
    const p = twoGroups();
    for (const x of ['a0', 'a1']) {
      p.subscribe(x, 'org/ns/alice');
      p.exposeRemote(x, 'org/ns/alice');
    }
    expect(routesOf(p, 'b0')).toEqual(['org/ns/alice -> group/a']);
    expect(p.wantedFor('b0')!.routes.get(routeKey('org/ns/alice', 'group/a'))!.refs).toBe(2);
    p.unsubscribe('a0', 'org/ns/alice');
    expect(routesOf(p, 'b0')).toEqual(['org/ns/alice -> group/a']);
    expect(routesOf(p, 'a1')).toEqual([]); // its route to a0 went
    expect(routesOf(p, 'a0')).toEqual(['org/ns/alice -> node/a1']);
    p.unsubscribe('a1', 'org/ns/alice');
    expect(routesOf(p, 'b0')).toEqual([]);
    expect(connsOf(p, 'b0')).toEqual([]); // the connection goes with its last route
    expect(p.totalRoutes).toBe(0);
  });

  it('a node that joins gets routes toward what already exists; a node that goes takes its routes with it', () => {
    const p = twoGroups();
    p.subscribe('a0', 'org/ns/alice');
    p.exposeRemote('a0', 'org/ns/alice');
    p.upsertNode(node('a2', 'a', 2));
    p.upsertNode(node('b2', 'b', 2));
    expect(routesOf(p, 'a2')).toEqual(['org/ns/alice -> node/a0']);
    expect(routesOf(p, 'b2')).toEqual(['org/ns/alice -> group/a']);
    const changed = p.removeNode('a0');
    expect([...changed].sort()).toEqual(['a1', 'a2', 'b0', 'b1', 'b2']);
    for (const id of ['a1', 'a2', 'b0', 'b1', 'b2']) expect(routesOf(p, id)).toEqual([]);
    expect(p.totalRoutes).toBe(0);
  });

  it('a group without an external endpoint is not exposed to other groups', () => {
    const p = new RoutePlanner();
    p.upsertNode({ ...node('a0', 'a', 0), externalEndpoint: '' });
    p.upsertNode(node('b0', 'b', 0));
    p.subscribe('a0', 'org/ns/alice');
    expect([...p.exposeRemote('a0', 'org/ns/alice')]).toEqual([]);
    expect(routesOf(p, 'b0')).toEqual([]);
  });

  it('a changed local endpoint changes the connection spec others are told to dial', () => {
    const p = twoGroups();
    const { respec } = p.upsertNode({ ...node('a0', 'a', 0), localEndpoint: '10.0.1.99:46357' });
    expect([...respec]).toEqual(['node/a0']);
    expect(p.connectionSpec('node/a0', 'a')!.endpoint).toBe('10.0.1.99:46357');
  });
});
