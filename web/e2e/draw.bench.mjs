// Times the console's device page in headless Chromium: how long a chart of
// one metric takes to be fetched and drawn. bench/console.sh runs it against
// a node holding 30 days of that metric; it runs against any node.
//
//   first load  a fresh tab opens /devices/{id}?range=30d: from the start of
//               the navigation to the chart drawn (the chart's data-drawn is
//               performance.now(), whose zero is that start);
//   click 30d   on the page at 24h, a click on "30d" to the chart drawn with
//               the 30-day buckets; then "24h" is clicked and drawn again
//               (timed too), so every click is a real fetch;
//   fetch       the 30d telemetry request inside a click, from the page's
//               resource timing (same clock): request start to response end.
//
// Env: TROUPE_URL, TROUPE_ADMIN_USER, TROUPE_ADMIN_PASSWORD (logs in through
// the page), BENCH_DEVICE (required), BENCH_METRIC (temp), BENCH_RUNS (5),
// CHROMIUM (/usr/bin/chromium). Prints one line per measurement, then
// `RESULT {json}`. Exits 1 on any failure, page error or console error.

import puppeteer from 'puppeteer-core';

const UI = (process.env.TROUPE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const ADMIN = process.env.TROUPE_ADMIN_USER || 'admin';
const ADMIN_PW = process.env.TROUPE_ADMIN_PASSWORD || '';
const DEV = process.env.BENCH_DEVICE;
const METRIC = process.env.BENCH_METRIC || 'temp';
const RUNS = Math.max(1, Number(process.env.BENCH_RUNS || 5));
const TIMEOUT = 30000; // per wait: a slow draw is a result, not a failure, up to here

if (!DEV) {
  console.error('draw.bench.mjs: BENCH_DEVICE is required');
  process.exit(2);
}

const FIG = `figure[data-metric="${METRIC}"]`;
const problems = [];

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu'],
});

function watch(page) {
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = `${m.text()} ${m.location()?.url || ''}`;
    // The login page's own probe of /api/v1/me answers 401 before logging in.
    if (/favicon|status of 401/.test(text)) return;
    problems.push(`console error: ${text}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
}

/** Waits until the chart shows range `key` (URL, figure not stale, buckets) drawn after `after`; returns data-drawn. */
async function drawnAt(page, key, after) {
  const h = await page.waitForFunction((fig, k, t) => {
    if (new URLSearchParams(location.search).get('range') !== k) return false;
    const el = document.querySelector(`${fig}:not(.stale) .chart`);
    const drawn = Number(el?.dataset.drawn);
    return drawn > t && Number(el.dataset.points) > 0 ? { drawn, points: Number(el.dataset.points), mode: el.dataset.mode } : false;
  }, { timeout: TIMEOUT, polling: 'mutation' }, FIG, key, after);
  return h.jsonValue();
}

async function clickRange(page, key) {
  const b = await page.waitForFunction((k) =>
    [...document.querySelectorAll('.ranges button')].find((e) => e.textContent.trim() === k), { timeout: TIMEOUT }, key);
  await page.evaluate(() => performance.clearResourceTimings());
  const t0 = await b.evaluate((e) => { const t = performance.now(); e.click(); return t; });
  return t0;
}

/** The page's telemetry request for `key`'s plan (step in the query), from resource timing. */
async function fetchTiming(page, step) {
  return page.evaluate((m, s) => {
    const e = performance.getEntriesByType('resource')
      .filter((r) => r.name.includes('/telemetry?') && r.name.includes(`metric=${m}`) && r.name.includes(`step=${s}`)).pop();
    return e ? { start: e.startTime, end: e.responseEnd, bytes: e.encodedBodySize, url: e.name } : null;
  }, METRIC, step);
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  const median = n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  return { median: Math.round(median), max: Math.round(s[n - 1]), runs: xs.map(Math.round) };
};

const result = { device: DEV, metric: METRIC, runs: RUNS };
let failed = null;
try {
  const ctx = await browser.createBrowserContext();

  // Log in through the page (the session cookie then serves every tab).
  const login = await ctx.newPage();
  watch(login);
  await login.goto(`${UI}/login`, { waitUntil: 'domcontentloaded' });
  await login.waitForSelector('input[name=username]', { timeout: TIMEOUT });
  await login.type('input[name=username]', ADMIN);
  await login.type('input[name=password]', ADMIN_PW);
  await login.click('form button[type=submit]');
  await login.waitForSelector(`[data-user="${ADMIN}"]`, { timeout: TIMEOUT });
  await login.close();

  // The 30d plan the page makes (the step is in the request's query).
  const { planRange, rangeByKey } = await import('../src/lib/range.js');
  const step30 = planRange(rangeByKey('30d').ms, Date.now()).step;
  const step24 = planRange(rangeByKey('24h').ms, Date.now()).step;
  result.step_30d = step30;

  // First loads: a fresh tab each time, navigation start to chart drawn.
  const first = [];
  for (let i = 0; i < RUNS; i++) {
    const page = await ctx.newPage();
    watch(page);
    await page.setViewport({ width: 1280, height: 900 });
    await page.goto(`${UI}/devices/${encodeURIComponent(DEV)}?range=30d`, { waitUntil: 'domcontentloaded' });
    const d = await drawnAt(page, '30d', 0);
    const f = await fetchTiming(page, step30);
    first.push(d.drawn);
    console.log(`first load ${i + 1}: ${Math.round(d.drawn)} ms to ${d.points} ${d.mode} drawn` +
      (f ? ` (30d fetch ${Math.round(f.start)}..${Math.round(f.end)} ms)` : ''));
    await page.close();
  }
  result.first_load_ms = stats(first);

  // Clicks, alternating ranges on one page.
  const page = await ctx.newPage();
  watch(page);
  await page.setViewport({ width: 1280, height: 900 });
  await page.goto(`${UI}/devices/${encodeURIComponent(DEV)}?range=24h`, { waitUntil: 'domcontentloaded' });
  await drawnAt(page, '24h', 0);
  const click30 = [], fetch30 = [], after30 = [], click24 = [];
  for (let i = 0; i < RUNS; i++) {
    let t0 = await clickRange(page, '30d');
    const d = await drawnAt(page, '30d', t0);
    const f = await fetchTiming(page, step30);
    click30.push(d.drawn - t0);
    result.points_30d = d.points;
    if (f) { fetch30.push(f.end - f.start); after30.push(d.drawn - f.end); result.bytes_30d = f.bytes; }
    console.log(`click 30d ${i + 1}: ${Math.round(d.drawn - t0)} ms to ${d.points} ${d.mode} drawn` +
      (f ? ` (click to request ${Math.round(f.start - t0)} ms, request ${Math.round(f.end - f.start)} ms, response to drawn ${Math.round(d.drawn - f.end)} ms, ${f.bytes} bytes)` : ' (no resource timing)'));
    t0 = await clickRange(page, '24h');
    const d24 = await drawnAt(page, '24h', t0);
    click24.push(d24.drawn - t0);
    console.log(`click 24h ${i + 1}: ${Math.round(d24.drawn - t0)} ms to ${d24.points} ${d24.mode} drawn`);
  }
  result.click_30d_ms = stats(click30);
  if (fetch30.length) result.fetch_30d_ms = stats(fetch30);
  if (after30.length) result.response_to_drawn_30d_ms = stats(after30);
  result.click_24h_ms = stats(click24);
  result.step_24h = step24;
  await page.close();
} catch (e) {
  failed = e;
} finally {
  await browser.close().catch(() => {});
}
if (problems.length) result.problems = problems;
console.log(`RESULT ${JSON.stringify(result)}`);
if (failed) {
  console.error(`draw.bench.mjs: ${String(failed.stack || failed).split('\n').slice(0, 6).join('\n  ')}`);
  process.exit(1);
}
if (problems.length) {
  console.error(`draw.bench.mjs: ${problems.join('\n  ')}`);
  process.exit(1);
}
