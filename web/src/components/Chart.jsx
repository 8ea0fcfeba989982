// A uPlot time chart: a line for raw points, an avg line inside a min/max
// band for buckets. Columns come from lib/range.js toColumns(); `range` is
// the x axis [from, to] in seconds.

import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

const BLUE = '#1d4ed8';
const LIGHT = 'rgba(29, 78, 216, 0.35)';

function options(mode, label, width, height, xRange, el) {
  const series = mode === 'raw'
    ? [{}, { label, stroke: BLUE, width: 1.5, points: { show: true, size: 4 } }]
    : [{}, { label: 'min', stroke: LIGHT, width: 1 }, { label: 'avg', stroke: BLUE, width: 1.5 }, { label: 'max', stroke: LIGHT, width: 1 }];
  return {
    width, height, series,
    bands: mode === 'raw' ? [] : [{ series: [3, 1], fill: 'rgba(29, 78, 216, 0.12)' }],
    // The x axis spans the requested range, however few points there are.
    scales: { x: { time: true, range: (u, min, max) => xRange.current || [min, max] } },
    axes: [{}, { size: 56 }],
    legend: { live: true },
    // When it last drew (performance.now()), for tests and profiling.
    hooks: { draw: [() => { el.dataset.drawn = String(Math.round(performance.now())); }] },
  };
}

export function Chart({ label, mode, columns, range, height = 220 }) {
  const box = useRef();
  const plot = useRef();
  const xRange = useRef(range);
  xRange.current = range;
  useEffect(() => {
    const el = box.current;
    const width = () => Math.max(240, el.clientWidth);
    plot.current = new uPlot(options(mode, label, width(), height, xRange, el), columns, el);
    const ro = new ResizeObserver(() => plot.current.setSize({ width: width(), height }));
    ro.observe(el);
    return () => { ro.disconnect(); plot.current.destroy(); plot.current = null; };
  }, [mode, label, height]);
  useEffect(() => { plot.current?.setData(columns); }, [columns]);
  const n = columns[0].length;
  return (
    <div class="chart" ref={box} role="img" aria-label={`${label}: ${n} ${mode === 'raw' ? 'points' : 'buckets'}`}
      data-mode={mode} data-points={n} data-last={n ? columns[0][n - 1] : ''} />
  );
}
