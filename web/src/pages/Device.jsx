import { api, canOperate } from '../api.js';
import { useAction, useResource } from '../components/hooks.js';
import { navigate } from '../components/router.jsx';
import { Chart } from '../components/Chart.jsx';
import SendCommand from '../components/SendCommand.jsx';
import { Badge, ErrorText } from '../components/ui.jsx';
import { formatRelative, formatTime, formatValue, formatWindow } from '../lib/format.js';
import { RANGES, planRange, rangeByKey, telemetryQuery, toColumns } from '../lib/range.js';
import { seg, withQuery } from '../lib/url.js';
import NotFound from './NotFound.jsx';

const LIVE = new Set(['pending', 'delivered']);

export default function Device({ user, params, query }) {
  const id = params.id;
  const range = rangeByKey(query.range);
  const dev = useResource(() => api.device(id), [id], 5000);
  if (dev.error?.status === 404) return <NotFound what={`Device ${id}`} />;
  const d = dev.data;
  if (!d) return <section><h1>{id}</h1>{dev.error ? <ErrorText error={dev.error} /> : <p aria-busy="true">Loading…</p>}</section>;
  const now = Date.now();
  return (
    <section class="device">
      <h1>{d.name} <small class="mono">{d.id}</small></h1>
      <ErrorText error={dev.error} />
      <dl class="facts">
        <div><dt>State</dt><dd>{d.online ? <Badge kind="ok">online</Badge> : <Badge kind="off">offline</Badge>}</dd></div>
        <div><dt>Last seen</dt><dd title={formatTime(d.last_seen_ms)}>{formatRelative(d.last_seen_ms, now)}</dd></div>
        <div><dt>Tenant</dt><dd>{d.tenant}</dd></div>
        <div><dt>Pending commands</dt><dd data-pending>{d.pending_commands}</dd></div>
        <div><dt>Silence alert after</dt><dd data-silence>{d.silence_s ? formatWindow(d.silence_s) : 'node default'}</dd></div>
        {Object.keys(d.latest).sort().map((m) => (
          <div key={m}><dt>{m}</dt><dd data-latest={m} title={formatTime(d.latest[m].ts)}>{formatValue(d.latest[m].value)}</dd></div>
        ))}
      </dl>

      <h2>Telemetry</h2>
      <div class="ranges" role="group" aria-label="Time range">
        {RANGES.map((r) => (
          <button type="button" key={r.key} aria-pressed={r.key === range.key}
            onClick={() => navigate(withQuery(`/devices/${seg(id)}`, { range: r.key }), { scroll: false })}>{r.key}</button>
        ))}
      </div>
      {d.metrics.length === 0 && <p>No telemetry yet.</p>}
      <div class="charts">
        {d.metrics.map((m) => <MetricChart key={m} id={id} metric={m} range={range} />)}
      </div>

      <Commands id={id} user={user} />
      <DeviceAlerts id={id} />
      <Analysis id={id} />
    </section>
  );
}

function MetricChart({ id, metric, range }) {
  const { data, error } = useResource(async () => {
    const plan = planRange(range.ms, Date.now());
    const r = await api.telemetry(id, telemetryQuery(metric, plan));
    return { key: range.key, mode: plan.mode, step: plan.step, x: [plan.from / 1000, plan.to / 1000], columns: toColumns(plan.mode, r.points) };
  }, [id, metric, range.key], 10000);
  const stale = data && data.key !== range.key;
  return (
    <figure class={stale ? 'metric stale' : 'metric'} data-metric={metric} aria-busy={stale}>
      <figcaption>{metric} {data?.step && <small>(per {data.step}: avg, min–max)</small>}</figcaption>
      <ErrorText error={error} />
      {data && <Chart label={metric} mode={data.mode} columns={data.columns} range={data.x} />}
    </figure>
  );
}

function Commands({ id, user }) {
  const list = useResource(() => api.commands(id), [id], (data) => (data?.items.some((c) => LIVE.has(c.status)) ? 2000 : 10000));
  const act = useAction();
  const operate = canOperate(user);
  const cancel = async (c) => {
    await act.run(() => api.cancelCommand(id, c.id));
    list.reload(); // cancelled, or why not (delivered meanwhile)
  };
  return (
    <>
      <h2>Commands</h2>
      {operate && <SendCommand send={(cmd) => api.sendCommand(id, cmd)} onSent={list.reload} />}
      <ErrorText error={list.error || act.error} />
      {list.data && (
        <div class="scroll">
          <table class="commands">
            <thead>
              <tr><th>Name</th><th>Args</th><th>Status</th><th>Created</th><th>Delivered</th><th>Finished</th><th>Result</th>{operate && <th><span class="sr">Actions</span></th>}</tr>
            </thead>
            <tbody>
              {list.data.items.map((c) => (
                <tr key={c.id} data-command={c.id}>
                  <td>{c.name}</td>
                  <td class="mono">{JSON.stringify(c.args)}</td>
                  <td data-status={c.status}><Badge kind={c.status}>{c.status}</Badge></td>
                  <td>{formatTime(c.created_ms)}</td>
                  <td>{formatTime(c.delivered_ms)}</td>
                  <td>{formatTime(c.finished_ms)}</td>
                  <td class="mono">{c.result == null ? '—' : JSON.stringify(c.result)}</td>
                  {operate && (
                    <td class="buttons">
                      {c.status === 'pending' && <button type="button" disabled={act.busy} onClick={() => cancel(c)}>Cancel</button>}
                    </td>
                  )}
                </tr>
              ))}
              {list.data.items.length === 0 && <tr><td colSpan={operate ? 8 : 7}>No commands.</td></tr>}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

function DeviceAlerts({ id }) {
  // The device filter is applied here too, for servers without it.
  const { data, error } = useResource(() => api.alerts({ device: id, limit: 20 }), [id], 10000);
  const items = data?.items.filter((a) => a.device_id === id) || [];
  return (
    <>
      <h2>Alerts</h2>
      <ErrorText error={error} />
      {data && (items.length === 0 ? <p>No alerts.</p> : (
        <ul class="alerts">
          {items.map((a) => (
            <li key={a.id}>
              <Badge kind={a.state === 'open' ? 'alert' : 'off'}>{a.state}</Badge> {a.message}
              <small> since {formatTime(a.opened_ms)}{a.closed_ms ? `, closed ${formatTime(a.closed_ms)}` : ''}</small>
            </li>
          ))}
        </ul>
      ))}
    </>
  );
}

function Analysis({ id }) {
  const { data, error } = useResource(() => api.analysis(id), [id], 30000);
  const metrics = Object.keys(data?.metrics || {}).sort();
  return (
    <>
      <h2>Analysis</h2>
      <ErrorText error={error} />
      {data && metrics.length === 0 && <p>No rollups yet.</p>}
      {metrics.map((m) => {
        const a = data.metrics[m];
        return (
          <div key={m} class="scroll">
            <table class="analysis">
              <caption>{m}: hourly rollups, {a.anomalies} {a.anomalies === 1 ? 'anomaly' : 'anomalies'}</caption>
              <thead><tr><th>Hour</th><th>Count</th><th>Min</th><th>Max</th><th>Avg</th><th>Anomaly</th></tr></thead>
              <tbody>
                {a.rollups.map((r) => (
                  <tr key={r.hour_ms} class={r.anomaly ? 'anomaly' : ''}>
                    <td>{formatTime(r.hour_ms)}</td><td>{r.count}</td><td>{formatValue(r.min)}</td>
                    <td>{formatValue(r.max)}</td><td>{formatValue(r.avg)}</td><td>{r.anomaly ? <Badge kind="alert">anomaly</Badge> : ''}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        );
      })}
    </>
  );
}
