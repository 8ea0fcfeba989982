import { useState } from 'preact/hooks';
import { api, canOperate } from '../api.js';
import { useAction, useResource } from '../components/hooks.js';
import { Link, navigate } from '../components/router.jsx';
import { ErrorText } from '../components/ui.jsx';
import { formatTime, formatValue } from '../lib/format.js';
import { seg } from '../lib/url.js';

export default function Alerts({ user, query }) {
  const state = query.state === 'closed' ? 'closed' : 'open';
  const [limit, setLimit] = useState(100);
  const list = useResource(() => api.alerts({ state, limit }), [state, limit], 10000);
  const act = useAction();
  const close = async (id) => {
    if (await act.run(() => api.closeAlert(id)) !== undefined) list.reload();
  };
  const tab = (s) => (
    <button type="button" role="tab" aria-selected={state === s} onClick={() => navigate(s === 'open' ? '/alerts' : '/alerts?state=closed')}>
      {s === 'open' ? 'Open' : 'Closed'}
    </button>
  );
  const items = list.data?.items || [];
  return (
    <section>
      <h1>Alerts</h1>
      <div class="tabs" role="tablist" aria-label="Alert state">{tab('open')}{tab('closed')}</div>
      <ErrorText error={list.error || act.error} />
      {list.data?.partial && (
        <p class="error" role="status">A database shard does not answer: the alerts of its devices are missing.</p>
      )}
      {list.data && (
        <div class="scroll" role="tabpanel">
          <table class="alerts-table">
            <thead>
              <tr><th>Opened</th><th>Device</th><th>Kind</th><th>Message</th><th>Value</th>
                {state === 'closed' ? <th>Closed</th> : canOperate(user) && <th><span class="sr">Actions</span></th>}</tr>
            </thead>
            <tbody>
              {items.map((a) => (
                <tr key={a.id} data-alert={a.id}>
                  <td>{formatTime(a.opened_ms)}</td>
                  <td><Link href={`/devices/${seg(a.device_id)}`}>{a.device_id}</Link></td>
                  <td>{a.kind}</td>
                  <td>{a.message}</td>
                  <td>{formatValue(a.value)}</td>
                  {state === 'closed' ? <td>{formatTime(a.closed_ms)}</td> : canOperate(user) && (
                    <td><button type="button" onClick={() => close(a.id)} disabled={act.busy}>Close</button></td>
                  )}
                </tr>
              ))}
              {items.length === 0 && (
                <tr><td colSpan={6}>No {state} alerts{list.data.partial ? ' on the shards that answer' : ''}.</td></tr>
              )}
            </tbody>
          </table>
        </div>
      )}
      {list.data?.next_cursor && limit < 1000 && (
        <button type="button" onClick={() => setLimit(Math.min(1000, limit * 2))}>Show more</button>
      )}
    </section>
  );
}
