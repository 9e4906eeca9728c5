// A node as the controller sees it, scripted: a control stream that applies commands to its
// own tables and acknowledges them (or holds them, to let a test order events), for unit tests
// of the control plane's reconciliation without processes.

import { EventEmitter } from 'node:events';
import { pino } from 'pino';
import { ControlPlane, type NodeRecord } from '../../controller/control-plane.js';
import type { ControlStream } from '../../controller/node-session.js';
import type { CommandMsg, ConnectionSpecMsg, ControllerMessage, RegisterMsg } from '../../proto/controller.js';

export class ScriptedNode extends EventEmitter {
  /** Hold commands instead of applying them (a slow node), until release(). */
  hold = false;
  held: CommandMsg[] = [];
  conns = new Map<string, ConnectionSpecMsg>();
  /** "name -> connection id" */
  routes = new Set<string>();
  subs = new Set<string>();
  ended = false;

  constructor(
    readonly id: string,
    readonly group: string,
    readonly local: string,
    readonly external: string,
  ) {
    super();
  }

  write(m: ControllerMessage): boolean {
    const cmds = m.command ? [m.command] : (m.commands?.commands ?? []);
    for (const c of cmds) {
      if (this.hold) this.held.push(c);
      else this.apply(c);
    }
    return true;
  }

  private apply(c: CommandMsg): void {
    let ok = true;
    if (c.create_connection) this.conns.set(c.create_connection.id, c.create_connection);
    else if (c.delete_connection !== undefined) {
      this.conns.delete(c.delete_connection);
      for (const r of [...this.routes]) if (r.endsWith(` -> ${c.delete_connection}`)) this.routes.delete(r);
    } else if (c.set_route) {
      if (this.conns.has(c.set_route.connection_id)) this.routes.add(`${c.set_route.name} -> ${c.set_route.connection_id}`);
      else ok = false;
    } else if (c.delete_route) this.routes.delete(`${c.delete_route.name} -> ${c.delete_route.connection_id}`);
    setImmediate(() => {
      if (!this.ended) this.emit('data', { ack: { id: c.id, success: ok, error: ok ? '' : 'no connection' } });
    });
  }

  release(): void {
    const h = this.held;
    this.held = [];
    this.hold = false;
    for (const c of h) this.apply(c);
  }

  end(): void {
    this.ended = true;
  }

  getPeer(): string {
    return this.id;
  }

  /** The node's side drops the channel. */
  drop(): void {
    this.ended = true;
    this.emit('end');
  }

  reg(): RegisterMsg {
    return {
      node_id: this.id,
      group: this.group,
      endpoints: [{ local_endpoint: this.local, external_endpoint: this.external, tls: false }],
      subscriptions: [...this.subs],
      connections: [...this.conns.values()],
      routes: [...this.routes].map((r) => {
        const [name, connection_id] = r.split(' -> ');
        return { name: name!, connection_id: connection_id! };
      }),
      static_connections: [],
      connection_states: [],
      version: 'test',
    };
  }

  /** A fresh control channel on the same node state: what a reconnect looks like. */
  reopen(): ScriptedNode {
    const n = new ScriptedNode(this.id, this.group, this.local, this.external);
    n.conns = this.conns;
    n.routes = this.routes;
    n.subs = this.subs;
    return n;
  }

  sub(name: string): void {
    this.subs.add(name);
    this.emit('data', { subscriptions: { added: [name], removed: [] } });
  }

  unsub(name: string): void {
    this.subs.delete(name);
    this.emit('data', { subscriptions: { added: [], removed: [name] } });
  }
}

export function scriptedPlane(o: Partial<ConstructorParameters<typeof ControlPlane>[0]> = {}): ControlPlane {
  return new ControlPlane(
    { heartbeatIntervalMs: 60_000, nodeGracePeriodMs: 100, commandTimeoutMs: 5_000, startupGraceMs: 0, nodeSpiffePaths: [], requireIdentity: false, ...o },
    pino({ level: 'silent' }),
  );
}

/** Registers `n` as the southbound would (reply, then the diff). */
export function registerScripted(p: ControlPlane, n: ScriptedNode, identity = ''): NodeRecord {
  const r = p.register(n.reg(), identity, n as unknown as ControlStream, n.id);
  if (!r.ok) throw new Error(r.reason);
  p.afterRegistration(r.record, [...n.subs]);
  return r.record;
}

export const tick = (ms = 20): Promise<void> => new Promise((r) => setTimeout(r, ms));
