import { describe, it, expect } from 'vitest';
import { buildQuery, withQuery, parseQuery, matchRoute, safeNext } from './url.js';

describe('queries', () => {
  it('builds and skips empty values', () => {
    expect(buildQuery({ q: 'a b', online: '', cursor: null, x: undefined, limit: 50 })).toBe('?q=a+b&limit=50');
    expect(buildQuery({})).toBe('');
    expect(withQuery('/api/v1/devices', { q: 'x&y' })).toBe('/api/v1/devices?q=x%26y');
    expect(buildQuery({ ok: false, n: 0 })).toBe('?ok=false&n=0');
  });
  it('parses', () => {
    expect(parseQuery('?q=a+b&online=true')).toEqual({ q: 'a b', online: 'true' });
    expect(parseQuery('')).toEqual({});
  });
});

describe('matchRoute', () => {
  const routes = [{ path: '/' }, { path: '/devices/:id' }, { path: '/admin/users' }, { path: '/a/:x/b/:y' }];
  it('matches static and parametrised paths', () => {
    expect(matchRoute(routes, '/').route.path).toBe('/');
    expect(matchRoute(routes, '/devices/d%3A1')).toEqual({ route: routes[1], params: { id: 'd:1' } });
    expect(matchRoute(routes, '/admin/users/').route.path).toBe('/admin/users');
    expect(matchRoute(routes, '/a/1/b/2').params).toEqual({ x: '1', y: '2' });
  });
  it('returns null for unknown paths and bad encodings', () => {
    expect(matchRoute(routes, '/devices')).toBeNull();
    expect(matchRoute(routes, '/devices/1/x')).toBeNull();
    expect(matchRoute(routes, '/devices/%E0%A4%A')).toBeNull();
  });
});

describe('safeNext', () => {
  it('accepts local paths only', () => {
    expect(safeNext('/devices/d1?range=7d')).toBe('/devices/d1?range=7d');
    expect(safeNext('//evil.example')).toBe('/');
    expect(safeNext('/\\evil.example')).toBe('/');
    expect(safeNext('https://evil.example')).toBe('/');
    expect(safeNext('/login?next=/x')).toBe('/');
    expect(safeNext(undefined)).toBe('/');
  });
});
