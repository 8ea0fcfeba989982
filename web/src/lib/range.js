// Which telemetry request draws a time range: raw points for short ranges,
// buckets (count, min, max, avg) for long ones, with at most MAX_BUCKETS.

export const MAX_BUCKETS = 720;
/** The longest range still drawn from raw points. */
export const RAW_MAX_MS = 6 * 3600e3;
export const RAW_LIMIT = 20000;

const S = 1000, M = 60 * S, H = 60 * M, D = 24 * H;

export const RANGES = [
  { key: '1h', ms: H },
  { key: '6h', ms: 6 * H },
  { key: '24h', ms: D },
  { key: '7d', ms: 7 * D },
  { key: '30d', ms: 30 * D },
];

const STEPS = [M, 2 * M, 5 * M, 10 * M, 15 * M, 30 * M, H, 2 * H, 3 * H, 6 * H, 12 * H, D];

/** The range object for a key, or the default (1h) for an unknown one. */
export function rangeByKey(key) {
  return RANGES.find((r) => r.key === key) || RANGES[0];
}

/** `60000` -> "1m", `3600000` -> "1h", `90000` -> "90s" (the API's step syntax). */
export function formatStep(ms) {
  if (ms % D === 0) return `${ms / D}d`;
  if (ms % H === 0) return `${ms / H}h`;
  if (ms % M === 0) return `${ms / M}m`;
  return `${Math.max(1, Math.round(ms / S))}s`;
}

/** The smallest step from the list giving at most MAX_BUCKETS buckets. */
export function chooseStep(spanMs) {
  for (const s of STEPS) if (spanMs / s <= MAX_BUCKETS) return s;
  return Math.ceil(spanMs / MAX_BUCKETS / D) * D;
}

/**
 * Plans the request for a range ending at `now`:
 * `{mode: 'raw', from, to, limit}` or `{mode: 'buckets', from, to, stepMs, step}`.
 * Bucketed ranges start on a step boundary so buckets stay put between refreshes.
 */
export function planRange(spanMs, now) {
  if (!(spanMs > 0)) throw new RangeError('range must be positive');
  if (spanMs <= RAW_MAX_MS) return { mode: 'raw', from: now - spanMs, to: now, limit: RAW_LIMIT };
  const stepMs = chooseStep(spanMs);
  const from = Math.floor((now - spanMs) / stepMs) * stepMs;
  return { mode: 'buckets', from, to: now, stepMs, step: formatStep(stepMs) };
}

/** The query string of a telemetry request for a plan. */
export function telemetryQuery(metric, plan) {
  const q = { metric, from: plan.from, to: plan.to };
  if (plan.mode === 'raw') q.limit = plan.limit;
  else q.step = plan.step;
  return q;
}

/**
 * Turns an API answer into uPlot's columns (x in seconds).
 * raw: [[ts, v], ...] -> [xs, vs]; buckets: [[start, n, min, max, avg], ...]
 * -> [xs, min, avg, max].
 */
export function toColumns(mode, points) {
  const xs = points.map((p) => p[0] / 1000);
  if (mode === 'raw') return [xs, points.map((p) => p[1])];
  return [xs, points.map((p) => p[2]), points.map((p) => p[4]), points.map((p) => p[3])];
}
