import { describe, it, expect } from 'vitest';
import { parsePrometheus, sumMetric, counterRate, seriesKey } from './prom.js';

const text = `# HELP troupe_http_requests_total Requests
# TYPE troupe_http_requests_total counter
troupe_http_requests_total{route="/api/v1/devices",method="GET",status="200"} 10
troupe_http_requests_total{route="/api/v1/login",method="POST",status="401"} 2

troupe_import_queue_points 7
troupe_spool_bytes 1.5e3 1700000000000
weird{msg="a \\"quoted\\", b\\\\c",x="1"} +Inf
troupe_flush_seconds_bucket{le="0.5"} NaN
broken{oops 1
also broken
`;

describe('parsePrometheus', () => {
  const s = parsePrometheus(text);
  it('reads names, labels and values, skipping comments and bad lines', () => {
    expect(s.map((x) => x.name)).toEqual([
      'troupe_http_requests_total', 'troupe_http_requests_total', 'troupe_import_queue_points',
      'troupe_spool_bytes', 'weird', 'troupe_flush_seconds_bucket',
    ]);
    expect(s[0].labels).toEqual({ route: '/api/v1/devices', method: 'GET', status: '200' });
    expect(s[3].value).toBe(1500);
  });
  it('unescapes label values and reads special values', () => {
    expect(s[4].labels.msg).toBe('a "quoted", b\\c');
    expect(s[4].value).toBe(Infinity);
    expect(Number.isNaN(s[5].value)).toBe(true);
  });
  it('sums a metric', () => {
    expect(sumMetric(s, 'troupe_http_requests_total')).toBe(12);
    expect(sumMetric(s, 'troupe_import_queue_points')).toBe(7);
    expect(sumMetric(s, 'absent')).toBeNull();
    expect(parsePrometheus('')).toEqual([]);
  });
  it('keys series independently of label order', () => {
    expect(seriesKey({ name: 'a', labels: { y: '1', x: '2' } })).toBe(seriesKey({ name: 'a', labels: { x: '2', y: '1' } }));
  });
});

describe('counterRate', () => {
  const scrape = (t, body) => ({ t, samples: parsePrometheus(body) });
  it('computes the per-second increase summed over series', () => {
    const a = scrape(0, 'c{k="a"} 10\nc{k="b"} 5');
    const b = scrape(5000, 'c{k="a"} 20\nc{k="b"} 15');
    expect(counterRate(a, b, 'c')).toBe(4);
  });
  it('treats a decrease as a counter reset', () => {
    const a = scrape(0, 'c{k="a"} 100\nc{k="b"} 5');
    const b = scrape(2000, 'c{k="a"} 6\nc{k="b"} 7');
    expect(counterRate(a, b, 'c')).toBe(4);
  });
  it('counts new series from zero', () => {
    expect(counterRate(scrape(0, 'c{k="a"} 1'), scrape(1000, 'c{k="a"} 1\nc{k="b"} 3'), 'c')).toBe(3);
  });
  it('is null without two distinct scrapes or the metric', () => {
    const a = scrape(1000, 'c 1');
    expect(counterRate(null, a, 'c')).toBeNull();
    expect(counterRate(a, a, 'c')).toBeNull();
    expect(counterRate(a, scrape(2000, 'd 1'), 'c')).toBeNull();
  });
});
