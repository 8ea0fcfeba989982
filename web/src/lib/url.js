// URL paths and query strings, and route matching for the client-side router.

/** "?a=1&b=x%20y" from an object, skipping null, undefined and ""; "" when empty. */
export function buildQuery(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v != null && v !== '') q.append(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** A path with a query. */
export function withQuery(path, params) {
  return path + buildQuery(params);
}

/** "?a=1&b=2" -> {a: '1', b: '2'} (the last value wins). */
export function parseQuery(search) {
  return Object.fromEntries(new URLSearchParams(search || ''));
}

/** A path segment, encoded. */
export const seg = (s) => encodeURIComponent(s);

/**
 * The first route whose pattern (`/devices/:id`) matches `path`:
 * `{route, params}` with decoded params, or null. A trailing slash is ignored.
 */
export function matchRoute(routes, path) {
  const parts = split(path);
  for (const route of routes) {
    const pat = split(route.path);
    if (pat.length !== parts.length) continue;
    const params = {};
    let ok = true;
    for (let i = 0; i < pat.length && ok; i++) {
      if (pat[i][0] === ':') {
        try { params[pat[i].slice(1)] = decodeURIComponent(parts[i]); } catch { ok = false; }
      } else ok = pat[i] === parts[i];
    }
    if (ok) return { route, params };
  }
  return null;
}

function split(path) {
  return path.split('/').filter(Boolean);
}

/** Where to go after logging in: a local path only (no "//host", no "http:"). */
export function safeNext(next) {
  return typeof next === 'string' && /^\/(?![/\\])/.test(next) && !next.startsWith('/login') ? next : '/';
}
