import { describe, it, expect } from 'vitest';
import { parseArgs, parseOptionalInt, parseNumber, parseSilenceMinutes, passwordError } from './validate.js';

describe('parseArgs', () => {
  it('accepts objects and blank input', () => {
    expect(parseArgs('{"a": 1}')).toEqual({ value: { a: 1 } });
    expect(parseArgs('  ')).toEqual({ value: {} });
  });
  it('rejects invalid JSON and non-objects', () => {
    expect(parseArgs('{a:1}').error).toMatch(/not valid JSON/);
    expect(parseArgs('[1]').error).toMatch(/object/);
    expect(parseArgs('null').error).toMatch(/object/);
    expect(parseArgs('3').error).toMatch(/object/);
  });
});

describe('numbers and passwords', () => {
  it('checks optional integers', () => {
    expect(parseOptionalInt('', 'ttl_s', 1, 10)).toEqual({ value: undefined });
    expect(parseOptionalInt(' 5 ', 'ttl_s', 1, 10)).toEqual({ value: 5 });
    expect(parseOptionalInt('0', 'ttl_s', 1, 10).error).toBe('ttl_s must be an integer from 1 to 10');
    expect(parseOptionalInt('1.5', 'ttl_s', 1, 10).error).toBeTruthy();
  });
  it('reads silence windows in minutes', () => {
    expect(parseSilenceMinutes('')).toEqual({ value: null });
    expect(parseSilenceMinutes(' 15 ')).toEqual({ value: 900 });
    expect(parseSilenceMinutes('1.5')).toEqual({ value: 90 });
    expect(parseSilenceMinutes('525600')).toEqual({ value: 31536000 });
    for (const bad of ['0', '-5', 'abc', '1e3', '525601', '0.001']) {
      expect(parseSilenceMinutes(bad).error, bad).toMatch(/silence window/);
    }
  });
  it('checks numbers', () => {
    expect(parseNumber('-2.5', 'value')).toEqual({ value: -2.5 });
    expect(parseNumber('', 'value').error).toBeTruthy();
    expect(parseNumber('abc', 'value').error).toBeTruthy();
  });
  it('checks password length', () => {
    expect(passwordError('short')).toBeTruthy();
    expect(passwordError('long enough')).toBeNull();
  });
});
