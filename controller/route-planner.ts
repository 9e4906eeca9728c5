// The route planner (DESIGN §4): from registered nodes and their local subscriptions, the
// connections and routes every node should hold. Pure bookkeeping, no I/O: the controller
// diffs what this wants against what each node has and sends the difference.
//
// A subscription for name N on node X in group G asks for
//   1. on every other node Y of G: a connection to X's local endpoint ("node/X") and N → it;
//   2. on every node Z of every other group: a connection to G's external endpoint ("group/G",
//      one per (Z, G), whichever G node the load balancer picks) and N → it.
// The controller applies step 1 and waits for its acknowledgements before step 2 (exposeRemote),
// so a node of another group never sends N into G before G's nodes can carry it to X.
// Everything is reference-counted: a route goes when its last reason goes, a connection when
// its last route goes. Each call returns the nodes whose wanted state changed.

import { groupConnectionId, nodeConnectionId, routeKey, type ConnectionSpecMsg } from '../proto/controller.js';

export interface PlannerNode {
  /** The planner's key for the node: nodeKey(group, node id), unique across groups. */
  id: string;
  /** The node's own id (unique within its group), which its group mates' links report. */
  nodeId: string;
  group: string;
  /** host:port nodes of its group dial. */
  localEndpoint: string;
  /** host:port nodes of other groups dial (its group's load balancer); '' when none. */
  externalEndpoint: string;
  tls: boolean;
}

export interface WantedRoute {
  name: string;
  connectionId: string;
  refs: number;
}

/** What one node should hold. */
export class Wanted {
  /** connection id → number of routes using it. */
  readonly connections = new Map<string, number>();
  /** routeKey(name, connection) → route. */
  readonly routes = new Map<string, WantedRoute>();
}

export class RoutePlanner {
  private readonly nodes = new Map<string, PlannerNode>();
  /** `group\0nodeId` → planner key: "node/X" connection ids name X by its id within the group. */
  private readonly byGroupAndId = new Map<string, string>();
  private readonly groups = new Map<string, Set<string>>();
  /** Local subscriptions per node (step 1 applied). */
  private readonly subscribed = new Map<string, Set<string>>();
  /** Subscriptions whose step 2 is applied, per node. */
  private readonly exposed = new Map<string, Set<string>>();
  private readonly wanted = new Map<string, Wanted>();
  /** The external endpoint chosen for each group (the first registered node's, kept while it stays). */
  private readonly external = new Map<string, { endpoint: string; tls: boolean; from: string }>();
  /** Per node, the route keys and connection ids whose wanted state changed since last taken. */
  private readonly dirty = new Map<string, { routes: Set<string>; connections: Set<string> }>();
  private routeCount = 0;

  /**
   * What changed for a node since the last call: the controller diffs only these items instead
   * of the node's whole table (a full diff per event made a burst of subscriptions quadratic).
   */
  takeDirty(id: string): { routes: Set<string>; connections: Set<string> } | undefined {
    const d = this.dirty.get(id);
    this.dirty.delete(id);
    return d;
  }

  private mark(node: string, key: string, connectionId: string): void {
    let d = this.dirty.get(node);
    if (!d) this.dirty.set(node, (d = { routes: new Set(), connections: new Set() }));
    d.routes.add(key);
    d.connections.add(connectionId);
  }

  get totalRoutes(): number {
    return this.routeCount;
  }

  membersOf(group: string): ReadonlySet<string> {
    return this.groups.get(group) ?? new Set();
  }

  wantedFor(id: string): Wanted | undefined {
    return this.wanted.get(id);
  }

  subscriptionsOf(id: string): ReadonlySet<string> {
    return this.subscribed.get(id) ?? new Set();
  }

  isSubscribed(id: string, name: string): boolean {
    return this.subscribed.get(id)?.has(name) ?? false;
  }

  isExposed(id: string, name: string): boolean {
    return this.exposed.get(id)?.has(name) ?? false;
  }

  externalEndpointOf(group: string): string {
    return this.external.get(group)?.endpoint ?? '';
  }

  /** The connection toward a node, for its group mates: "node/<its node id>". */
  private connectionTo(key: string): string {
    return nodeConnectionId(this.nodes.get(key)!.nodeId);
  }

  /**
   * What a node of `holderGroup` is told to dial for a connection id, or undefined when it
   * cannot be built ("node/X" is X of the holder's own group: node ids repeat across groups).
   */
  connectionSpec(connectionId: string, holderGroup: string): ConnectionSpecMsg | undefined {
    if (connectionId.startsWith('node/')) {
      const key = this.byGroupAndId.get(`${holderGroup}\u0000${connectionId.slice(5)}`);
      const n = key === undefined ? undefined : this.nodes.get(key);
      if (!n?.localEndpoint) return undefined;
      return { id: connectionId, endpoint: n.localEndpoint, tls: n.tls, node_id: n.nodeId };
    }
    if (connectionId.startsWith('group/')) {
      const group = connectionId.slice(6);
      const ext = this.external.get(group);
      if (!ext) return undefined;
      return { id: connectionId, endpoint: ext.endpoint, tls: ext.tls, group };
    }
    return undefined;
  }

  /**
   * Adds a node, or updates its endpoints. Returns the nodes whose wanted state changed, and
   * the connection ids whose spec changed (their holders must be told again).
   */
  upsertNode(n: PlannerNode): { changed: Set<string>; respec: Set<string>; externalChanged: boolean } {
    const changed = new Set<string>();
    const respec = new Set<string>();
    const old = this.nodes.get(n.id);
    if (old && old.group !== n.group) {
      // A node that moves group is a different node as far as routes go.
      for (const id of this.removeNode(n.id)) changed.add(id);
    }
    const prev = this.nodes.get(n.id);
    this.nodes.set(n.id, { ...n });
    if (prev) {
      if (prev.localEndpoint !== n.localEndpoint || prev.tls !== n.tls) respec.add(this.connectionTo(n.id));
    } else {
      let members = this.groups.get(n.group);
      if (!members) this.groups.set(n.group, (members = new Set()));
      members.add(n.id);
      this.byGroupAndId.set(`${n.group}\u0000${n.nodeId}`, n.id);
      this.wanted.set(n.id, new Wanted());
      this.subscribed.set(n.id, new Set());
      this.exposed.set(n.id, new Set());
      // Routes toward what already exists: step 1 from its group, step 2 from the others.
      for (const x of members) {
        if (x === n.id) continue;
        for (const name of this.subscribed.get(x)!) this.addRoute(n.id, name, this.connectionTo(x));
      }
      for (const [x, names] of this.exposed) {
        const g = this.nodes.get(x)!.group;
        if (g === n.group) continue;
        for (const name of names) this.addRoute(n.id, name, groupConnectionId(g));
      }
      changed.add(n.id);
    }
    const ext = this.external.get(n.group);
    let externalChanged = false;
    if (n.externalEndpoint && (!ext || (ext.from === n.id && (ext.endpoint !== n.externalEndpoint || ext.tls !== n.tls)))) {
      if (ext) respec.add(groupConnectionId(n.group));
      this.external.set(n.group, { endpoint: n.externalEndpoint, tls: n.tls, from: n.id });
      externalChanged = true;
    }
    return { changed, respec, externalChanged };
  }

  /** Forgets a node: everything toward it and its own wanted state. Returns the nodes changed. */
  removeNode(id: string): Set<string> {
    const changed = new Set<string>();
    const n = this.nodes.get(id);
    if (!n) return changed;
    for (const name of [...this.exposed.get(id)!]) for (const c of this.unexposeRemote(id, name)) changed.add(c);
    for (const name of [...this.subscribed.get(id)!]) for (const c of this.unsubscribe(id, name)) changed.add(c);
    const w = this.wanted.get(id)!;
    this.routeCount -= w.routes.size;
    this.wanted.delete(id);
    this.dirty.delete(id);
    this.subscribed.delete(id);
    this.exposed.delete(id);
    this.nodes.delete(id);
    this.byGroupAndId.delete(`${n.group}\u0000${n.nodeId}`);
    const members = this.groups.get(n.group)!;
    members.delete(id);
    if (members.size === 0) this.groups.delete(n.group);
    const ext = this.external.get(n.group);
    if (ext?.from === id) {
      this.external.delete(n.group);
      // Another node of the group takes over as the source of the external endpoint.
      for (const m of members) {
        const other = this.nodes.get(m)!;
        if (other.externalEndpoint) {
          this.external.set(n.group, { endpoint: other.externalEndpoint, tls: other.tls, from: m });
          break;
        }
      }
    }
    return changed;
  }

  /** Step 1 for N on X. No-op (empty set) when already subscribed. */
  subscribe(x: string, name: string): Set<string> {
    const changed = new Set<string>();
    const n = this.nodes.get(x);
    const subs = this.subscribed.get(x);
    if (!n || !subs || subs.has(name)) return changed;
    subs.add(name);
    const conn = this.connectionTo(x);
    for (const y of this.groups.get(n.group)!) {
      if (y === x) continue;
      this.addRoute(y, name, conn);
      changed.add(y);
    }
    return changed;
  }

  /** Step 2 for N on X; only after step 1, and only when X's group has an external endpoint. */
  exposeRemote(x: string, name: string): Set<string> {
    const changed = new Set<string>();
    const n = this.nodes.get(x);
    if (!n || !this.subscribed.get(x)?.has(name) || this.exposed.get(x)!.has(name)) return changed;
    if (!this.external.has(n.group)) return changed;
    this.exposed.get(x)!.add(name);
    const conn = groupConnectionId(n.group);
    for (const [g, members] of this.groups) {
      if (g === n.group) continue;
      for (const z of members) {
        this.addRoute(z, name, conn);
        changed.add(z);
      }
    }
    return changed;
  }

  unexposeRemote(x: string, name: string): Set<string> {
    const changed = new Set<string>();
    const n = this.nodes.get(x);
    if (!n || !this.exposed.get(x)?.delete(name)) return changed;
    const conn = groupConnectionId(n.group);
    for (const [g, members] of this.groups) {
      if (g === n.group) continue;
      for (const z of members) {
        this.removeRoute(z, name, conn);
        changed.add(z);
      }
    }
    return changed;
  }

  /** Undoes step 1 (call unexposeRemote first). */
  unsubscribe(x: string, name: string): Set<string> {
    const changed = new Set<string>();
    const n = this.nodes.get(x);
    if (!n || !this.subscribed.get(x)?.has(name)) return changed;
    if (this.exposed.get(x)!.has(name)) for (const c of this.unexposeRemote(x, name)) changed.add(c);
    this.subscribed.get(x)!.delete(name);
    const conn = this.connectionTo(x);
    for (const y of this.groups.get(n.group)!) {
      if (y === x) continue;
      this.removeRoute(y, name, conn);
      changed.add(y);
    }
    return changed;
  }

  private addRoute(node: string, name: string, connectionId: string): void {
    const w = this.wanted.get(node)!;
    const key = routeKey(name, connectionId);
    const r = w.routes.get(key);
    if (r) {
      r.refs++;
      return;
    }
    w.routes.set(key, { name, connectionId, refs: 1 });
    this.routeCount++;
    this.mark(node, key, connectionId);
    w.connections.set(connectionId, (w.connections.get(connectionId) ?? 0) + 1);
  }

  private removeRoute(node: string, name: string, connectionId: string): void {
    const w = this.wanted.get(node);
    if (!w) return;
    const key = routeKey(name, connectionId);
    const r = w.routes.get(key);
    if (!r) return;
    if (--r.refs > 0) return;
    w.routes.delete(key);
    this.routeCount--;
    this.mark(node, key, connectionId);
    const c = (w.connections.get(connectionId) ?? 1) - 1;
    if (c > 0) w.connections.set(connectionId, c);
    else w.connections.delete(connectionId);
  }
}
