import { useRef, useState } from 'preact/hooks';
import { api } from '../api.js';
import { useAction, useResource } from '../components/hooks.js';
import { Badge, Confirm, ErrorText } from '../components/ui.jsx';
import { formatBytes, formatRate, formatRelative, formatTime, formatValue } from '../lib/format.js';
import { counterRate, parsePrometheus, sumMetric } from '../lib/prom.js';

const STATE_KIND = { alive: 'ok', draining: 'pending', drained: 'off', leaving: 'off', dead: 'alert' };

export default function Cluster() {
  const view = useResource(() => api.cluster(), [], 5000);
  const figures = useFigures();
  const [doomed, setDoomed] = useState(null);
  const act = useAction();
  const drain = async () => {
    const id = doomed;
    setDoomed(null);
    if (await act.run(() => api.drain(id))) view.reload();
  };
  const v = view.data;
  const now = Date.now();
  return (
    <section>
      <h1>Cluster</h1>
      <h2>This node</h2>
      <ErrorText error={figures.error} />
      <dl class="facts figures">
        <div><dt>Requests</dt><dd data-figure="requests">{formatRate(figures.requests)}</dd></div>
        <div><dt>Ingest points</dt><dd data-figure="ingest">{formatRate(figures.ingest)}</dd></div>
        <div><dt>Import queue</dt><dd data-figure="queue">{figures.queue == null ? '—' : `${formatValue(figures.queue)} points`}</dd></div>
        <div><dt>Spool</dt><dd data-figure="spool">{formatBytes(figures.spool)}</dd></div>
      </dl>
      <h2>Members</h2>
      <ErrorText error={view.error || act.error} />
      {v && (
        <>
          <p>
            Shard map version <strong data-map-version>{v.shard_map_version}</strong>, {v.shards} shards,
            coordinator {v.coordinator}; {v.moving.length ? `${v.moving.length} shard move(s) in progress` : 'no shards in motion'}.
            {v.fenced && <Badge kind="alert">fenced</Badge>}
          </p>
          <div class="scroll">
            <table>
              <thead><tr><th>Id</th><th>Address</th><th>State</th><th>Shards</th><th>Actors</th><th>Since</th><th><span class="sr">Actions</span></th></tr></thead>
              <tbody>
                {v.members.map((m) => (
                  <tr key={m.id} data-member={m.id}>
                    <td>{m.id}{m.id === v.node && <small> (this node)</small>}</td>
                    <td class="mono">{m.address}{m.http && m.http !== m.address ? ` · http ${m.http}` : ''}</td>
                    <td data-state={m.state}><Badge kind={STATE_KIND[m.state] || 'off'}>{m.state}</Badge></td>
                    <td>{m.shards}</td>
                    <td>{m.actors}</td>
                    <td title={formatTime(m.since_ms)}>{formatRelative(m.since_ms, now)}</td>
                    <td>{m.state === 'alive' && <button type="button" onClick={() => setDoomed(m.id)}>Drain</button>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {v.moving.length > 0 && (
            <ul>{v.moving.map((x, i) => <li key={i}>map version {x.version}: {x.waiting_for}</li>)}</ul>
          )}
        </>
      )}
      {v?.database && <Database db={v.database} />}
      {doomed && (
        <Confirm title={`Drain ${doomed}?`} confirmLabel="Drain" onConfirm={drain} onCancel={() => setDoomed(null)}>
          <p>The node hands its shards to the others and flushes; then it can be stopped.</p>
        </Confirm>
      )}
    </section>
  );
}

/** The database tier as this node sees it: primary, standbys, replicas,
 *  and the data shards beyond the catalog. */
function Database({ db }) {
  const p = db.primary;
  return (
    <>
      <h2>Database</h2>
      <div class="scroll">
        <table data-database>
          <thead><tr><th>Role</th><th>Address</th><th>Health</th><th>Lag</th><th>Reads</th></tr></thead>
          <tbody>
            <tr data-db-role="primary">
              <td>{p.role}</td>
              <td class="mono">{p.address}</td>
              <td><Badge kind={p.up ? 'ok' : 'alert'}>{p.up ? 'up' : 'down'}</Badge></td>
              <td>—</td>
              <td>—</td>
            </tr>
            {p.standbys.map((s) => (
              <tr key={`s-${s.name}`} data-db-role="standby">
                <td>standby ({s.sync_state || 'async'})</td>
                <td class="mono">{s.name}</td>
                <td><Badge kind={s.state === 'streaming' ? 'ok' : 'pending'}>{s.state}</Badge></td>
                <td>{`${formatValue(s.replay_lag_ms)} ms`}</td>
                <td>—</td>
              </tr>
            ))}
            {db.replicas.map((r) => (
              <tr key={r.name} data-db-role="replica" data-replica={r.name}>
                <td>read {r.name}{r.shard > 0 ? ` (shard ${r.shard})` : ''}</td>
                <td class="mono">{r.address}</td>
                <td title={r.why || ''}>
                  <Badge kind={r.serving ? 'ok' : r.up ? 'pending' : 'alert'}>
                    {r.serving ? 'serving' : r.up ? 'left out' : 'down'}
                  </Badge>
                  {r.why && <small> {r.why}</small>}
                </td>
                <td>{r.lag_ms < 0 ? '—' : `${formatValue(r.lag_ms)} ms`}</td>
                <td>{formatValue(r.reads)}</td>
              </tr>
            ))}
            {(db.shards || []).slice(1).map((s) => (
              <tr key={`d-${s.shard}`} data-db-role="shard" data-shard={s.shard}>
                <td>data shard {s.shard}</td>
                <td class="mono">{s.address}</td>
                <td><Badge kind={s.up ? 'ok' : 'alert'}>{s.up ? 'up' : 'down'}</Badge></td>
                <td>—</td>
                <td>—</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <p>
        {(db.shards || []).length > 1
          ? `Devices are spread over ${db.shards.length} data shards; the primary above is the catalog and shard 0. `
          : ''}
        Standby policy <strong>{p.standby_policy}</strong>;{' '}
        {db.replicas.length
          ? `replicas serve reads while their lag is at most ${formatValue(db.max_replica_lag_ms)} ms.`
          : 'no read replicas: every read goes to the primary.'}
      </p>
    </>
  );
}

/** The node's key figures from /metrics, rates from the last two scrapes. */
function useFigures() {
  const prev = useRef(null);
  const { data, error } = useResource(async () => {
    const cur = { t: Date.now(), samples: parsePrometheus(await api.metrics()) };
    const before = prev.current;
    prev.current = cur;
    return {
      requests: counterRate(before, cur, 'troupe_http_requests_total'),
      ingest: counterRate(before, cur, 'troupe_ingest_points_total'),
      queue: sumMetric(cur.samples, 'troupe_import_queue_points'),
      spool: sumMetric(cur.samples, 'troupe_spool_bytes'),
    };
  }, [], (d) => (d?.requests == null ? 1000 : 5000));
  return { ...(data || {}), error };
}
