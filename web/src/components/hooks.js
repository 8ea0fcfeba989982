// Data loading for pages.

import { useEffect, useState } from 'preact/hooks';

/**
 * Loads `load()` now, whenever `deps` change, on `reload()`, and again
 * `every` ms after each answer (a number, or a function of the last data).
 * Keeps the last data while reloading and on errors; the newest error in `error`.
 */
export function useResource(load, deps, every = 0) {
  const [state, setState] = useState({ data: undefined, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let alive = true, timer;
    const run = async () => {
      let data;
      try {
        data = await load();
        if (alive) setState({ data, error: null });
      } catch (error) {
        if (alive) setState((s) => ({ data: s.data, error }));
      }
      const ms = typeof every === 'function' ? every(data) : every;
      if (alive && ms > 0) timer = setTimeout(run, ms);
    };
    run();
    return () => { alive = false; clearTimeout(timer); };
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((n) => n + 1) };
}

/** Runs an action for a form: `{busy, error, run}`; run(f) awaits f, keeps its error. */
export function useAction() {
  const [s, set] = useState({ busy: false, error: null });
  const run = async (f) => {
    set({ busy: true, error: null });
    try {
      const r = await f();
      set({ busy: false, error: null });
      return r;
    } catch (error) {
      set({ busy: false, error });
      return undefined;
    }
  };
  return { ...s, run, setError: (error) => set({ busy: false, error }) };
}
