// The routing table: which links want messages for which names.
//
// Subscriptions are counted per (name, link). A service entry (org/ns/svc) holds the union over
// all instances, for anycast and multicast to the bare service name, and one target set per
// instance id, for messages addressed to an exact instance. Lookups on the hot path go by a hash
// of the destination's bytes in the received buffer, so no string is built for a forward.

import type { Name, RouteView } from '../proto/dataplane.js';
import { bytesEqualAt } from '../proto/wire.js';
import type { Link } from './link.js';

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function hashBytes(h: number, buf: Uint8Array, start: number, end: number): number {
  for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i]!, FNV_PRIME);
  return h;
}

function serviceHash(org: Uint8Array, ns: Uint8Array, svc: Uint8Array): number {
  let h = hashBytes(FNV_OFFSET, org, 0, org.length);
  h = Math.imul(h ^ 0xff, FNV_PRIME);
  h = hashBytes(h, ns, 0, ns.length);
  h = Math.imul(h ^ 0xff, FNV_PRIME);
  return hashBytes(h, svc, 0, svc.length) >>> 0;
}

/** Links subscribed to one name (or the union for a service), with per-class views for routing. */
export class TargetSet {
  readonly counts = new Map<Link, number>();
  /** [local apps, nodes of this group, nodes of other groups]; rebuilt lazily after a change. */
  private classes: Link[][] | null = null;
  private rr = 0;

  add(link: Link): boolean {
    const n = this.counts.get(link) ?? 0;
    this.counts.set(link, n + 1);
    if (n === 0) this.classes = null;
    return n === 0;
  }

  /** Returns true when the link's last subscription here went away. */
  remove(link: Link, all = false): boolean {
    const n = this.counts.get(link);
    if (n === undefined) return false;
    if (n > 1 && !all) {
      this.counts.set(link, n - 1);
      return false;
    }
    this.counts.delete(link);
    this.classes = null;
    return true;
  }

  get size(): number {
    return this.counts.size;
  }

  private byClass(): Link[][] {
    if (this.classes) return this.classes;
    const c: Link[][] = [[], [], []];
    for (const link of this.counts.keys()) c[link.routeClass]!.push(link);
    this.classes = c;
    return c;
  }

  /**
   * One target: local apps first, then nodes of this group, then other groups, round-robin
   * within a class. Never `from`; only classes up to `maxClass` (split horizon: see
   * Link.maxTargetClass).
   */
  pickOne(from: Link, maxClass: number): Link | undefined {
    const classes = this.byClass();
    for (let c = 0; c <= maxClass && c < 3; c++) {
      const list = classes[c]!;
      const n = list.length;
      if (n === 0) continue;
      const start = this.rr++;
      for (let i = 0; i < n; i++) {
        const link = list[(start + i) % n]!;
        if (link !== from && !link.channel.isClosed) return link;
      }
    }
    return undefined;
  }

  /** Every target of classes up to `maxClass` except `from` (multicast: one copy per link). */
  collect(from: Link, maxClass: number, out: Link[]): void {
    const classes = this.byClass();
    for (let c = 0; c <= maxClass && c < 3; c++) {
      for (const link of classes[c]!) if (link !== from && !link.channel.isClosed) out.push(link);
    }
  }
}

export class ServiceEntry {
  readonly all = new TargetSet();
  readonly byInstance = new Map<string, TargetSet>();
  readonly orgBytes: Buffer;
  readonly nsBytes: Buffer;
  readonly svcBytes: Buffer;

  constructor(
    readonly org: string,
    readonly namespace: string,
    readonly service: string,
    readonly hash: number,
  ) {
    this.orgBytes = Buffer.from(org);
    this.nsBytes = Buffer.from(namespace);
    this.svcBytes = Buffer.from(service);
  }
}

export class SubscriptionTable {
  private readonly services = new Map<number, ServiceEntry[]>();
  /** name text -> subscriptions, per link, for listing and cleanup. */
  private readonly linkNames = new Map<Link, Map<string, Name>>();
  private total = 0;

  /** Number of (name, link) pairs in force. */
  get size(): number {
    return this.total;
  }

  private entry(name: Name, create: boolean): ServiceEntry | undefined {
    const org = Buffer.from(name.org);
    const ns = Buffer.from(name.namespace);
    const svc = Buffer.from(name.service);
    const h = serviceHash(org, ns, svc);
    const bucket = this.services.get(h);
    if (bucket) {
      for (const e of bucket) {
        if (e.org === name.org && e.namespace === name.namespace && e.service === name.service) return e;
      }
    }
    if (!create) return undefined;
    const e = new ServiceEntry(name.org, name.namespace, name.service, h);
    if (bucket) bucket.push(e);
    else this.services.set(h, [e]);
    return e;
  }

  /** Adds one subscription of `link` to `name`; true when the pair is new. */
  add(name: Name, link: Link): boolean {
    const e = this.entry(name, true)!;
    e.all.add(link);
    let set = e.byInstance.get(name.instance);
    if (!set) e.byInstance.set(name.instance, (set = new TargetSet()));
    const fresh = set.add(link);
    if (fresh) {
      this.total++;
      let names = this.linkNames.get(link);
      if (!names) this.linkNames.set(link, (names = new Map()));
      names.set(nameKey(name), name);
    }
    return fresh;
  }

  /** Removes one subscription; true when the (name, link) pair is gone. */
  remove(name: Name, link: Link, all = false): boolean {
    const e = this.entry(name, false);
    const set = e?.byInstance.get(name.instance);
    if (!e || !set || !set.counts.has(link)) return false;
    const count = all ? set.counts.get(link)! : 1;
    for (let i = 0; i < count; i++) e.all.remove(link);
    const gone = set.remove(link, all);
    if (gone) {
      this.total--;
      if (set.size === 0) e.byInstance.delete(name.instance);
      if (e.all.size === 0) this.dropEntry(e);
      const names = this.linkNames.get(link);
      names?.delete(nameKey(name));
      if (names?.size === 0) this.linkNames.delete(link);
    }
    return gone;
  }

  private dropEntry(e: ServiceEntry): void {
    const bucket = this.services.get(e.hash);
    if (!bucket) return;
    const i = bucket.indexOf(e);
    if (i >= 0) bucket.splice(i, 1);
    if (bucket.length === 0) this.services.delete(e.hash);
  }

  /** Drops every subscription of a link (it disconnected); returns the names it had. */
  removeLink(link: Link): Name[] {
    const names = [...(this.linkNames.get(link)?.values() ?? [])];
    for (const n of names) this.remove(n, link, true);
    return names;
  }

  /** Distinct names `link` is subscribed to. */
  countOf(link: Link): number {
    return this.linkNames.get(link)?.size ?? 0;
  }

  hasSubscription(name: Name, link: Link): boolean {
    return this.entry(name, false)?.byInstance.get(name.instance)?.counts.has(link) ?? false;
  }

  /** The targets for the destination found by scanMessage in `buf`, or undefined. */
  lookupView(buf: Buffer, v: RouteView): TargetSet | undefined {
    let h = hashBytes(FNV_OFFSET, buf, v.orgStart, v.orgEnd);
    h = Math.imul(h ^ 0xff, FNV_PRIME);
    h = hashBytes(h, buf, v.nsStart, v.nsEnd);
    h = Math.imul(h ^ 0xff, FNV_PRIME);
    h = hashBytes(h, buf, v.svcStart, v.svcEnd) >>> 0;
    const bucket = this.services.get(h);
    if (!bucket) return undefined;
    for (const e of bucket) {
      if (
        bytesEqualAt(buf, v.orgStart, v.orgEnd, e.orgBytes) &&
        bytesEqualAt(buf, v.nsStart, v.nsEnd, e.nsBytes) &&
        bytesEqualAt(buf, v.svcStart, v.svcEnd, e.svcBytes)
      ) {
        if (v.instEnd === v.instStart) return e.all;
        return e.byInstance.get(buf.toString('utf8', v.instStart, v.instEnd));
      }
    }
    return undefined;
  }
}

export function nameKey(n: Name): string {
  return `${n.org}/${n.namespace}/${n.service}/${n.instance}`;
}
