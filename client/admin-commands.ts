// `slimctl nodes | routes | connections | subscriptions | topology [--watch]`: what the controller
// knows, from its admin API. Every command takes the same connection flags (--server, TLS,
// --timeout) and prints a table or, with -o json, the API's objects (admin.proto's field names).
//
// The admin client brings grpc-js and the identity modules; it is imported inside the actions so
// that `slimctl --help` and `slimctl svid` do not pay for loading it.

import { InvalidArgumentError, Option, type Command } from 'commander';
import { onShutdownSignal } from '../common/cli.js';
import { ConfigError, splitHostPort } from '../common/config-file.js';
import type { TlsSettings } from '../common/tls-config.js';
import type { AdminApiError, AdminClient, AdminFilter } from './admin-client.js';
import type { AdminEvent, ConnectionInfo, GroupInfo, NodeInfo, Rejection, RouteInfo, SubscriptionInfo, Topology } from '../proto/admin.js';
import { formatSpan, formatTable, outputOption, parseTimeout, type OutputFormat } from './output.js';

const DEFAULT_SERVER = '127.0.0.1:50051';
const SPIFFE_ENDPOINT_SOCKET = 'SPIFFE_ENDPOINT_SOCKET';
/** Key prefix of TLS setup errors, rewritten to flag names. */
const TLS_WHERE = 'slimctl-admin-tls';

interface ConnectionFlags {
  server: string;
  output: OutputFormat;
  timeout: number;
  insecure?: boolean;
  spiffeSocket?: string;
  trustDomain: string[];
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

interface FilterFlags {
  node?: string;
  group?: string;
}

function parseServer(value: string): string {
  // An empty SLIMCTL_SERVER means "not set".
  if (value.trim() === '') return DEFAULT_SERVER;
  if (!splitHostPort(value.trim())) throw new InvalidArgumentError('Expected host:port, e.g. 127.0.0.1:50051 or slim-control.example:50051.');
  return value.trim();
}

function parseSocket(value: string): string {
  if (!(value.startsWith('unix:') || value.startsWith('/'))) throw new InvalidArgumentError('Expected unix:/path, unix:///path or /path of a SPIFFE Workload API socket.');
  return value;
}

const TRUST_DOMAIN = /^(spiffe:\/\/)?[a-z0-9._-]+$/;

function collectTrustDomain(value: string, previous: string[]): string[] {
  if (!TRUST_DOMAIN.test(value)) throw new InvalidArgumentError('Expected a trust domain such as cluster-a.example (lowercase letters, digits, ".", "-", "_").');
  return [...previous, value];
}

/** The flags every admin command shares. */
function addConnectionOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--server <host:port>', 'address of the controller admin API').env('SLIMCTL_SERVER').default(DEFAULT_SERVER).argParser(parseServer),
    )
    .addOption(outputOption())
    .addOption(new Option('--timeout <duration>', 'deadline of each call, and how long to wait for the first SVID').argParser(parseTimeout).default(10_000, '10s'))
    .option('--insecure', 'plaintext (development only)')
    .option('--spiffe-socket <address>', `SPIFFE Workload API socket for this client's SVID and trust bundles (default: $${SPIFFE_ENDPOINT_SOCKET})`, parseSocket)
    .addOption(
      new Option('--trust-domain <td>', "with SPIFFE: a trust domain accepted for the controller besides this workload's own (repeatable)")
        .argParser(collectTrustDomain)
        .default([], 'none'),
    )
    .option('--ca-file <file>', 'PEM CA bundle to verify the controller (classic PKI; default: the system roots)')
    .option('--cert-file <file>', 'PEM client certificate (with --key-file)')
    .option('--key-file <file>', 'PEM client key (with --cert-file)');
}

function addFilterOptions(cmd: Command): Command {
  return cmd.option('--node <id>', 'only this node').option('--group <group>', 'only this group');
}

/** TLS settings from the flags; a ConfigError (exit 2) for contradictory or missing ones. */
export function tlsFromFlags(f: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): TlsSettings {
  const files = f.caFile !== undefined || f.certFile !== undefined || f.keyFile !== undefined;
  const spiffe = f.spiffeSocket !== undefined;
  if (f.insecure && (spiffe || files)) throw new ConfigError('--insecure (plaintext) contradicts --spiffe-socket / --ca-file / --cert-file / --key-file');
  if (spiffe && files) throw new ConfigError('--spiffe-socket and --ca-file/--cert-file/--key-file are two different TLS setups: pick one');
  if ((f.certFile === undefined) !== (f.keyFile === undefined)) throw new ConfigError('--cert-file and --key-file go together');
  if (f.trustDomain.length > 0 && (f.insecure || files)) throw new ConfigError('--trust-domain applies to SPIFFE TLS (--spiffe-socket or $SPIFFE_ENDPOINT_SOCKET) only');
  if (f.insecure) return { insecure: true, skipVerify: false };
  if (files) {
    return {
      insecure: false,
      skipVerify: false,
      ...(f.certFile !== undefined && f.keyFile !== undefined ? { cert: { type: 'file' as const, cert: f.certFile, key: f.keyFile, flat: true } } : {}),
      ...(f.caFile !== undefined ? { ca: { type: 'file' as const, path: f.caFile, flat: true } } : {}),
    };
  }
  const socket = f.spiffeSocket ?? env[SPIFFE_ENDPOINT_SOCKET];
  if (socket === undefined || socket === '') {
    throw new ConfigError(
      `how to reach the controller admin API securely? Pass --spiffe-socket unix:/path (or set ${SPIFFE_ENDPOINT_SOCKET}), ` +
        '--ca-file [--cert-file --key-file], or --insecure for a plaintext admin API',
    );
  }
  return {
    insecure: false,
    skipVerify: false,
    cert: { type: 'spire', socketPath: socket },
    ca: { type: 'spire', socketPath: socket, trustDomains: f.trustDomain },
  };
}

const FLAG_OF: Record<string, string> = {
  'source.socket_path': '--spiffe-socket',
  'ca_source.socket_path': '--spiffe-socket',
  cert_file: '--cert-file',
  key_file: '--key-file',
  ca_file: '--ca-file',
};

/** A TlsSetupError in flag terms; file problems are command-line problems (exit 2). */
function tlsSetupProblem(err: Error, settings: TlsSettings, f: ConnectionFlags): Error {
  const msg = err.message.replace(new RegExp(`${TLS_WHERE}\\.([\\w.]+)(\\[(\\d+)\\])?`, 'g'), (_m, key: string, _i, idx: string | undefined) => {
    if (key === 'ca_source.trust_domains') return `--trust-domain ${f.trustDomain[Number(idx)] ?? ''}`.trimEnd();
    if (key.endsWith('socket_path') && f.spiffeSocket === undefined) return `$${SPIFFE_ENDPOINT_SOCKET}`;
    return FLAG_OF[key] ?? key;
  });
  const fileProblem = settings.cert?.type === 'file' || settings.ca?.type === 'file' || /--trust-domain/.test(msg);
  return fileProblem ? new ConfigError(msg) : new Error(msg);
}

async function withClient<T>(f: ConnectionFlags, fn: (client: AdminClient) => Promise<T>): Promise<T> {
  const settings = tlsFromFlags(f);
  const { AdminClient } = await import('./admin-client.js');
  const { TlsSetupError } = await import('../identity/connection-tls.js');
  silenceIpServerNameWarning();
  let client: AdminClient;
  try {
    client = await AdminClient.connect({ server: f.server, tls: settings, timeoutMs: f.timeout, tlsWhere: TLS_WHERE });
  } catch (err) {
    if (err instanceof TlsSetupError) throw tlsSetupProblem(err, settings, f);
    throw err;
  }
  try {
    return await fn(client);
  } catch (err) {
    throw withHint(err as Error);
  } finally {
    client.close();
  }
}

/** What to do about a controller certificate this client refused for its trust domain. */
function withHint(err: Error): Error {
  const r = (err as AdminApiError).refusal;
  const td = r?.reason === 'unauthorized' ? /^spiffe:\/\/([^/]+)/.exec(r.id ?? '')?.[1] : undefined;
  return td ? new Error(`${err.message} (to accept it, pass --trust-domain ${td})`) : err;
}

/**
 * With --ca-file and an IP address, grpc-js sends the IP as TLS server name (needed for the
 * certificate's IP SAN check) and Node warns once that RFC 6066 forbids it: noise for an operator.
 */
function silenceIpServerNameWarning(): void {
  const original = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    const code = typeof args[1] === 'object' && args[1] !== null ? (args[1] as { code?: string }).code : args[2];
    if (code === 'DEP0123') return;
    original(...args);
  }) as typeof process.emitWarning;
}

function filterOf(f: FilterFlags): AdminFilter {
  return { node_id: f.node ?? '', group: f.group ?? '' };
}

function filterText(f: FilterFlags): string {
  const parts = [...(f.node ? [`node ${f.node}`] : []), ...(f.group ? [`group ${f.group}`] : [])];
  return parts.length ? ` (${parts.join(', ')})` : '';
}

function printJson(doc: unknown): void {
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
}

const dash = (s: string): string => (s === '' ? '-' : s);

/** Sorted copy by the given keys, for stable tables (JSON keeps the API's order). */
function sortedBy<T>(rows: readonly T[], ...keys: ((r: T) => string)[]): T[] {
  return [...rows].sort((a, b) => {
    for (const k of keys) {
      const c = k(a).localeCompare(k(b));
      if (c !== 0) return c;
    }
    return 0;
  });
}

/** `2s ago`, `5m 3s ago`; `-` when never. */
export function age(ms: number, now = Date.now()): string {
  if (!ms) return '-';
  return `${formatSpan(Math.max(0, now - ms))} ago`;
}

function endpoints(n: NodeInfo, which: 'local_endpoint' | 'external_endpoint'): string {
  return dash(
    n.endpoints
      .map((e) => e[which])
      .filter((e) => e !== '')
      .join(','),
  );
}

export function nodesTable(nodes: readonly NodeInfo[], now = Date.now()): string {
  return formatTable(
    ['NODE', 'GROUP', 'STATUS', 'LOCAL', 'EXTERNAL', 'SUBS', 'CONNS', 'ROUTES', 'PENDING', 'LAST-HEARTBEAT', 'IDENTITY', 'LAST-ERROR'],
    sortedBy(nodes, (n) => n.group, (n) => n.node_id).map((n) => [
      n.node_id,
      dash(n.group),
      dash(n.status),
      endpoints(n, 'local_endpoint'),
      endpoints(n, 'external_endpoint'),
      String(n.subscriptions),
      String(n.connections),
      String(n.routes),
      String(n.pending_commands),
      age(n.last_heartbeat_ms, now),
      dash(n.identity),
      dash(n.last_error),
    ]),
  );
}

export function routesTable(routes: readonly RouteInfo[]): string {
  return formatTable(
    ['NODE', 'GROUP', 'NAME', '→ TARGET (CONNECTION)', 'STATE', 'ERROR'],
    sortedBy(routes, (r) => r.group, (r) => r.node_id, (r) => r.name, (r) => r.target).map((r) => [
      r.node_id,
      dash(r.group),
      r.name,
      `→ ${dash(r.target)}${r.connection_id ? ` (${r.connection_id})` : ''}`,
      dash(r.state),
      dash(r.error),
    ]),
  );
}

export function connectionsTable(conns: readonly ConnectionInfo[]): string {
  return formatTable(
    ['NODE', 'GROUP', 'CONNECTION', 'KIND', 'ENDPOINT', 'TARGET', 'STATE', 'PEER', 'REMOTE', 'ERROR'],
    sortedBy(conns, (c) => c.group, (c) => c.node_id, (c) => c.connection_id).map((c) => [
      c.node_id,
      dash(c.group),
      dash(c.connection_id),
      dash(c.kind),
      `${dash(c.endpoint)}${c.tls ? ' (tls)' : ''}`,
      dash(c.target),
      dash(c.state),
      dash(c.peer_node_id),
      dash(c.remote_address),
      dash(c.error),
    ]),
  );
}

export function subscriptionsTable(subs: readonly SubscriptionInfo[]): string {
  return formatTable(
    ['GROUP', 'NODE', 'NAME'],
    sortedBy(subs, (s) => s.group, (s) => s.node_id, (s) => s.name).map((s) => [dash(s.group), s.node_id, s.name]),
  );
}

function groupHeader(g: GroupInfo): string {
  return [
    g.group,
    dash(g.health),
    `external ${g.external_endpoints.length ? g.external_endpoints.join(',') : '-'}`,
    `reaches ${g.reaches.length ? g.reaches.join(',') : '-'}`,
    `connections ${g.connections_up} up / ${g.connections_failing} failing`,
  ].join('  ');
}

export function topologyText(t: Topology, now = Date.now()): string {
  const groups = sortedBy(t.groups, (g) => g.group);
  if (groups.length === 0) return 'no nodes registered\n';
  return groups
    .map((g) => {
      const nodes =
        g.nodes.length === 0
          ? 'no nodes\n'
          : formatTable(
              ['NODE', 'STATUS', 'LOCAL', 'SUBS', 'CONNS', 'ROUTES', 'PENDING', 'LAST-HEARTBEAT', 'LAST-ERROR'],
              sortedBy(g.nodes, (n) => n.node_id).map((n) => [
                n.node_id,
                dash(n.status),
                endpoints(n, 'local_endpoint'),
                String(n.subscriptions),
                String(n.connections),
                String(n.routes),
                String(n.pending_commands),
                age(n.last_heartbeat_ms, now),
                dash(n.last_error),
              ]),
            );
      const indented = nodes
        .trimEnd()
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n');
      return `${groupHeader(g)}\n${indented}\n`;
    })
    .join('\n');
}

export function rejectionsTable(rows: readonly Rejection[], now = Date.now()): string {
  return formatTable(
    ['NODE', 'GROUP', 'IDENTITY', 'PEER', 'TIMES', 'LAST', 'REASON'],
    rows.map((r) => [dash(r.node_id), dash(r.group), dash(r.identity), dash(r.peer), String(r.count), age(r.last_at_ms, now), r.reason]),
  );
}

/** One line per event: time, type, node, group, detail. */
export function eventLine(e: AdminEvent): string {
  const at = e.at_ms ? new Date(e.at_ms).toISOString() : '-';
  return `${at}  ${e.type.padEnd(21)}  ${dash(e.node_id)}  ${dash(e.group)}  ${e.detail}`.trimEnd();
}

type ListCommand = 'nodes' | 'routes' | 'connections' | 'subscriptions' | 'rejections';

const LIST: Record<ListCommand, { description: string; empty: string; run: (c: AdminClient, f: AdminFilter) => Promise<unknown[]>; table: (rows: never[]) => string }> = {
  nodes: {
    description: 'nodes registered with the controller: status, endpoints, counts, last heartbeat, identity, last error',
    empty: 'no nodes registered',
    run: (c, f) => c.nodes(f),
    table: (rows: NodeInfo[]) => nodesTable(rows),
  },
  routes: {
    description: 'routes the controller computed for each node (name → target over a connection) and whether the node installed them',
    empty: 'no routes',
    run: (c, f) => c.routes(f),
    table: (rows: RouteInfo[]) => routesTable(rows),
  },
  connections: {
    description: 'node-to-node connections the controller asked for (or the nodes configured) and their state',
    empty: 'no connections',
    run: (c, f) => c.connections(f),
    table: (rows: ConnectionInfo[]) => connectionsTable(rows),
  },
  subscriptions: {
    description: 'names subscribed on each node, as the nodes reported them',
    empty: 'no subscriptions',
    run: (c, f) => c.subscriptions(f),
    table: (rows: SubscriptionInfo[]) => subscriptionsTable(rows),
  },
  rejections: {
    description: 'registrations the controller refused recently (group not the SVID\'s trust domain, node id taken, ...) and why',
    empty: 'no refused registrations',
    run: (c, f) => c.rejections(f),
    table: (rows: Rejection[]) => rejectionsTable(rows),
  },
};

/** Adds nodes, routes, connections, subscriptions and topology under `program`. */
export function addAdminCommands(program: Command): void {
  for (const name of Object.keys(LIST) as ListCommand[]) {
    const spec = LIST[name];
    const cmd = program.command(name).description(spec.description);
    addFilterOptions(addConnectionOptions(cmd)).action(async (opts: ConnectionFlags & FilterFlags) => {
      const rows = await withClient(opts, (c) => spec.run(c, filterOf(opts)));
      if (opts.output === 'json') printJson({ [name]: rows });
      else process.stdout.write(rows.length === 0 ? `${spec.empty}${filterText(opts)}\n` : spec.table(rows as never[]));
    });
  }

  addConnectionOptions(
    program
      .command('topology')
      .description('groups (clusters) with their health, external endpoints, reach and nodes; --watch follows the controller\'s events'),
  )
    .option('-w, --watch', 'then print each event as it happens, and the topology again after a node comes, goes or is removed')
    .action(async (opts: ConnectionFlags & { watch?: boolean }) => {
      if (opts.watch) {
        await watchTopology(opts);
        return;
      }
      const t = await withClient(opts, (c) => c.topology());
      if (opts.output === 'json') printJson(t);
      else process.stdout.write(topologyText(t));
    });
}

// ---- topology --watch ----

const NODE_EVENTS = new Set(['node_up', 'node_down', 'node_removed']);
/** Errors no retry will fix. */
const FATAL_KINDS = new Set(['refused', 'unsupported']);

async function watchTopology(opts: ConnectionFlags): Promise<void> {
  const json = opts.output === 'json';
  const printTopology = (t: Topology): void => {
    if (json) process.stdout.write(`${JSON.stringify({ kind: 'topology', at_ms: Date.now(), ...t })}\n`);
    else process.stdout.write(`${topologyText(t)}\n`);
  };
  const printEvent = (e: AdminEvent): void => {
    process.stdout.write(json ? `${JSON.stringify({ kind: 'event', ...e })}\n` : `${eventLine(e)}\n`);
  };
  const warn = (msg: string): void => {
    process.stderr.write(`slimctl: ${msg}\n`);
  };
  // `slimctl topology --watch | head`: the reader left, so stop quietly.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
  });

  await withClient(opts, async (client) => {
    const { Backoff } = await import('../common/backoff.js');
    const backoff = new Backoff({ initialMs: 500, maxMs: 10_000, factor: 2 });
    let stopped = false;
    let watch: { cancel(): void } | undefined;
    let retryTimer: NodeJS.Timeout | undefined;
    let fail: (err: Error) => void = () => undefined;
    let stop: () => void = () => undefined;
    const finished = new Promise<void>((resolve, reject) => {
      fail = reject;
      stop = resolve;
    });
    // A fatal watch error may come while the first topology is still being fetched.
    finished.catch(() => undefined);

    // Output in arrival order: an event's line, then (after node events) the topology fetched for it.
    let queue: Promise<void> = Promise.resolve();
    const enqueue = (task: () => Promise<void> | void): void => {
      queue = queue.then(task).catch((err: Error) => warn(err.message));
    };
    let refreshQueued = false;
    const refresh = (): void => {
      if (refreshQueued) return; // one refresh covers a burst of node events
      refreshQueued = true;
      enqueue(async () => {
        refreshQueued = false;
        if (stopped) return;
        printTopology(await client.topology());
      });
    };

    let generation = 0;
    const open = (): void => {
      const gen = ++generation;
      watch = client.watch(
        (e) => {
          if (stopped || gen !== generation) return;
          backoff.reset();
          enqueue(() => printEvent(e));
          if (NODE_EVENTS.has(e.type)) refresh();
        },
        (err: AdminApiError) => {
          if (stopped || gen !== generation) return;
          if (FATAL_KINDS.has(err.kind)) {
            fail(err);
            return;
          }
          const delay = backoff.next();
          warn(`the event stream from ${client.server} broke: ${err.details || err.message}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
          retryTimer = setTimeout(() => {
            retryTimer = undefined;
            if (stopped) return;
            open();
            // Events may have been missed meanwhile: show where things stand now.
            enqueue(async () => {
              if (stopped || gen + 1 !== generation) return;
              let t: Topology;
              try {
                t = await client.topology();
              } catch (e) {
                // Still unreachable: the new stream fails too and says so.
                if ((e as AdminApiError).kind === 'unreachable' || (e as AdminApiError).kind === 'timeout') return;
                throw e;
              }
              backoff.reset();
              warn(`event stream to ${client.server} re-established`);
              printTopology(t);
            });
          }, delay);
        },
      );
    };

    onShutdownSignal(async () => {
      stopped = true;
      if (retryTimer) clearTimeout(retryTimer);
      watch?.cancel();
      client.close();
      stop();
    });

    // The stream first, so that nothing happening while the topology is fetched is lost; events
    // that arrive meanwhile are queued behind it.
    open();
    const first = client.topology().then(printTopology);
    queue = first.catch(() => undefined);
    try {
      await first;
    } catch (err) {
      stopped = true;
      watch?.cancel();
      throw err;
    }
    await finished.finally(() => {
      stopped = true;
      if (retryTimer) clearTimeout(retryTimer);
      watch?.cancel();
    });
  });
}
