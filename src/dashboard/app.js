// The chorus dashboard: five pages over the HTTP API, state in the URL's
// hash (#/search?q=…), no framework. Text from the API goes into the page as
// text nodes; only a hit's `highlight`, which the server escapes, as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const COLORS = { positive: '#1f9254', neutral: '#8a94a6', negative: '#c8372d', accent: '#2f5bd3' };
const FEED_SIZE = 100;
const TABLE_ROWS = 1000;

// ---- DOM helpers -----------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function showError(id, message) {
  const node = $(id);
  node.textContent = message || '';
  node.hidden = !message;
}

const number = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));
const bytes = (n) => {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
};
const time = (micros) => new Date(micros / 1000).toLocaleString();

// ---- the API ---------------------------------------------------------------

const TOKEN_KEY = 'chorus.token';
let tokenPrompt = null;

// Asks for a token once, however many requests wait for it.
function askToken(reason) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve, reject) => {
    const dialog = $('token-dialog');
    $('token-reason').textContent = reason || '';
    $('token-input').value = '';
    const done = (token) => {
      dialog.removeEventListener('cancel', cancel);
      $('token-form').removeEventListener('submit', submit);
      if (dialog.open) dialog.close();
      tokenPrompt = null;
      if (token) { sessionStorage.setItem(TOKEN_KEY, token); resolve(token); } else reject(new Error('a token is needed'));
    };
    const submit = (event) => { event.preventDefault(); done($('token-input').value.trim()); };
    const cancel = () => done(null);
    $('token-form').addEventListener('submit', submit);
    dialog.addEventListener('cancel', cancel);
    dialog.showModal();
    $('token-input').focus();
  });
  return tokenPrompt;
}

// `fetch` with the token; a 401 asks for a token and tries again.
async function api(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.set('Authorization', `Bearer ${token}`);
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      connection('server unreachable');
      throw new Error(`the server did not answer: ${e.message}`);
    }
    if (response.status !== 401) {
      connection('');
      return response;
    }
    const reason = (await errorOf(response)).message;
    sessionStorage.removeItem(TOKEN_KEY);
    connection('token needed');
    await askToken(token ? `The token was refused: ${reason}` : reason);
  }
}

// The API's error: `{"error": …, "position"?: …}`, or the body as text.
async function errorOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error) return { message: body.error, position: body.position };
  } catch (_) { /* not JSON */ }
  return { message: `${response.status} ${response.statusText}: ${text.slice(0, 500)}` };
}

async function getJson(path, options) {
  const response = await api(path, options);
  if (!response.ok) {
    const e = await errorOf(response);
    const error = new Error(e.message);
    error.position = e.position;
    throw error;
  }
  return response.json();
}

function connection(state) {
  $('connection').textContent = state;
}

// Reads `GET /v1/stream` (server-sent events) with the token in a header,
// which EventSource cannot send; calls `onEvent(event, data)` per event.
async function readStream(query, onEvent, signal) {
  const response = await api(`/v1/stream?${query}`, { signal, headers: { Accept: 'text/event-stream' } });
  if (!response.ok) throw new Error((await errorOf(response)).message);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const chunk = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of chunk.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) onEvent(event, data.join('\n'));
    }
    if (buffer.length > 16 << 20) throw new Error('an event of more than 16 MiB');
  }
}

// ---- charts ----------------------------------------------------------------

const charts = {};

function chartWidth(node) {
  return Math.max(240, node.clientWidth || node.parentNode.clientWidth - 32);
}

// A bar chart of counts with a line of mean sentiment on a -1..1 axis.
function timeChart(node, name, onRange) {
  const options = {
    width: chartWidth(node),
    height: 220,
    cursor: { drag: { x: true, y: false, setScale: false } },
    // Each bar spans [start, start + interval): the last one ends past
    // the last start. Counts from 0.
    scales: {
      x: { time: true, range: (u, min, max) => [min, max + (u.interval || 1)] },
      y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
      compound: { range: [-1, 1] },
    },
    legend: { live: true },
    series: [
      {},
      {
        label: 'posts', stroke: COLORS.accent, fill: `${COLORS.accent}99`, width: 1,
        paths: uPlot.paths.bars({ size: [0.9, 60], align: 1 }), points: { show: false },
      },
      { label: 'mean compound', stroke: COLORS.negative, width: 2, scale: 'compound', spanGaps: true,
        value: (u, v) => (v === null || v === undefined ? '–' : v.toFixed(3)) },
    ],
    axes: [
      {},
      { label: 'posts', size: 60 },
      { scale: 'compound', side: 1, grid: { show: false }, size: 50 },
    ],
    hooks: {},
  };
  let dragged = false;
  if (onRange) {
    options.hooks.setSelect = [(u) => {
      if (u.select.width < 5) return;
      dragged = true;
      const from = u.posToVal(u.select.left, 'x');
      const to = u.posToVal(u.select.left + u.select.width, 'x');
      u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
      onRange(from, to);
    }];
  }
  const chart = new uPlot(options, [[], [], []], node);
  if (onRange) {
    chart.over.addEventListener('click', () => {
      if (dragged) { dragged = false; return; }
      // The bar under the pointer: each spans [start, start + interval).
      const xs = chart.data[0];
      if (chart.cursor.left === undefined || chart.cursor.left < 0 || !xs.length) return;
      const at = chart.posToVal(chart.cursor.left, 'x');
      const interval = chart.interval || 1;
      const i = xs.findIndex((x) => at >= x && at < x + interval);
      if (i >= 0) onRange(xs[i], xs[i] + interval);
    });
  }
  new ResizeObserver(() => chart.setSize({ width: chartWidth(node), height: 220 })).observe(node);
  charts[name] = chart;
  return chart;
}

// Draws a search answer's histogram.
function drawHistogram(chart, histogram) {
  const xs = histogram.map((b) => Date.parse(b.start) / 1000);
  chart.interval = xs.length > 1 ? xs[1] - xs[0] : chart.interval || 1;
  chart.setData([xs, histogram.map((b) => b.count), histogram.map((b) => b.mean_compound)]);
}

function drawSplit(node, sentiment) {
  const total = sentiment.positive + sentiment.neutral + sentiment.negative;
  node.replaceChildren(...['positive', 'neutral', 'negative'].map((s) => {
    const share = total ? sentiment[s] / total : 0;
    const span = el('span', { class: s, title: `${s}: ${number(sentiment[s])}` },
      share >= 0.08 ? `${s} ${Math.round(share * 100)}%` : '');
    span.style.flex = `${share} 1 0`;
    return span;
  }));
  node.setAttribute('aria-label', ['positive', 'neutral', 'negative'].map((s) => `${s} ${sentiment[s]}`).join(', '));
}

function drawCounts(node, counts, onPick) {
  node.replaceChildren(...counts.map(({ key, count }) => el('li', {},
    onPick ? el('button', { type: 'button', onclick: () => onPick(key), title: `narrow to ${key}` }, key) : el('span', {}, key),
    el('span', { class: 'muted' }, number(count)))));
  if (!counts.length) node.append(el('li', { class: 'muted' }, 'none'));
}

// A post as a list item, coloured by its sentiment.
function postItem(post, highlight) {
  const text = el('div', { class: 'text' });
  if (highlight) text.innerHTML = post.highlight; // escaped by the server
  else text.textContent = post.text;
  const link = /^https?:\/\//.test(post.url || '') ? el('a', { href: post.url, rel: 'noopener noreferrer', target: '_blank' }, 'open') : null;
  return el('li', { class: post.sentiment },
    el('div', { class: 'meta' },
      el('span', {}, `${post.platform}/${post.community || '–'}`),
      el('span', {}, post.author || '–'),
      el('time', { datetime: new Date(post.created_at / 1000).toISOString() }, time(post.created_at)),
      el('span', { class: 'score' }, `${post.sentiment} ${Number(post.vader_compound).toFixed(3)}`),
      link),
    text);
}

// ---- the router ------------------------------------------------------------

const pages = {};
let current = null;

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [name, query] = hash.split('?');
  const page = pages[name] ? name : 'live';
  const params = new URLSearchParams(query || '');
  if (current && current !== page) pages[current].leave();
  for (const p of Object.keys(pages)) $(`page-${p}`).hidden = p !== page;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const entering = current !== page;
  current = page;
  pages[page].show(params, entering);
}

// Goes to `page` with `params`; shows it again when the URL is the same.
function navigate(page, params) {
  const query = new URLSearchParams([...params].filter(([, v]) => v !== '')).toString();
  const hash = `#/${page}${query ? `?${query}` : ''}`;
  if (location.hash === hash) route(); else location.hash = hash;
}

// ---- Live ------------------------------------------------------------------

pages.live = (() => {
  let chart = null;
  let timer = null;
  let polls = 0;
  let stream = null;
  let paused = false;
  let queue = [];
  let held = 0;
  let received = [];
  let q = '';

  async function poll(generation) {
    if (generation !== polls) return;
    const query = new URLSearchParams({ since: '60m', interval: '1m', limit: '1' });
    if (q) query.set('q', q);
    try {
      const answer = await getJson(`/v1/search?${query}`);
      drawHistogram(chart, answer.histogram);
      drawSplit($('live-split'), answer.sentiment);
      drawCounts($('live-communities'), answer.communities,
        (c) => navigate('search', new URLSearchParams({ community: c, since: '60m' })));
      showError('live-error', '');
    } catch (e) {
      showError('live-error', e.message);
    }
    if (generation === polls) timer = setTimeout(() => poll(generation), 1000);
  }

  function render() {
    const now = Date.now();
    received = received.filter((t) => now - t < 10000);
    $('live-rate').textContent = `${(received.length / 10).toFixed(1)} posts/s`;
    if (paused || !queue.length) return;
    const feed = $('live-feed');
    const items = queue.slice(-FEED_SIZE).reverse().map((post) => postItem(post, false));
    queue = [];
    feed.prepend(...items);
    while (feed.children.length > FEED_SIZE) feed.lastChild.remove();
  }

  async function listen(controller) {
    const query = new URLSearchParams();
    if (q) query.set('q', q);
    while (!controller.signal.aborted) {
      try {
        $('live-notice').hidden = true;
        await readStream(query, (event, data) => {
          if (event === 'dropped') {
            $('live-notice').textContent = 'The feed fell behind the pipeline and was dropped by the server; reconnecting.';
            $('live-notice').hidden = false;
            return;
          }
          const post = JSON.parse(data);
          received.push(Date.now());
          if (paused) held++;
          queue.push(post);
          if (queue.length > FEED_SIZE) queue.splice(0, queue.length - FEED_SIZE);
          if (paused) $('live-pause').textContent = `Resume (${held} new)`;
        }, controller.signal);
      } catch (e) {
        if (controller.signal.aborted) return;
        $('live-notice').textContent = `Feed: ${e.message}; reconnecting.`;
        $('live-notice').hidden = false;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  function setPaused(value) {
    paused = value;
    held = 0;
    $('live-pause').setAttribute('aria-pressed', String(paused));
    $('live-pause').textContent = paused ? 'Resume' : 'Pause';
    if (!paused) render();
  }

  function start() {
    stop();
    poll(polls);
    stream = new AbortController();
    stream.renderer = setInterval(render, 250);
    listen(stream);
  }

  function stop() {
    polls++;
    clearTimeout(timer);
    timer = null;
    if (stream) { stream.abort(); clearInterval(stream.renderer); stream = null; }
  }

  $('live-form').addEventListener('submit', (event) => {
    event.preventDefault();
    navigate('live', new URLSearchParams({ q: $('live-q').value.trim() }));
  });
  $('live-pause').addEventListener('click', () => setPaused(!paused));

  return {
    show(params, entering) {
      if (!chart) chart = timeChart($('live-chart'), 'live', null);
      const next = params.get('q') || '';
      $('live-q').value = next;
      if (entering || next !== q || !stream) {
        q = next;
        queue = [];
        $('live-feed').replaceChildren();
        start();
      }
    },
    leave: stop,
    togglePause: () => setPaused(!paused),
  };
})();

// ---- Search ----------------------------------------------------------------

const FILTERS = ['q', 'since', 'until', 'community', 'platform', 'author', 'sentiment', 'sort'];

pages.search = (() => {
  let chart = null;
  let params = new URLSearchParams();
  let next = null;
  let running = null;

  function narrow(from, to) {
    const p = new URLSearchParams(params);
    p.set('since', new Date(from * 1000).toISOString());
    p.set('until', new Date(to * 1000).toISOString());
    navigate('search', p);
  }

  async function run(more) {
    if (running) running.abort();
    running = new AbortController();
    const query = new URLSearchParams([...params].filter(([k]) => FILTERS.includes(k)));
    query.set('limit', '20');
    if (more && next) query.set('after', next);
    $('search-summary').textContent = 'Searching…';
    try {
      const started = performance.now();
      const answer = await getJson(`/v1/search?${query}`, { signal: running.signal });
      const ms = Math.round(performance.now() - started);
      showError('search-error', '');
      next = answer.next || null;
      $('search-more').hidden = !next;
      const hits = answer.hits.map((hit) => postItem(hit, true));
      if (more) $('search-hits').append(...hits); else $('search-hits').replaceChildren(...hits);
      const shown = $('search-hits').children.length;
      $('search-summary').textContent = `${number(answer.total)} posts match; ${number(shown)} shown (${ms} ms).`;
      if (!more) {
        drawHistogram(chart, answer.histogram);
        drawSplit($('search-split'), answer.sentiment);
        const add = (key, value) => { const p = new URLSearchParams(params); p.set(key, value); navigate('search', p); };
        drawCounts($('search-terms'), answer.terms, (term) => add('q', [params.get('q'), term].filter(Boolean).join(' ')));
        drawCounts($('search-communities'), answer.communities, (c) => add('community', c));
        drawCounts($('search-authors'), answer.authors, (a) => add('author', a));
      }
    } catch (e) {
      if (e.name === 'AbortError') return;
      $('search-summary').textContent = '';
      const at = e.position === undefined ? '' : `\n${params.get('q') || ''}\n${' '.repeat(e.position)}^`;
      showError('search-error', e.message + at);
    }
  }

  const form = $('search-form');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const p = new URLSearchParams();
    for (const key of FILTERS) p.set(key, (form.elements[key].value || '').trim());
    if (p.get('sort') === 'newest') p.delete('sort');
    navigate('search', p);
  });
  $('search-clear').addEventListener('click', () => navigate('search', new URLSearchParams()));
  $('search-more').addEventListener('click', () => run(true));

  return {
    show(p) {
      if (!chart) chart = timeChart($('search-chart'), 'search', narrow);
      params = p;
      for (const key of FILTERS) form.elements[key].value = p.get(key) || (key === 'sort' ? 'newest' : '');
      run(false);
    },
    leave() { if (running) running.abort(); },
  };
})();

// ---- SQL -------------------------------------------------------------------

pages.sql = (() => {
  let result = null;
  let chart = null;

  const numeric = (type) => /^(U?Int|Float|Decimal)/.test(type);
  const temporal = (type) => /^(Timestamp|Date)/.test(type);

  function table(answer, id = 'sql-table') {
    const columns = answer.columns;
    const head = el('tr', {}, columns.map((c) => el('th', { class: numeric(c.type) ? 'n' : null, title: c.type }, c.name)));
    const body = answer.rows.slice(0, TABLE_ROWS).map((row) => el('tr', {}, columns.map((c) => {
      const v = row[c.name];
      if (v === null || v === undefined) return el('td', { class: 'null' }, 'null');
      return el('td', { class: numeric(c.type) ? 'n' : null }, typeof v === 'object' ? JSON.stringify(v) : String(v));
    })));
    return el('table', { id }, el('thead', {}, head), el('tbody', {}, body));
  }

  // The first column along x, each numeric column after it a series.
  function chartable(answer) {
    const [x, ...rest] = answer.columns;
    const ys = rest.filter((c) => numeric(c.type));
    return x && ys.length && answer.rows.length ? { x, ys } : null;
  }

  function drawChart() {
    const plan = chartable(result);
    const node = $('sql-chart');
    node.hidden = false;
    if (chart) chart.destroy();
    node.replaceChildren();
    const rows = result.rows.slice(0, TABLE_ROWS);
    const kind = temporal(plan.x.type) ? 'time' : numeric(plan.x.type) ? 'number' : 'category';
    const xs = rows.map((row, i) => {
      const v = row[plan.x.name];
      if (kind === 'time') return Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(v) ? v : `${v}Z`) / 1000;
      return kind === 'number' ? Number(v) : i;
    });
    const labels = rows.map((row) => String(row[plan.x.name]));
    const palette = [COLORS.accent, COLORS.negative, COLORS.positive, '#d08a1d', '#7a4fd0', COLORS.neutral];
    const series = plan.ys.map((c, i) => ({
      label: c.name, stroke: palette[i % palette.length], width: 2,
      fill: kind === 'category' ? `${palette[i % palette.length]}99` : undefined,
      paths: kind === 'category' ? uPlot.paths.bars({ size: [0.8 / plan.ys.length, 80] }) : undefined,
    }));
    chart = new uPlot({
      width: chartWidth(node), height: 260,
      scales: {
        x: { time: kind === 'time', distr: kind === 'category' ? 2 : 1 },
        y: kind === 'category' ? { range: (u, min, max) => [Math.min(0, min), Math.max(0, max) * 1.1 || 1] } : {},
      },
      axes: [kind === 'category' ? { values: (u, splits) => splits.map((i) => labels[i] ?? '') } : {}, { size: 60 }],
      series: [{ label: plan.x.name, value: (u, v) => (kind === 'category' ? labels[v] : v) }, ...series],
    }, [xs, ...plan.ys.map((c) => rows.map((row) => (row[c.name] === null ? null : Number(row[c.name]))))], node);
    charts.sql = chart;
  }

  async function run(sql) {
    $('sql-summary').textContent = 'Running…';
    $('sql-chart').hidden = true;
    $('sql-chart-button').disabled = true;
    try {
      const started = performance.now();
      result = await getJson('/v1/sql', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ sql }),
      });
      const ms = Math.round(performance.now() - started);
      showError('sql-error', '');
      $('sql-result').replaceChildren(table(result));
      const shown = Math.min(result.rows.length, TABLE_ROWS);
      $('sql-summary').textContent = `${number(result.rows.length)} rows${shown < result.rows.length ? `, the first ${shown} shown` : ''} (${ms} ms)`
        + (result.truncated ? `; cut short: ${result.truncated}` : '');
      const plan = chartable(result);
      $('sql-chart-button').disabled = !plan;
      $('sql-chart-button').title = plan ? 'Chart the first column against the numeric ones' : 'needs a first column and a numeric one';
    } catch (e) {
      result = null;
      $('sql-summary').textContent = '';
      $('sql-result').replaceChildren();
      showError('sql-error', e.message);
    }
  }

  $('sql-form').addEventListener('submit', (event) => {
    event.preventDefault();
    navigate('sql', new URLSearchParams({ sql: $('sql-text').value.trim() }));
  });
  $('sql-text').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $('sql-form').requestSubmit();
    }
  });
  $('sql-chart-button').addEventListener('click', drawChart);

  return {
    show(params) {
      const sql = params.get('sql') || '';
      $('sql-text').value = sql;
      if (sql) run(sql);
    },
    leave() {},
    table,
  };
})();

// ---- Status ----------------------------------------------------------------

function parseMetrics(text) {
  const values = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+) ([0-9.eE+-]+)$/.exec(line);
    if (m) values[m[1]] = Number(m[2]);
  }
  return values;
}

function definitions(node, pairs) {
  node.replaceChildren(...pairs.flatMap(([term, value]) => [el('dt', {}, term), el('dd', {}, value)]));
}

pages.status = (() => {
  let timer = null;
  let polls = 0;
  let previous = null;

  async function poll(generation) {
    if (generation !== polls) return;
    try {
      const [status, alerts, metrics] = await Promise.all([
        getJson('/v1/status'), getJson('/v1/alerts'),
        api('/metrics').then((r) => (r.ok ? r.text() : '')),
      ]);
      const now = performance.now();
      const counters = parseMetrics(metrics);
      $('status-stages').tBodies[0].replaceChildren(...status.stages.map((s) => {
        const key = `${s.topic}/${s.consumer}`;
        const before = previous ? previous.committed[key] : undefined;
        const rate = before === undefined ? null : ((s.committed - before) * 1000) / (now - previous.at);
        return el('tr', { class: s.lag > 0 ? 'lagging' : null },
          el('td', {}, s.topic), el('td', {}, s.consumer), el('td', { class: 'n' }, number(s.end)),
          el('td', { class: 'n' }, number(s.committed)), el('td', { class: 'n', 'data-lag': s.lag }, number(s.lag)),
          el('td', { class: 'n' }, rate === null ? '…' : number(Math.round(rate))));
      }));
      previous = { at: now, committed: Object.fromEntries(status.stages.map((s) => [`${s.topic}/${s.consumer}`, s.committed])) };
      definitions($('status-index'), status.index
        ? [['documents', number(status.index.documents)], ['on disk', bytes(status.index.bytes)]]
        : [['index', 'off ([index] enabled = false)']]);
      definitions($('status-archive'), status.archive
        ? [['files', number(status.archive.files)], ['bytes', bytes(status.archive.bytes)], ['dead-letter files', number(status.archive.error_files)]]
        : [['archive', 'unknown']]);
      const dead = status.stages.find((s) => s.topic === 'posts.dead');
      definitions($('status-counters'), [
        ['posts accepted', number(counters.chorus_ingest_posts_accepted_total)],
        ['posts rejected', number(counters.chorus_ingest_posts_rejected_total)],
        ['requests throttled', number(counters.chorus_ingest_requests_throttled_total)],
        ['dead letters in the log', number(dead ? dead.end : 0)],
        ['dead letters since start', number(counters.chorus_dead_letters_written_total)],
      ]);
      $('status-alerts').tBodies[0].replaceChildren(...(alerts.length ? alerts.map((a) => el('tr', { class: a.breached ? 'negative' : null },
        el('td', {}, a.name), el('td', {}, a.error ? `error: ${a.error}` : a.breached ? 'BREACHED' : 'ok'),
        el('td', { class: 'n' }, number(a.breaches)), el('td', {}, a.last_breach || '–'),
        el('td', { class: 'n' }, number(a.count)),
        el('td', { class: 'n' }, a.negative_share === null || a.negative_share === undefined ? '–' : `${(a.negative_share * 100).toFixed(1)}%`)))
        : [el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'No [[alerts]] configured.'))]));
      showError('status-error', '');
    } catch (e) {
      showError('status-error', e.message);
    }
    if (generation === polls) timer = setTimeout(() => poll(generation), 2000);
  }

  return {
    show(params, entering) {
      if (entering) { polls++; clearTimeout(timer); previous = null; poll(polls); }
    },
    leave() { polls++; clearTimeout(timer); },
  };
})();

// ---- Views -------------------------------------------------------------------

pages.views = (() => {
  let selected = '';
  let timer = null;
  let polls = 0;
  const when = (micros) => (micros ? new Date(micros / 1000).toLocaleString() : '–');

  async function showRows(name) {
    if (!name) { $('views-result').replaceChildren(); $('views-summary').textContent = ''; return; }
    try {
      const answer = await getJson(`/v1/views/${encodeURIComponent(name)}`);
      $('views-result').replaceChildren(pages.sql.table(answer, 'views-table'));
      $('views-summary').textContent = `${name}: ${number(answer.rows.length)} rows`;
      showError('views-error', '');
    } catch (e) {
      $('views-result').replaceChildren();
      showError('views-error', e.message);
    }
  }

  async function runNow(name, button) {
    button.disabled = true;
    button.textContent = 'Running…';
    try {
      const [run] = await getJson(`/v1/batch?view=${encodeURIComponent(name)}`, { method: 'POST' });
      showError('views-error', run.error ? `${name}: ${run.error}` : '');
    } catch (e) {
      showError('views-error', e.message);
    }
    await list();
    if (selected === name) await showRows(name);
  }

  async function list() {
    const views = await getJson('/v1/views');
    $('views-list').tBodies[0].replaceChildren(...(views.length ? views.map((v) => {
      const link = el('a', { href: `#/views?view=${encodeURIComponent(v.name)}` }, v.name);
      const run = el('button', { type: 'button' }, 'Run now');
      run.addEventListener('click', () => runNow(v.name, run));
      const layers = v.speed_layer ? 'batch ⊕ speed (exact now)' : `batch only${v.batch_only ? `: ${v.batch_only}` : ''}`;
      return el('tr', { class: v.error ? 'negative' : null, 'aria-current': v.name === selected ? 'true' : null },
        el('td', {}, link), el('td', {}, layers),
        el('td', { class: 'n' }, v.version ? number(v.version.rows) : '–'),
        el('td', {}, v.version ? when(v.version.finished_at) : 'never'),
        el('td', {}, `${when(v.next_run)} (${v.schedule})`),
        el('td', {}, v.error ? `FAILED: ${v.error}` : v.version ? 'ok' : '–'),
        el('td', {}, run));
    }) : [el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'No views ([batch] built_in_views = false and no [[views]]).'))]));
  }

  async function poll(generation) {
    if (generation !== polls) return;
    try {
      await list();
    } catch (e) {
      showError('views-error', e.message);
    }
    if (generation === polls) timer = setTimeout(() => poll(generation), 5000);
  }

  return {
    show(params, entering) {
      selected = params.get('view') || '';
      if (entering) { polls++; clearTimeout(timer); poll(polls); }
      showRows(selected);
    },
    leave() { polls++; clearTimeout(timer); },
  };
})();

// ---- alerts on every page ----------------------------------------------------

async function watchAlerts() {
  try {
    const alerts = await getJson('/v1/alerts');
    const breached = alerts.filter((a) => a.breached);
    const banner = $('alerts-banner');
    banner.hidden = !breached.length;
    banner.replaceChildren(...breached.map((a) => el('div', {},
      `Alert ${a.name}: ${number(a.count)} posts`,
      a.negative_share === null || a.negative_share === undefined ? '' : `, ${(a.negative_share * 100).toFixed(1)}% negative`,
      a.last_breach ? ` (since ${new Date(a.last_breach).toLocaleString()})` : '')));
  } catch (_) { /* shown by the pages */ }
  setTimeout(watchAlerts, 5000);
}

// ---- keys ------------------------------------------------------------------

document.addEventListener('keydown', (event) => {
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName) || $('token-dialog').open;
  if (event.key === 'Escape' && typing) { event.target.blur(); return; }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  const go = { 1: 'live', 2: 'search', 3: 'sql', 4: 'status', 5: 'views' }[event.key];
  if (go) { event.preventDefault(); location.hash = `#/${go}`; }
  if (event.key === '/') {
    event.preventDefault();
    if (current === 'search') $('search-q').focus();
    else {
      window.addEventListener('hashchange', () => $('search-q').focus(), { once: true });
      location.hash = '#/search';
    }
  }
  if (event.key === 'p' && current === 'live') pages.live.togglePause();
});

window.addEventListener('hashchange', route);
window.chorus = { charts, navigate };
route();
watchAlerts();
