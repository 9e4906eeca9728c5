// The Grafana dashboard shipped with charts/slim-controller queries only what the programs export:
// every metric name and label in its PromQL is checked against the real registries' exposition.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Registry } from 'prom-client';
import { ControllerMetrics } from '../controller/metrics.js';
import { KIND_LABELS, NodeStats, createNodeRegistry, type DropReason, type NodeGauges } from '../node/metrics.js';

const DASHBOARD_PATH = join(import.meta.dirname, '../charts/slim-controller/dashboards/slim-ts.json');
const DATASOURCE_UID = '${datasource}';
/** Labels Prometheus attaches at scrape time: never in the exposition, always on the stored series. */
const TARGET_LABELS = new Set(['job', 'instance']);
const RATE_FUNCTIONS = new Set(['rate', 'irate', 'increase']);

// ---------------------------------------------------------------------------------------------
// What the registries export

type SeriesKind = 'counter' | 'gauge' | 'histogram';
interface SeriesInfo {
  kind: SeriesKind;
  labels: Set<string>;
  sources: Set<string>;
}
/** Series name (histograms as name_bucket, name_sum, name_count) → what it is. */
type Catalog = Map<string, SeriesInfo>;

const SERIES_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+/;
const LABEL_PAIR = /([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"/g;

function addSeries(catalog: Catalog, name: string, kind: SeriesKind, labels: Iterable<string>, source: string): SeriesInfo {
  let info = catalog.get(name);
  if (!info) catalog.set(name, (info = { kind, labels: new Set(), sources: new Set() }));
  for (const l of labels) info.labels.add(l);
  info.sources.add(source);
  return info;
}

/** Reads the text exposition (and each family's declared label names, for series not observed yet). */
async function addRegistry(catalog: Catalog, registry: Registry, source: string, defaultLabels: string[]): Promise<string[]> {
  const text = await registry.metrics();
  const families: string[] = [];
  const familyKind = new Map<string, SeriesKind>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      const [, name, t] = type as unknown as [string, string, string];
      if (t !== 'counter' && t !== 'gauge' && t !== 'histogram') throw new Error(`unexpected metric type ${t} for ${name}`);
      families.push(name);
      familyKind.set(name, t);
      // prom-client keeps a metric's declared label names on the object; the typings do not show them.
      const declared = (registry.getSingleMetric(name) as unknown as { labelNames?: readonly string[] } | undefined)?.labelNames ?? [];
      const labels = [...declared, ...defaultLabels];
      if (t === 'histogram') {
        addSeries(catalog, `${name}_bucket`, 'histogram', [...labels, 'le'], source);
        addSeries(catalog, `${name}_sum`, 'histogram', labels, source);
        addSeries(catalog, `${name}_count`, 'histogram', labels, source);
      } else {
        addSeries(catalog, name, t, labels, source);
      }
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const m = SERIES_LINE.exec(line);
    if (!m) throw new Error(`unparsable exposition line: ${line}`);
    const name = m[1]!;
    const family = familyKind.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
    const kind = familyKind.get(family);
    if (!kind) throw new Error(`series ${name} has no # TYPE line`);
    const labels = [...(m[2] ?? '').matchAll(LABEL_PAIR)].map((p) => p[1]!);
    addSeries(catalog, name, kind, labels, source);
  }
  return families;
}

const gauges: NodeGauges = {
  svids: () => [{ spiffeId: 'spiffe://cluster-a.example/ns/slim/sa/slim', notAfter: new Date(Date.now() + 3_600_000), updates: 3, errors: 1 }],
  linksByKind: () => ({ app: 2, peer_in_group: 1, remote_group: 1 }),
  subscriptions: () => 5,
  queueBytes: () => 4096,
  pausedLinks: () => 1,
  bytesIn: () => 123_456,
  bytesOut: () => 654_321,
  controllers: () => [{ controller: 'https://slim-controller:46358', connected: true }],
  controlledConnections: () => ({ up: 2, connecting: 1, failing: 1 }),
  controlledRoutes: () => 7,
};

interface Exported {
  catalog: Catalog;
  /** Metric families that are the programs' own (not prom-client default metrics). */
  ownFamilies: Set<string>;
}

async function exportedMetrics(): Promise<Exported> {
  const stats = new NodeStats();
  KIND_LABELS.forEach((_, i) => {
    stats.received[i] = 10 + i;
    stats.sent[i] = 20 + i;
  });
  const reasons: DropReason[] = ['no_route', 'ttl_expired', 'no_destination', 'invalid_name', 'queue_full', 'link_closed', 'subscription_limit'];
  for (const r of reasons) stats.drop(r, 2);
  stats.countIn(stats.streamErrors, 'RESOURCE_EXHAUSTED');
  stats.countIn(stats.refusals, 'duplicate_link');
  stats.countIn(stats.tlsRefusals, 'inbound/expired');
  stats.countIn(stats.controllerCommands, 'set_route/success');
  stats.countIn(stats.controllerCommands, 'create_connection/failure');
  const nodeLabels = { node_id: 'slim-a-0', group: 'cluster-a.example' };
  const nodeRegistry = createNodeRegistry(stats, gauges, nodeLabels);

  const controller = new ControllerMetrics({ nodesByStatus: () => ({ up: 2, down: 1 }), routes: () => 4, pendingCommands: () => 1 });
  controller.convergence.observe(0.02);
  controller.commands.inc({ action: 'set_route', result: 'ok' });
  controller.commands.inc({ action: 'create_connection', result: 'timeout' });
  controller.commandLatency.observe({ action: 'set_route' }, 0.003);
  controller.registrations.inc({ result: 'accepted' });
  controller.registrations.inc({ result: 'rejected' });

  const catalog: Catalog = new Map();
  const nodeFamilies = await addRegistry(catalog, nodeRegistry, 'slim-node', Object.keys(nodeLabels));
  const controllerFamilies = await addRegistry(catalog, controller.registry, 'slim-controller', []);
  const ownFamilies = new Set(
    [...nodeFamilies.filter((n) => !n.startsWith('slim_node_')), ...controllerFamilies].filter((n) => n.startsWith('slim_')),
  );
  return { catalog, ownFamilies };
}

// ---------------------------------------------------------------------------------------------
// PromQL: enough of a parser to find every selector, its matchers and every grouping label

interface Tok {
  t: 'id' | 'num' | 'str' | 'range' | 'op' | 'var' | 'sel' | '(' | ')' | ',';
  v: string;
}

function tokenize(expr: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  const closing = (open: string, close: string): number => {
    let j = i + 1;
    while (j < expr.length && expr[j] !== close) {
      const c = expr[j]!;
      if (c === '"' || c === "'") {
        j++;
        while (j < expr.length && expr[j] !== c) j += expr[j] === '\\' ? 2 : 1;
      }
      j++;
    }
    if (j >= expr.length) throw new Error(`unclosed ${open} at ${i} in ${expr}`);
    return j;
  };
  while (i < expr.length) {
    const c = expr[i]!;
    const rest = expr.slice(i);
    let m: RegExpExecArray | null;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '{' || c === '[') {
      const j = closing(c, c === '{' ? '}' : ']');
      out.push({ t: c === '{' ? 'sel' : 'range', v: expr.slice(i + 1, j) });
      i = j + 1;
    } else if (c === '(' || c === ')' || c === ',') {
      out.push({ t: c, v: c });
      i++;
    } else if (c === '"' || c === "'") {
      const m2 = /^("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')/.exec(rest);
      if (!m2) throw new Error(`unclosed string at ${i} in ${expr}`);
      out.push({ t: 'str', v: m2[1]! });
      i += m2[1]!.length;
    } else if ((m = /^\$\{?([a-zA-Z_]\w*)\}?/.exec(rest))) {
      out.push({ t: 'var', v: m[1]! });
      i += m[0].length;
    } else if ((m = /^(?:0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:[smhdwy]|ms)?)/.exec(rest))) {
      out.push({ t: 'num', v: m[0] });
      i += m[0].length;
    } else if ((m = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(rest))) {
      out.push({ t: 'id', v: m[0] });
      i += m[0].length;
    } else if ((m = /^(?:==|!=|>=|<=|=~|!~|[-+*/%^<>])/.exec(rest))) {
      out.push({ t: 'op', v: m[0] });
      i += m[0].length;
    } else {
      throw new Error(`unexpected ${JSON.stringify(c)} at ${i} in ${expr}`);
    }
  }
  return out;
}

interface Matcher {
  label: string;
  op: string;
  value: string;
}
interface Selector {
  name: string;
  matchers: Matcher[];
  /** The function whose argument list directly holds this selector (rate, sum, ...), if any. */
  fn: string | undefined;
  /** Followed by a range (`[5m]`): a range vector. */
  range: boolean;
  tok: number;
}
interface Grouping {
  keyword: string;
  labels: string[];
  /** Token range [from, to] whose selectors the labels must be on. */
  scope: [number, number];
}
interface Parsed {
  selectors: Selector[];
  groupings: Grouping[];
  functions: string[];
}

const AGGREGATORS = new Set(['sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'count_values', 'group']);
const FUNCTIONS = new Set([
  'abs', 'absent', 'absent_over_time', 'ceil', 'changes', 'clamp', 'clamp_max', 'clamp_min', 'day_of_month', 'day_of_week', 'days_in_month',
  'delta', 'deriv', 'exp', 'floor', 'histogram_quantile', 'holt_winters', 'hour', 'idelta', 'increase', 'irate', 'label_join',
  'label_replace', 'ln', 'log2', 'log10', 'minute', 'month', 'predict_linear', 'rate', 'resets', 'round', 'scalar', 'sgn', 'sort',
  'sort_desc', 'sqrt', 'time', 'timestamp', 'vector', 'year', 'avg_over_time', 'min_over_time', 'max_over_time', 'sum_over_time',
  'count_over_time', 'quantile_over_time', 'stddev_over_time', 'stdvar_over_time', 'last_over_time', 'present_over_time',
]);
const GROUP_MODIFIERS = new Set(['by', 'without']);
const MATCH_MODIFIERS = new Set(['on', 'ignoring', 'group_left', 'group_right']);
const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'atan2', 'inf', 'nan']);

function parseMatchers(body: string, expr: string): Matcher[] {
  const out: Matcher[] = [];
  const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*(,|$)/y;
  let m: RegExpExecArray | null;
  while (re.lastIndex < body.length && (m = re.exec(body))) {
    out.push({ label: m[1]!, op: m[2]!, value: m[3]!.slice(1, -1) });
    if (m[4] === '') break;
  }
  if (body.trim() !== '' && re.lastIndex !== body.length) throw new Error(`unparsable label matchers {${body}} in ${expr}`);
  return out;
}

function parsePromQL(expr: string): Parsed {
  const toks = tokenize(expr);
  const close = new Map<number, number>();
  const open: number[] = [];
  toks.forEach((tok, i) => {
    if (tok.t === '(') open.push(i);
    if (tok.t === ')') {
      const o = open.pop();
      if (o === undefined) throw new Error(`unbalanced ) in ${expr}`);
      close.set(o, i);
    }
  });
  if (open.length) throw new Error(`unbalanced ( in ${expr}`);

  const selectors: Selector[] = [];
  const groupings: Grouping[] = [];
  const functions: string[] = [];
  const fnOfParen = new Map<number, string>();
  const stack: number[] = [];
  const labelList = (at: number, keyword: string): { labels: string[]; end: number } => {
    if (toks[at]?.t !== '(') throw new Error(`${keyword} without a label list in ${expr}`);
    const end = close.get(at)!;
    const labels = toks.slice(at + 1, end).filter((t) => t.t !== ',').map((t) => {
      if (t.t !== 'id') throw new Error(`${keyword} (...) holds ${t.v}, not a label name, in ${expr}`);
      return t.v;
    });
    return { labels, end };
  };

  for (let i = 0; i < toks.length; i++) {
    const tok = toks[i]!;
    if (tok.t === '(') {
      stack.push(i);
      continue;
    }
    if (tok.t === ')') {
      stack.pop();
      continue;
    }
    const enclosing = stack.length ? fnOfParen.get(stack[stack.length - 1]!) : undefined;
    if (tok.t === 'sel') {
      // A bare {__name__="..."} selector.
      const matchers = parseMatchers(tok.v, expr);
      const name = matchers.find((m) => m.label === '__name__' && m.op === '=')?.value;
      if (!name) throw new Error(`selector without a metric name in ${expr}`);
      selectors.push({ name, matchers, fn: enclosing, range: toks[i + 1]?.t === 'range', tok: i });
      continue;
    }
    if (tok.t !== 'id') continue;
    const word = tok.v;
    const next = toks[i + 1];
    if (AGGREGATORS.has(word)) {
      functions.push(word);
      let argOpen = i + 1;
      let pre: { keyword: string; labels: string[] } | undefined;
      if (next?.t === 'id' && GROUP_MODIFIERS.has(next.v)) {
        const { labels, end } = labelList(i + 2, next.v);
        pre = { keyword: next.v, labels };
        argOpen = end + 1;
      }
      if (toks[argOpen]?.t !== '(') throw new Error(`${word} without an argument list in ${expr}`);
      const argClose = close.get(argOpen)!;
      fnOfParen.set(argOpen, word);
      if (pre) groupings.push({ ...pre, scope: [argOpen, argClose] });
      const after = toks[argClose + 1];
      if (!pre && after?.t === 'id' && GROUP_MODIFIERS.has(after.v)) {
        const { labels } = labelList(argClose + 2, after.v);
        // Its tokens are skipped when the walk reaches them (below).
        groupings.push({ keyword: after.v, labels, scope: [argOpen, argClose] });
      }
      i = argOpen - 1;
      continue;
    }
    if (GROUP_MODIFIERS.has(word)) {
      // A trailing `by (...)` already recorded with its aggregation: skip its label list.
      const { end } = labelList(i + 1, word);
      i = end;
      continue;
    }
    if (MATCH_MODIFIERS.has(word)) {
      if (next?.t === '(') {
        const { labels, end } = labelList(i + 1, word);
        groupings.push({ keyword: word, labels, scope: [0, toks.length - 1] });
        i = end;
      }
      continue;
    }
    if (next?.t === '(') {
      if (!FUNCTIONS.has(word)) throw new Error(`unknown PromQL function ${word}() in ${expr}`);
      functions.push(word);
      fnOfParen.set(i + 1, word);
      continue;
    }
    if (KEYWORDS.has(word.toLowerCase())) continue;
    const sel = next?.t === 'sel' ? parseMatchers(next.v, expr) : [];
    const at = i;
    if (next?.t === 'sel') i++;
    selectors.push({ name: word, matchers: sel, fn: enclosing, range: toks[i + 1]?.t === 'range', tok: at });
  }
  return { selectors, groupings, functions };
}

/** Metric names an expression reads. */
function metricNames(expr: string): string[] {
  return [...new Set(parsePromQL(expr).selectors.map((s) => s.name))];
}

const labelHas = (info: SeriesInfo | undefined, label: string): boolean => TARGET_LABELS.has(label) || Boolean(info?.labels.has(label));

/** Everything wrong with one expression against what the registries export ([] when fine). */
function checkExpr(expr: string, catalog: Catalog, legend = ''): string[] {
  let parsed: Parsed;
  try {
    parsed = parsePromQL(expr);
  } catch (e) {
    return [(e as Error).message];
  }
  const problems: string[] = [];
  if (parsed.selectors.length === 0) problems.push(`no metric in ${expr}`);
  for (const s of parsed.selectors) {
    const info = catalog.get(s.name);
    if (!info) {
      problems.push(`metric ${s.name} is not exported (in ${expr})`);
      continue;
    }
    for (const m of s.matchers) {
      if (m.label !== '__name__' && !labelHas(info, m.label)) problems.push(`label ${m.label} is not on ${s.name} (in ${expr})`);
    }
    const rated = s.fn !== undefined && RATE_FUNCTIONS.has(s.fn);
    if (info.kind === 'gauge' && rated) problems.push(`${s.fn}() of gauge ${s.name} (in ${expr})`);
    if (info.kind !== 'gauge' && !rated) problems.push(`${info.kind} ${s.name} read without rate()/increase() (in ${expr})`);
    if (rated && !s.range) problems.push(`${s.fn}(${s.name}) without a range (in ${expr})`);
  }
  for (const g of parsed.groupings) {
    const inScope = parsed.selectors.filter((s) => s.tok >= g.scope[0] && s.tok <= g.scope[1]);
    for (const label of g.labels) {
      for (const s of inScope) {
        if (catalog.has(s.name) && !labelHas(catalog.get(s.name), label)) problems.push(`${g.keyword} (${label}): not a label of ${s.name} (in ${expr})`);
      }
    }
  }
  // Legend {{label}}s must survive the aggregation (or be on the selectors when nothing aggregates).
  const legendLabels = [...legend.matchAll(/\{\{\s*([a-zA-Z_]\w*)\s*\}\}/g)].map((m) => m[1]!);
  const kept = parsed.groupings.some((g) => g.keyword === 'by')
    ? new Set(parsed.groupings.filter((g) => g.keyword === 'by').flatMap((g) => g.labels))
    : new Set(parsed.selectors.flatMap((s) => [...(catalog.get(s.name)?.labels ?? [])]));
  for (const l of legendLabels) if (!kept.has(l) && !TARGET_LABELS.has(l)) problems.push(`legend {{${l}}} is not a label of the result of ${expr}`);
  return problems;
}

// ---------------------------------------------------------------------------------------------
// The dashboard

interface Target {
  refId?: string;
  expr?: string;
  legendFormat?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id?: number;
  type?: string;
  title?: string;
  description?: string;
  datasource?: { type?: string; uid?: string };
  gridPos?: { x: number; y: number; w: number; h: number };
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  name: string;
  type: string;
  query?: string | { query?: string };
  definition?: string;
  multi?: boolean;
  includeAll?: boolean;
  datasource?: { type?: string; uid?: string };
}
interface Dashboard {
  uid?: string;
  title?: string;
  schemaVersion?: number;
  panels?: Panel[];
  templating?: { list?: Variable[] };
}

const allPanels = (d: Dashboard): Panel[] => (d.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])]);
const varQuery = (v: Variable): string => (typeof v.query === 'string' ? v.query : (v.query?.query ?? ''));
const VAR_REF = /\$\{([a-zA-Z_]\w*)(?::[a-zA-Z]+)?\}|\$([a-zA-Z_]\w*)|\[\[([a-zA-Z_]\w*)(?::[a-zA-Z]+)?\]\]/g;
const varRefs = (s: string): string[] => [...s.matchAll(VAR_REF)].map((m) => (m[1] ?? m[2] ?? m[3])!);

/** Every problem with the dashboard: structure, variables, and each query against the registries. */
function checkDashboard(d: Dashboard, catalog: Catalog): string[] {
  const problems: string[] = [];
  const vars = new Map((d.templating?.list ?? []).map((v) => [v.name, v]));
  const defined = (name: string): boolean => name.startsWith('__') || vars.has(name);
  const checkRefs = (s: string, where: string): void => {
    for (const r of varRefs(s)) if (!defined(r)) problems.push(`${where}: undefined variable $${r}`);
  };
  const multiValued = (name: string): boolean => Boolean(vars.get(name)?.multi || vars.get(name)?.includeAll);
  const checkSelectorVars = (expr: string, where: string): void => {
    let parsed: Parsed;
    try {
      parsed = parsePromQL(expr);
    } catch {
      return; // reported by checkExpr
    }
    for (const s of parsed.selectors) {
      for (const m of s.matchers) {
        if (varRefs(m.value).some(multiValued) && m.op !== '=~' && m.op !== '!~') {
          problems.push(`${where}: multi-value variable in ${m.label}${m.op}"${m.value}" needs =~`);
        }
      }
    }
  };

  // Variables: the data source, and label_values() queries on real metrics and labels.
  const ds = vars.get('datasource');
  if (ds?.type !== 'datasource' || ds.query !== 'prometheus') problems.push('no Prometheus datasource variable named datasource');
  for (const v of vars.values()) {
    if (v.type !== 'query') continue;
    const q = varQuery(v);
    checkRefs(q, `variable ${v.name}`);
    if (v.datasource?.uid !== DATASOURCE_UID) problems.push(`variable ${v.name}: datasource is not ${DATASOURCE_UID}`);
    const lv = /^label_values\((.+),\s*([a-zA-Z_]\w*)\s*\)$/.exec(q);
    if (!lv) {
      problems.push(`variable ${v.name}: not a label_values() query: ${q}`);
      continue;
    }
    const [, selector, label] = lv as unknown as [string, string, string];
    problems.push(...checkExpr(selector, catalog).map((p) => `variable ${v.name}: ${p}`));
    checkSelectorVars(selector, `variable ${v.name}`);
    for (const name of metricNames(selector)) {
      if (catalog.has(name) && !labelHas(catalog.get(name), label)) problems.push(`variable ${v.name}: label ${label} is not on ${name}`);
    }
  }

  // Panels.
  const ids = new Set<number>();
  const placed: { id: number; g: { x: number; y: number; w: number; h: number } }[] = [];
  for (const p of allPanels(d)) {
    const where = `panel ${p.id} "${p.title}"`;
    if (typeof p.id !== 'number') problems.push(`${where}: no numeric id`);
    else if (ids.has(p.id)) problems.push(`${where}: duplicate id`);
    else ids.add(p.id);
    if (p.datasource?.uid !== DATASOURCE_UID || p.datasource.type !== 'prometheus') problems.push(`${where}: datasource is not the ${DATASOURCE_UID} Prometheus variable`);
    const g = p.gridPos;
    if (!g || ![g.x, g.y, g.w, g.h].every((n) => Number.isInteger(n) && n >= 0) || g.w < 1 || g.h < 1 || g.x + g.w > 24) {
      problems.push(`${where}: missing or invalid gridPos`);
    } else {
      for (const o of placed) {
        if (g.x < o.g.x + o.g.w && o.g.x < g.x + g.w && g.y < o.g.y + o.g.h && o.g.y < g.y + g.h) problems.push(`${where}: overlaps panel ${o.id}`);
      }
      placed.push({ id: p.id ?? -1, g });
    }
    checkRefs(`${p.title ?? ''} ${p.description ?? ''}`, where);
    if (p.type === 'row') continue;
    const targets = p.targets ?? [];
    if (targets.length === 0) problems.push(`${where}: no queries`);
    const refIds = new Set<string>();
    for (const t of targets) {
      const tw = `${where} target ${t.refId}`;
      if (!t.refId || refIds.has(t.refId)) problems.push(`${tw}: missing or duplicate refId`);
      refIds.add(t.refId ?? '');
      if (t.datasource && t.datasource.uid !== DATASOURCE_UID) problems.push(`${tw}: datasource is not ${DATASOURCE_UID}`);
      if (!t.expr) {
        problems.push(`${tw}: no expr`);
        continue;
      }
      checkRefs(t.expr, tw);
      checkRefs(t.legendFormat ?? '', tw);
      checkSelectorVars(t.expr, tw);
      problems.push(...checkExpr(t.expr, catalog, t.legendFormat).map((m) => `${tw}: ${m}`));
    }
  }
  return problems;
}

const dashboardExprs = (d: Dashboard): string[] => [
  ...allPanels(d).flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? '')),
  ...(d.templating?.list ?? []).filter((v) => v.type === 'query').map((v) => /^label_values\((.+),\s*\w+\s*\)$/.exec(varQuery(v))?.[1] ?? ''),
];
const familyOf = (series: string, families: Set<string>): string =>
  families.has(series) ? series : series.replace(/_(bucket|sum|count)$/, '');

// ---------------------------------------------------------------------------------------------

describe('Grafana dashboard (charts/slim-controller/dashboards/slim-ts.json)', () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD_PATH, 'utf8')) as Dashboard;
  let catalog: Catalog;
  let ownFamilies: Set<string>;
  beforeAll(async () => {
    ({ catalog, ownFamilies } = await exportedMetrics());
  });

  it('is an importable dashboard: uid, schema, Prometheus datasource variable, group and node_id filters, the rows', () => {
    expect(dashboard.uid).toBe('slim-ts');
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(39);
    const vars = dashboard.templating?.list ?? [];
    expect(vars.find((v) => v.name === 'datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    for (const name of ['group', 'node_id']) {
      const v = vars.find((x) => x.name === name);
      expect(v?.type).toBe('query');
      expect(varQuery(v!)).toMatch(new RegExp(`^label_values\\(.*, ${name}\\)$`));
    }
    const rows = (dashboard.panels ?? []).filter((p) => p.type === 'row').map((p) => p.title);
    expect(rows).toEqual(['Overview', 'Data plane', 'Controller', 'Identity', 'Process']);
  });

  it('the registries under test export labelled series (so label checks see real label names)', () => {
    expect(catalog.get('slim_messages_dropped_total')?.labels).toEqual(new Set(['reason', 'node_id', 'group']));
    expect(catalog.get('slim_tls_refusals_total')?.labels).toEqual(new Set(['direction', 'reason', 'node_id', 'group']));
    expect(catalog.get('slim_controller_command_ack_seconds_bucket')?.labels).toEqual(new Set(['action', 'le']));
    expect(catalog.get('slim_controller_commands_total')?.sources).toEqual(new Set(['slim-node', 'slim-controller']));
    expect(catalog.get('slim_node_process_cpu_seconds_total')?.kind).toBe('counter');
    expect(catalog.get('process_cpu_seconds_total')?.sources).toEqual(new Set(['slim-controller']));
  });

  it('passes every structural, variable, metric and label check', () => {
    expect(checkDashboard(dashboard, catalog)).toEqual([]);
  });

  it('shows every slim_* metric the programs export', () => {
    const queried = new Set(dashboardExprs(dashboard).flatMap((e) => metricNames(e)).map((s) => familyOf(s, ownFamilies)));
    const missing = [...ownFamilies].filter((f) => !queried.has(f)).sort();
    expect(missing, 'metrics exported but on no panel: add them to the dashboard').toEqual([]);
  });

  describe('the checker itself', () => {
    it('extracts metric names through functions, keywords, matchers, grouping clauses and histogram suffixes', () => {
      expect(metricNames('histogram_quantile(0.99, sum by (le, action) (rate(slim_controller_command_ack_seconds_bucket{job=~"$j"}[$__rate_interval])))')).toEqual([
        'slim_controller_command_ack_seconds_bucket',
      ]);
      expect(metricNames('sum(rate(a_sum{x="by (y)"}[5m])) by (x) / on (x) group_left sum(rate(a_count[5m])) by (x) or vector(0)')).toEqual(['a_sum', 'a_count']);
      expect(metricNames('min by (node_id) (slim_svid_expiry_timestamp_seconds offset 5m) - time() > bool 300')).toEqual(['slim_svid_expiry_timestamp_seconds']);
      expect(metricNames('{__name__="slim_links", kind="app"}')).toEqual(['slim_links']);
    });

    it('reports a metric that does not exist', () => {
      expect(checkExpr('sum(rate(slim_nonexistent_total{group=~"$group"}[5m]))', catalog)).toEqual([
        'metric slim_nonexistent_total is not exported (in sum(rate(slim_nonexistent_total{group=~"$group"}[5m])))',
      ]);
      expect(checkExpr('histogram_quantile(0.5, sum by (le) (rate(slim_controller_convergence_seconds_buckets[5m])))', catalog)).toHaveLength(1);
    });

    it('reports labels that the metric does not carry, in matchers, grouping clauses and legends', () => {
      expect(checkExpr('slim_links{colour="red"}', catalog)).toEqual(['label colour is not on slim_links (in slim_links{colour="red"})']);
      expect(checkExpr('sum by (reason) (slim_queue_bytes)', catalog)).toEqual(['by (reason): not a label of slim_queue_bytes (in sum by (reason) (slim_queue_bytes))']);
      expect(checkExpr('sum(slim_controller_pending_commands) by (node_id)', catalog)).toHaveLength(1);
      expect(checkExpr('sum by (kind) (slim_links)', catalog, '{{node_id}}')).toHaveLength(1);
      expect(checkExpr('slim_controller_nodes{job="slim-controller", status="up"}', catalog)).toEqual([]);
    });

    it('reports counters read without rate() and gauges read with it', () => {
      expect(checkExpr('sum(slim_messages_received_total)', catalog)).toHaveLength(1);
      expect(checkExpr('rate(slim_queue_bytes[5m])', catalog)).toHaveLength(1);
      expect(checkExpr('rate(slim_bytes_sent_total)', catalog)).toEqual(['rate(slim_bytes_sent_total) without a range (in rate(slim_bytes_sent_total))']);
      expect(checkExpr('sum(rte(slim_bytes_sent_total[5m]))', catalog)[0]).toMatch(/unknown PromQL function rte/);
    });

    it('fails a dashboard with a drifted metric, a duplicate id, a missing datasource, an undefined variable', () => {
      const broken = structuredClone(dashboard);
      const panels = (broken.panels ?? []).filter((p) => p.type !== 'row');
      const [first, second, third] = panels as [Panel, Panel, Panel];
      first.targets![0]!.expr = 'sum(rate(slim_messages_recieved_total{node_id=~"$node_id"}[$__rate_interval]))';
      second.id = first.id!;
      delete third.datasource;
      third.targets![0]!.expr = `${third.targets![0]!.expr} * $missing_var`;
      const problems = checkDashboard(broken, catalog);
      expect(problems.some((p) => p.includes('metric slim_messages_recieved_total is not exported'))).toBe(true);
      expect(problems.some((p) => p.endsWith('duplicate id'))).toBe(true);
      expect(problems.some((p) => p.includes(`panel ${third.id}`) && p.includes('datasource'))).toBe(true);
      expect(problems.some((p) => p.includes('undefined variable $missing_var'))).toBe(true);
    });
  });
});
