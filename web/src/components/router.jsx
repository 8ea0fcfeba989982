// A small History-API router: the location as state, navigate(), <Link>.

import { useEffect, useState } from 'preact/hooks';
import { parseQuery } from '../lib/url.js';

const listeners = new Set();
const notify = () => listeners.forEach((f) => f());
window.addEventListener('popstate', notify);

/** The current path with its query. */
export const here = () => location.pathname + location.search;

/** Goes to a local URL; `state` travels with the history entry (back restores it); new pages scroll to the top. */
export function navigate(to, { replace = false, state = null, scroll = !replace } = {}) {
  if (to === here() && !state) return;
  history[replace ? 'replaceState' : 'pushState'](state, '', to);
  if (scroll) window.scrollTo(0, 0);
  notify();
}

/** Re-renders on navigation; returns `{path, query, state}`. */
export function useLocation() {
  const [, bump] = useState(0);
  useEffect(() => {
    const f = () => bump((n) => n + 1);
    listeners.add(f);
    return () => listeners.delete(f);
  }, []);
  return { path: location.pathname, query: parseQuery(location.search), state: history.state };
}

/** An <a> that navigates without a reload (modified clicks open as usual). */
export function Link({ href, onClick, ...props }) {
  const click = (e) => {
    onClick?.(e);
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(href);
  };
  return <a href={href} onClick={click} {...props} />;
}
