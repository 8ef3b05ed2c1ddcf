// The live dashboard (SPEC section 10): polls the API's own JSON endpoints every POLL_MS and
// redraws in place. No other origin is contacted; charts are uPlot (vendored).
'use strict';

const POLL_MS = 1500;
const WINDOW_S = 900;
const BUCKET_S = 10;
const CHART_HEIGHT = 200;

const COLORS = {
  average: '#1f6feb', p50: '#8250df', p99: '#cf222e',
  allowed: '#1a7f37', denied: '#cf222e', shadow_denied: '#bf8700',
};
const DASHES = [[], [6, 3], [2, 3], [8, 3, 2, 3]];
// One colour per group of a grouped chart.
const PALETTE = ['#1f6feb', '#cf222e', '#1a7f37', '#8250df', '#bf8700', '#0a7f8c', '#d1242f', '#57606a'];
// How often (in polls) a panel re-reads its type's tag keys for the group-by menu.
const TAGS_EVERY = 10;

// The 15 minutes every chart shows (unix seconds), moved on at each poll.
const frame = { from: 0, to: 0 };
const panels = new Map(); // metric type -> { section, chartEl, count, p99, chart, shape }
let limiterChart = null;
let limiterShape = '';

async function getJSON(path) {
  const resp = await fetch(path, { cache: 'no-store' });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

function isoSeconds(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function fmt(v) {
  if (v === null || v === undefined) return '–';
  if (Math.abs(v) >= 1000 || Number.isInteger(v)) return String(Math.round(v * 100) / 100);
  return v.toPrecision(4);
}

function widthOf(el) {
  return Math.max(200, Math.floor(el.clientWidth || el.parentElement.clientWidth || 300));
}

/** A uPlot chart in `el` with one line per label; recreated when the labels change. */
function chart(el, labels, data, old, oldShape) {
  const shape = labels.join('|');
  if (old && shape === oldShape) {
    old.setData(data);
    return old;
  }
  if (old) old.destroy();
  const series = [{}].concat(labels.map((label, i) => {
    const outcome = label.split(' ').pop();
    return {
      label,
      stroke: COLORS[label] || COLORS[outcome] || PALETTE[i % PALETTE.length],
      dash: DASHES[Math.floor(i / 3) % DASHES.length],
      width: 1.5,
      // A lone bucket is a dot, not an invisible line.
      points: { show: (u, si) => u.data[si].filter((v) => v !== null).length < 3, size: 5 },
    };
  }));
  return new uPlot({
    width: widthOf(el),
    height: CHART_HEIGHT,
    series,
    scales: { x: { time: true, range: () => [frame.from, frame.to] } },
    legend: { live: false },
  }, data, el);
}

function metricPanel(type) {
  let p = panels.get(type);
  if (p) return p;
  const section = document.createElement('section');
  section.className = 'panel';
  section.dataset.metric = type;
  const h = document.createElement('h2');
  h.textContent = type;
  const facts = document.createElement('div');
  facts.className = 'facts';
  facts.innerHTML = 'count (15 min): <b data-field="count">–</b> p99: <b data-field="p99">–</b>';
  // Labels (SPEC section 9): a tag filter (`key=value`, comma-separated, all must match) and
  // a group-by tag key; both apply to the count, the p99 and the chart.
  const controls = document.createElement('div');
  controls.className = 'controls';
  const filter = document.createElement('input');
  filter.type = 'text';
  filter.dataset.control = 'filter';
  filter.placeholder = 'filter: region=eu,host=web-1';
  filter.setAttribute('aria-label', `tag filter of ${type}`);
  const groupBy = document.createElement('select');
  groupBy.dataset.control = 'group_by';
  groupBy.setAttribute('aria-label', `group ${type} by tag`);
  groupBy.append(new Option('no grouping', ''));
  controls.append(filter, groupBy);
  const chartEl = document.createElement('div');
  chartEl.className = 'chart';
  section.append(h, facts, controls, chartEl);
  document.getElementById('panels').append(section);
  p = {
    section, chartEl, filter, groupBy,
    count: facts.querySelector('[data-field="count"]'),
    p99: facts.querySelector('[data-field="p99"]'),
    chart: null, shape: '', polls: 0,
  };
  panels.set(type, p);
  return p;
}

/** The query of a panel's tag filter (`&tag.k=v...`); throws on a malformed one. */
function filterQuery(text) {
  return text.split(',').map((t) => t.trim()).filter((t) => t !== '').map((t) => {
    const eq = t.indexOf('=');
    if (eq < 1) throw new Error(`tag filter "${t}": write key=value`);
    const key = t.slice(0, eq).trim();
    const value = t.slice(eq + 1).trim();
    return `&tag.${encodeURIComponent(key)}=${encodeURIComponent(value)}`;
  }).join('');
}

/** Fills the group-by menu with the type's tag keys, keeping the choice. */
async function refreshTagKeys(type, p) {
  const body = await getJSON(`/api/metrics/tags?metric_type=${encodeURIComponent(type)}`);
  const keys = Object.keys(body.tags || {}).filter((k) => k !== '__overflow__').sort();
  const have = Array.from(p.groupBy.options).slice(1).map((o) => o.value);
  if (keys.join('|') === have.join('|')) return;
  const chosen = p.groupBy.value;
  p.groupBy.replaceChildren(new Option('no grouping', ''), ...keys.map((k) => new Option(k, k)));
  p.groupBy.value = keys.includes(chosen) ? chosen : '';
}

function groupName(tags) {
  return Object.entries(tags).map(([k, v]) => `${k}=${v === null ? '(none)' : v}`).join(',');
}

async function refreshMetric(type, nowMs) {
  const p = metricPanel(type);
  if (p.polls++ % TAGS_EVERY === 0) await refreshTagKeys(type, p);
  const enc = encodeURIComponent(type);
  const from = encodeURIComponent(isoSeconds(nowMs - WINDOW_S * 1000));
  const tags = filterQuery(p.filter.value);
  const group = p.groupBy.value ? `&group_by=${encodeURIComponent(p.groupBy.value)}` : '';
  const [summary, series] = await Promise.all([
    getJSON(`/api/metrics/summary?metric_type=${enc}&window=${WINDOW_S}${tags}`),
    getJSON(`/api/metrics/series?metric_type=${enc}&from=${from}&bucket=${BUCKET_S}${tags}${group}`),
  ]);
  p.count.textContent = fmt(summary.count);
  p.p99.textContent = fmt(summary.p99);
  let labels;
  let data;
  if (series.groups) {
    // Grouped: the p99 of each group per bucket, on the union of the buckets.
    const xs = Array.from(new Set(series.groups.flatMap((g) => g.points.map((pt) => pt.timestamp))))
      .sort().map((ts) => [ts, Date.parse(ts) / 1000]);
    labels = series.groups.map((g) => `${groupName(g.tags)} p99`);
    data = [xs.map(([, x]) => x)].concat(series.groups.map((g) => {
      const byTs = new Map(g.points.map((pt) => [pt.timestamp, pt.p99 ?? null]));
      return xs.map(([ts]) => (byTs.has(ts) ? byTs.get(ts) : null));
    }));
  } else {
    const points = series.points || [];
    // p50 / p99 per bucket are drawn when the series points carry them.
    labels = ['average'].concat(['p50', 'p99'].filter((q) => points.some((pt) => q in pt)));
    const xs = points.map((pt) => Date.parse(pt.timestamp) / 1000);
    data = [xs].concat(labels.map((l) => points.map((pt) => (pt[l] ?? null))));
  }
  p.chart = chart(p.chartEl, labels, data, p.chart, p.shape);
  p.shape = labels.join('|');
}

async function refreshLimiter() {
  const body = await getJSON(`/api/ratelimit/decisions?window=${WINDOW_S}&bucket=${BUCKET_S}`);
  const labels = [];
  const columns = [];
  let xs = null;
  for (const [policy, outcomes] of Object.entries(body.policies || {})) {
    for (const outcome of ['allowed', 'denied', 'shadow_denied']) {
      const points = outcomes[outcome] || [];
      if (xs === null) xs = points.map((pt) => pt[0]);
      labels.push(`${policy} ${outcome}`);
      columns.push(points.map((pt) => pt[1]));
    }
  }
  const el = document.getElementById('ratelimit-chart');
  limiterChart = chart(el, labels, [xs || []].concat(columns), limiterChart, limiterShape);
  limiterShape = labels.join('|');
}

async function refreshTop() {
  const top = await getJSON(`/api/ratelimit/top?window=${WINDOW_S}&limit=10`);
  const tbody = document.querySelector('#top-clients tbody');
  const rows = top.map(({ client, denied }) => {
    const tr = document.createElement('tr');
    tr.dataset.client = client;
    const name = document.createElement('td');
    name.textContent = client;
    const n = document.createElement('td');
    n.className = 'n';
    n.textContent = String(denied);
    tr.append(name, n);
    return tr;
  });
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    tr.className = 'empty';
    tr.innerHTML = '<td colspan="2">no client denied</td>';
    rows.push(tr);
  }
  tbody.replaceChildren(...rows);
}

async function refreshBreaker() {
  const { state } = await getJSON('/external/state');
  const el = document.getElementById('breaker');
  el.textContent = state;
  el.dataset.state = state;
}

async function refreshMetrics() {
  const { types } = await getJSON('/api/metrics/types');
  const nowMs = Date.now();
  await Promise.all(types.map((t) => refreshMetric(t, nowMs)));
}

async function tick() {
  frame.to = Date.now() / 1000;
  frame.from = frame.to - WINDOW_S;
  const problem = document.getElementById('problem');
  const results = await Promise.allSettled([
    refreshMetrics(), refreshLimiter(), refreshTop(), refreshBreaker(),
  ]);
  const failed = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
  problem.textContent = failed.length ? `not updated: ${failed.join('; ')}` : '';
  document.getElementById('updated').textContent =
    `updated ${new Date().toLocaleTimeString()} (every ${POLL_MS / 1000} s)`;
  document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  setTimeout(tick, POLL_MS);
}

window.addEventListener('resize', () => {
  for (const p of panels.values()) {
    if (p.chart) p.chart.setSize({ width: widthOf(p.chartEl), height: CHART_HEIGHT });
  }
  const el = document.getElementById('ratelimit-chart');
  if (limiterChart) limiterChart.setSize({ width: widthOf(el), height: CHART_HEIGHT });
});

tick();
