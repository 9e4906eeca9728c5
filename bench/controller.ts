// npm run bench:controller — the route planner and reconciler under a fleet: a real
// slim-controller process and 500 simulated nodes (this process; each its own grpc-js control
// channel) in 5 groups of 100. A simulated node applies nothing: it acknowledges every command
// at once, so what is measured is the controller — planning, diffing, sending, ack bookkeeping.
//
// For each subscription event (a node reporting a new local subscription) the controller must
// install 499 routes: 99 in the subscriber's group (step 1, acknowledged first), then 400 in the
// other groups (step 2). Convergence = event sent → the last of those routes set, as the
// simulated nodes see it; the controller's own histogram (slim_controller_convergence_seconds)
// is read too.
//
// Options: --nodes 500 --groups 5 --events 200 (burst) --rate 20 --seconds 10 (paced run)
//          --external SOUTH,OPS (ports of a controller started by hand, e.g. under --cpu-prof)

import * as grpc from '@grpc/grpc-js';
import { controllerClientConstructor, type ControllerMessage, type NodeMessage, type RegisterMsg } from '../proto/controller.js';
import { ProcessGroup, freePort } from '../harness/processes.js';
import { scratchDir, writeConfig } from '../harness/node-config.js';
import { arg } from './args.js';

const NODES = Number(arg('nodes', '500'));
const GROUPS = Number(arg('groups', '5'));
const EVENTS = Number(arg('events', '200'));
const RATE = Number(arg('rate', '20'));
const SECONDS = Number(arg('seconds', '10'));
const progress = (msg: string): void => void process.stderr.write(`bench: ${msg}\n`);

interface Expectation {
  expected: number;
  seen: number;
  sentAt: number;
  done(ms: number): void;
}

type ControlClient = grpc.Client & { OpenControlChannel(): grpc.ClientDuplexStream<NodeMessage, ControllerMessage> };

class SimNode {
  call!: grpc.ClientDuplexStream<NodeMessage, ControllerMessage>;
  registered!: Promise<void>;

  constructor(
    readonly id: string,
    readonly group: string,
    private readonly fleet: Fleet,
  ) {}

  open(client: ControlClient, register: RegisterMsg): void {
    this.call = client.OpenControlChannel();
    this.registered = new Promise((resolve, reject) => {
      this.call.on('data', (m: ControllerMessage) => {
        if (m.register_reply) {
          if (m.register_reply.accepted) resolve();
          else reject(new Error(`${this.id}: ${m.register_reply.reason}`));
        } else if (m.command || m.commands) {
          // Acknowledged as a real node does: the acks of one batch in one message, in order.
          const cmds = m.command ? [m.command] : m.commands!.commands;
          this.call.write(cmds.length === 1 ? { ack: { id: cmds[0]!.id, success: true, error: '' } } : { acks: { acks: cmds.map((c) => ({ id: c.id, success: true, error: '' })) } });
          for (const c of cmds) {
            if (c.set_route) this.fleet.routeChanged(c.set_route.name, 'set');
            else if (c.delete_route) this.fleet.routeChanged(c.delete_route.name, 'delete');
            this.fleet.commands++;
          }
        } else if (m.heartbeat) {
          this.call.write({ heartbeat: { sent_at_ms: Date.now() } });
        }
      });
      this.call.on('error', (err) => reject(err));
    });
    this.call.write({ register });
  }

  subscribe(name: string, added: boolean): void {
    this.call.write({ subscriptions: added ? { added: [name], removed: [] } : { added: [], removed: [name] } });
  }
}

class Fleet {
  readonly nodes: SimNode[] = [];
  commands = 0;
  private readonly waiting = new Map<string, Expectation>();

  routeChanged(name: string, kind: 'set' | 'delete'): void {
    const e = this.waiting.get(`${kind}:${name}`);
    if (!e) return;
    if (++e.seen === e.expected) {
      this.waiting.delete(`${kind}:${name}`);
      e.done(performance.now() - e.sentAt);
    }
  }

  /** Sends the event; resolves with its convergence time in ms. */
  event(node: SimNode, name: string, added: boolean): Promise<number> {
    return new Promise((resolve) => {
      this.waiting.set(`${added ? 'set' : 'delete'}:${name}`, { expected: this.nodes.length - 1, seen: 0, sentAt: performance.now(), done: resolve });
      node.subscribe(name, added);
    });
  }
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function controllerHistogram(opsPort: number): Promise<{ count: number; p99Bucket: string }> {
  const text = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
  const buckets = [...text.matchAll(/^slim_controller_convergence_seconds_bucket\{le="([^"]+)"\} (\d+)/gm)].map((m) => ({ le: m[1]!, n: Number(m[2]) }));
  const count = Number(/^slim_controller_convergence_seconds_count (\d+)/m.exec(text)?.[1] ?? 0);
  const b = buckets.find((x) => x.n >= 0.99 * count);
  return { count, p99Bucket: b ? `≤ ${b.le} s` : '?' };
}

async function controllerCpu(opsPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
  return Number(/^process_cpu_seconds_total (\S+)/m.exec(text)?.[1] ?? NaN);
}

async function main(): Promise<void> {
  const group = new ProcessGroup();
  const stop = async (): Promise<void> => {
    await group.stopAll();
  };
  process.on('SIGINT', () => void stop().then(() => process.exit(130)));
  try {
    // --external SOUTH_PORT,OPS_PORT: use a controller started by hand (e.g. under --cpu-prof).
    const external = arg('external', '');
    let south: number;
    let ops: number;
    if (external) {
      [south, ops] = external.split(',').map(Number) as [number, number];
    } else {
      const dir = scratchDir('slim-bench-controller');
      [south, ops] = [await freePort(), await freePort()];
      const cfg = writeConfig(dir, 'controller.yaml', {
        config: {
          southbound: { httpHost: '127.0.0.1', httpPort: south, tls: { insecure: true } },
          northbound: { enabled: false, httpPort: 0 },
          reconciler: { heartbeatInterval: '5s', commandTimeout: '60s', startupGrace: '0s' },
          logging: { level: 'warn' },
          observability: { endpoint: `127.0.0.1:${ops}` },
        },
      });
      const controller = group.spawn('controller', 'slim-controller', ['--config', cfg]);
      await controller.waitForLine(/slim-controller started|"level":"(warn|error)"/);
    }

    const fleet = new Fleet();
    const Ctor = controllerClientConstructor();
    // Several nodes share a channel (one HTTP/2 connection each 50 nodes): 500 sockets from one
    // process would measure this process's event loop more than the controller.
    const clients: ControlClient[] = [];
    const t0 = performance.now();
    for (let i = 0; i < NODES; i++) {
      if (i % 50 === 0) clients.push(new Ctor(`127.0.0.1:${south}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }) as unknown as ControlClient);
      const g = `group-${i % GROUPS}.example`;
      const n = new SimNode(`node-${i}`, g, fleet);
      fleet.nodes.push(n);
      n.open(clients[clients.length - 1]!, {
        node_id: n.id,
        group: g,
        endpoints: [{ local_endpoint: `10.${i % GROUPS}.${Math.floor(i / 250)}.${i % 250}:46357`, external_endpoint: `slim.${g}:46357`, tls: true }],
        subscriptions: [],
        connections: [],
        routes: [],
        static_connections: [],
        connection_states: [],
        version: 'bench',
      });
    }
    await Promise.all(fleet.nodes.map((n) => n.registered));
    const regMs = performance.now() - t0;
    progress(`${NODES} nodes in ${GROUPS} groups registered in ${regMs.toFixed(0)} ms`);

    // Burst: every event at once; events/s = events / time until the last converged.
    const cpuBefore = await controllerCpu(ops);
    const burstStart = performance.now();
    const commandsBefore = fleet.commands;
    const burst = await Promise.all(
      Array.from({ length: EVENTS }, (_, k) => fleet.event(fleet.nodes[(k * 7919) % NODES]!, `org/ns/burst-${k}`, true)),
    );
    const burstMs = performance.now() - burstStart;
    const burstCommands = fleet.commands - commandsBefore;
    // How busy the controller was: below 100 % the simulated fleet (one process) is the limit.
    const burstBusy = ((await controllerCpu(ops)) - cpuBefore) / (burstMs / 1000);
    progress(`burst: ${EVENTS} subscriptions converged in ${burstMs.toFixed(0)} ms (${burstCommands} commands)`);

    // Paced: RATE events/s for SECONDS, each converging on its own.
    const paced: Promise<number>[] = [];
    const n = RATE * SECONDS;
    const pacedStart = performance.now();
    for (let k = 0; k < n; k++) {
      const due = pacedStart + (k * 1000) / RATE;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      paced.push(fleet.event(fleet.nodes[(k * 104729) % NODES]!, `org/ns/paced-${k}`, true));
    }
    const pacedMs = await Promise.all(paced);

    // Unsubscribe the burst again: step 2 removed first, then step 1.
    const unStart = performance.now();
    const unsub = await Promise.all(Array.from({ length: EVENTS }, (_, k) => fleet.event(fleet.nodes[(k * 7919) % NODES]!, `org/ns/burst-${k}`, false)));
    const unMs = performance.now() - unStart;
    const hist = await controllerHistogram(ops);

    const rows = [
      ['registration', `${NODES} nodes`, `${((NODES / regMs) * 1000).toFixed(0)} nodes/s`, '', ''],
      [
        'subscribe, burst',
        `${EVENTS} events × ${NODES - 1} routes`,
        `${((EVENTS / burstMs) * 1000).toFixed(0)} events/s (${((burstCommands / burstMs) * 1000).toFixed(0)} commands/s, controller CPU ${(burstBusy * 100).toFixed(0)} %)`,
        `${pct(burst, 50).toFixed(1)} ms`,
        `${pct(burst, 99).toFixed(1)} ms`,
      ],
      ['subscribe, paced', `${n} events at ${RATE}/s`, `${RATE} events/s`, `${pct(pacedMs, 50).toFixed(1)} ms`, `${pct(pacedMs, 99).toFixed(1)} ms`],
      ['unsubscribe, burst', `${EVENTS} events`, `${((EVENTS / unMs) * 1000).toFixed(0)} events/s`, `${pct(unsub, 50).toFixed(1)} ms`, `${pct(unsub, 99).toFixed(1)} ms`],
    ];
    process.stdout.write(`\nroute planner: ${NODES} simulated nodes, ${GROUPS} groups (each subscription → ${NODES - 1} routes on ${NODES - 1} nodes)\n\n`);
    process.stdout.write('| run | work | rate | convergence p50 | convergence p99 |\n|---|---|---:|---:|---:|\n');
    for (const r of rows) process.stdout.write(`| ${r.join(' | ')} |\n`);
    process.stdout.write(`\ncontroller histogram: ${hist.count} subscriptions observed, p99 bucket ${hist.p99Bucket}\n`);
    for (const c of clients) c.close();
  } finally {
    await stop();
  }
}

await main();
