import { describe, it, expect } from 'vitest';
import { formatTime, formatRelative, formatDuration, formatValue, formatBytes, formatLatest, formatRate, formatWindow } from './format.js';

describe('times', () => {
  it('formats absolute times', () => {
    expect(formatTime(Date.UTC(2026, 10, 22, 9, 5, 7), true)).toBe('2026-11-22 09:05:07');
    expect(formatTime(0)).toMatch(/^19(69|70)-\d\d-\d\d \d\d:\d\d:\d\d$/);
    expect(formatTime(null)).toBe('—');
  });
  it('formats relative times', () => {
    const now = 1_000_000_000;
    expect(formatRelative(now, now)).toBe('just now');
    expect(formatRelative(now - 5000, now)).toBe('5 s ago');
    expect(formatRelative(now - 185_000, now)).toBe('3 min ago');
    expect(formatRelative(now - 2 * 3600e3 - 1, now)).toBe('2 h ago');
    expect(formatRelative(now - 4 * 86400e3, now)).toBe('4 d ago');
    expect(formatRelative(now + 60_000, now)).toBe('in 1 min');
    expect(formatRelative(null, now)).toBe('never');
    expect(formatRelative(undefined, now)).toBe('never');
  });
  it('formats durations', () => {
    expect(formatDuration(59_400)).toBe('59 s');
    expect(formatDuration(86400e3)).toBe('1 d');
  });
  it('formats windows exactly', () => {
    expect(formatWindow(90)).toBe('90 s');
    expect(formatWindow(1800)).toBe('30 min');
    expect(formatWindow(5400)).toBe('90 min');
    expect(formatWindow(7200)).toBe('2 h');
    expect(formatWindow(129600)).toBe('36 h');
    expect(formatWindow(172800)).toBe('2 d');
  });
});

describe('values', () => {
  it('keeps integers and trims decimals', () => {
    expect(formatValue(21)).toBe('21');
    expect(formatValue(21.5)).toBe('21.5');
    expect(formatValue(1 / 3)).toBe('0.333');
    expect(formatValue(1234.5678)).toBe('1234.6');
    expect(formatValue(-0.00001)).toBe('0');
    expect(formatValue(null)).toBe('—');
    expect(formatValue(NaN)).toBe('—');
  });
  it('formats rates and sizes', () => {
    expect(formatRate(12.34)).toBe('12.3/s');
    expect(formatRate(null)).toBe('—');
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(5 * 1024 ** 3)).toBe('5 GiB');
  });
  it('lists latest values sorted', () => {
    expect(formatLatest({ temp: { value: 21.5, ts: 1 }, hum: { value: 40, ts: 1 } })).toBe('hum 40 · temp 21.5');
    expect(formatLatest({})).toBe('');
    expect(formatLatest(null)).toBe('');
  });
});
