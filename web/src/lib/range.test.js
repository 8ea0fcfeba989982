import { describe, it, expect } from 'vitest';
import { planRange, chooseStep, formatStep, rangeByKey, telemetryQuery, toColumns, RANGES, MAX_BUCKETS } from './range.js';

const H = 3600e3, D = 24 * H;
const now = Date.UTC(2026, 10, 22, 10, 7, 13, 123);

describe('planRange', () => {
  it('uses raw points for 1h and 6h', () => {
    expect(planRange(H, now)).toEqual({ mode: 'raw', from: now - H, to: now, limit: 20000 });
    expect(planRange(6 * H, now).mode).toBe('raw');
  });
  it('uses 2m buckets for 24h, 15m for 7d, 1h for 30d', () => {
    expect(planRange(D, now).step).toBe('2m');
    expect(planRange(7 * D, now).step).toBe('15m');
    const p = planRange(30 * D, now);
    expect(p).toMatchObject({ mode: 'buckets', step: '1h', stepMs: H, to: now });
  });
  it('keeps every range within MAX_BUCKETS (+1 for the partial first bucket)', () => {
    for (const r of RANGES) {
      const p = planRange(r.ms, now);
      if (p.mode === 'buckets') expect((p.to - p.from) / p.stepMs).toBeLessThanOrEqual(MAX_BUCKETS + 1);
    }
  });
  it('aligns bucketed ranges to the step', () => {
    const p = planRange(30 * D, now);
    expect(p.from % p.stepMs).toBe(0);
    expect(p.from).toBeLessThanOrEqual(now - 30 * D);
    expect(now - 30 * D - p.from).toBeLessThan(p.stepMs);
  });
  it('rejects empty ranges', () => {
    expect(() => planRange(0, now)).toThrow();
  });
});

describe('steps', () => {
  it('formats in the API syntax', () => {
    expect(formatStep(60e3)).toBe('1m');
    expect(formatStep(90e3)).toBe('90s');
    expect(formatStep(15 * 60e3)).toBe('15m');
    expect(formatStep(H)).toBe('1h');
    expect(formatStep(2 * D)).toBe('2d');
  });
  it('chooses whole days beyond the list', () => {
    expect(chooseStep(3 * 365 * D)).toBe(2 * D);
    expect(chooseStep(60e3)).toBe(60e3);
  });
  it('falls back to 1h for unknown keys', () => {
    expect(rangeByKey('7d').ms).toBe(7 * D);
    expect(rangeByKey('nope').key).toBe('1h');
  });
});

describe('requests and columns', () => {
  it('builds the query for both modes', () => {
    expect(telemetryQuery('temp', planRange(H, now))).toEqual({ metric: 'temp', from: now - H, to: now, limit: 20000 });
    const q = telemetryQuery('temp', planRange(D, now));
    expect(q.step).toBe('2m');
    expect(q.limit).toBeUndefined();
  });
  it('turns points into uPlot columns in seconds', () => {
    expect(toColumns('raw', [[1000, 1], [2000, 2]])).toEqual([[1, 2], [1, 2]]);
    expect(toColumns('buckets', [[60000, 3, 1, 5, 2.5]])).toEqual([[60], [1], [2.5], [5]]);
    expect(toColumns('raw', [])).toEqual([[], []]);
  });
  it('builds 30 days of hourly buckets quickly', () => {
    const p = planRange(30 * D, now);
    const pts = [];
    for (let t = p.from; t < p.to; t += p.stepMs) pts.push([t, 10, 1, 9, 5]);
    const t0 = performance.now();
    const cols = toColumns('buckets', pts);
    expect(cols[0].length).toBe(pts.length);
    expect(pts.length).toBeLessThanOrEqual(721);
    expect(performance.now() - t0).toBeLessThan(100);
  });
});
