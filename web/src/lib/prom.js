// Prometheus text format (version 0.0.4): parsing and counter rates.

function parseValue(s) {
  if (s === '+Inf' || s === 'Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  const v = Number(s);
  return s.trim() === '' || Number.isNaN(v) ? undefined : v;
}

function parseLabels(s, i, labels) {
  // s[i] is just after '{'; returns the index after '}', or -1 when malformed.
  for (;;) {
    while (s[i] === ' ' || s[i] === ',') i++;
    if (s[i] === '}') return i + 1;
    const eq = s.indexOf('=', i);
    if (eq < 0 || s[eq + 1] !== '"') return -1;
    const key = s.slice(i, eq).trim();
    let j = eq + 2, val = '';
    while (j < s.length && s[j] !== '"') {
      if (s[j] === '\\' && j + 1 < s.length) {
        const c = s[++j];
        val += c === 'n' ? '\n' : c;
      } else val += s[j];
      j++;
    }
    if (j >= s.length) return -1;
    labels[key] = val;
    i = j + 1;
  }
}

/** Parses exposition text into `[{name, labels, value}]`; skips comments and bad lines. */
export function parsePrometheus(text) {
  const out = [];
  for (const raw of String(text).split('\n')) {
    const line = raw.trim();
    if (!line || line[0] === '#') continue;
    const m = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!m) continue;
    const name = m[0];
    const labels = {};
    let i = name.length;
    if (line[i] === '{') {
      i = parseLabels(line, i + 1, labels);
      if (i < 0) continue;
    }
    const value = parseValue(line.slice(i).trim().split(/\s+/)[0] || '');
    if (value === undefined) continue;
    out.push({ name, labels, value });
  }
  return out;
}

/** The series key: name{a="1",b="2"} with sorted labels. */
export function seriesKey(s) {
  const ls = Object.keys(s.labels).sort().map((k) => `${k}=${JSON.stringify(s.labels[k])}`);
  return ls.length ? `${s.name}{${ls.join(',')}}` : s.name;
}

/** The sum of every series of a metric, or null when there is none. */
export function sumMetric(samples, name) {
  let sum = null;
  for (const s of samples) if (s.name === name) sum = (sum ?? 0) + s.value;
  return sum;
}

/**
 * Per-second increase of a counter summed over its series between two scrapes
 * `{t: ms, samples}`. A series that went down was reset: its whole new value
 * counts as the increase; a new series counts from 0. Null without two
 * scrapes at different times or when the metric is absent.
 */
export function counterRate(prev, cur, name) {
  if (!prev || !cur || !(cur.t > prev.t)) return null;
  const before = new Map();
  for (const s of prev.samples) if (s.name === name) before.set(seriesKey(s), s.value);
  let inc = 0, found = false;
  for (const s of cur.samples) {
    if (s.name !== name) continue;
    found = true;
    const p = before.get(seriesKey(s)) ?? 0;
    inc += s.value >= p ? s.value - p : s.value;
  }
  return found ? inc / ((cur.t - prev.t) / 1000) : null;
}
