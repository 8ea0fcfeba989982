// Formatting of times, durations, values and sizes for display.

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** "2026-11-22 10:00:05" in local time (UTC with `utc`); "—" for null. */
export function formatTime(ms, utc = false) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  const [y, mo, da, h, mi, s] = utc
    ? [d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
    : [d.getFullYear(), d.getMonth(), d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()];
  return `${y}-${pad(mo + 1)}-${pad(da)} ${pad(h)}:${pad(mi)}:${pad(s)}`;
}

/** A duration in words: 45 s, 3 min, 2 h, 4 d. */
export function formatDuration(ms) {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

/** A window in seconds, exactly, in its largest whole unit: 90 s, 90 min, 36 h, 2 d. */
export function formatWindow(s) {
  for (const [n, unit] of [[86400, 'd'], [3600, 'h'], [60, 'min']]) {
    if (s >= n && s % n === 0) return `${s / n} ${unit}`;
  }
  return `${s} s`;
}

/** "just now", "5 s ago", "3 min ago", "in 2 h"; "never" for null. */
export function formatRelative(ms, now = Date.now()) {
  if (ms == null || !Number.isFinite(ms)) return 'never';
  const diff = now - ms;
  if (Math.abs(diff) < 2000) return 'just now';
  return diff > 0 ? `${formatDuration(diff)} ago` : `in ${formatDuration(diff)}`;
}

/** A measurement: integers as they are, others with at most 3 decimals. */
export function formatValue(v) {
  if (v == null || typeof v !== 'number' || !Number.isFinite(v)) return '—';
  if (Number.isInteger(v)) return String(v);
  const digits = Math.abs(v) >= 100 ? 1 : 3;
  return String(Number(v.toFixed(digits)));
}

/** A rate: "12.3/s". */
export function formatRate(v) {
  return v == null ? '—' : `${formatValue(Math.round(v * 10) / 10)}/s`;
}

/** 1536 -> "1.5 KiB". */
export function formatBytes(n) {
  if (n == null || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${Number(n.toFixed(1))} ${units[i]}`;
}

/** A device's latest values, `{temp: {value, ts}}` -> "hum 40 · temp 21.5", sorted. */
export function formatLatest(latest) {
  return Object.keys(latest || {})
    .sort()
    .map((k) => `${k} ${formatValue(latest[k].value)}`)
    .join(' · ');
}
