import { useEffect, useState } from 'preact/hooks';
import { api, canOperate } from '../api.js';
import { useResource } from '../components/hooks.js';
import SendCommand from '../components/SendCommand.jsx';
import { Link, navigate } from '../components/router.jsx';
import { ErrorText, Select, Badge } from '../components/ui.jsx';
import { formatLatest, formatRelative, formatTime } from '../lib/format.js';
import { withQuery, seg } from '../lib/url.js';

export const PAGE_SIZE = 50;

/** The device list: search, online filter, cursor paging; all in the URL. */
export default function Fleet({ user, query, state }) {
  const q = query.q || '';
  const online = query.online || '';
  const cursor = query.cursor || '';
  const back = state?.back || []; // cursors of the pages before this one
  const [text, setText] = useState(q);

  const go = (params, opts) => navigate(withQuery('/', { q, online, ...params }), opts);
  useEffect(() => {
    if (text === q) return;
    const t = setTimeout(() => go({ q: text, cursor: '' }, { replace: true }), 300);
    return () => clearTimeout(t);
  }, [text]);

  const { data, error } = useResource(() => api.devices({ q, online, cursor, limit: PAGE_SIZE }), [q, online, cursor], 5000);
  const now = Date.now();
  const prev = () => go({ cursor: back[back.length - 1] || '' }, { state: { back: back.slice(0, -1) } });
  const next = () => go({ cursor: data.next_cursor }, { state: { back: [...back, cursor] } });

  return (
    <section>
      <h1>Fleet</h1>
      <form class="toolbar" role="search" onSubmit={(e) => e.preventDefault()}>
        <label class="field grow">
          <span>Search</span>
          <input type="search" value={text} onInput={(e) => setText(e.currentTarget.value)} placeholder="id or name" name="q" />
        </label>
        <Select label="Show" value={online} name="online"
          onChange={(v) => go({ online: v, cursor: '' }, { replace: true })}
          options={[['', 'All'], ['true', 'Online'], ['false', 'Offline']]} />
      </form>
      <ErrorText error={error} />
      {data === undefined && !error && <p aria-busy="true">Loading…</p>}
      {canOperate(user) && data && data.items.length > 0 && (
        <BulkCommand key={`${q}|${online}|${cursor}`} listed={data.items.map((d) => d.id)}
          q={q} online={online} />
      )}
      {data && (
        <>
          {data.partial && (
            <p class="error" role="status">
              A database shard does not answer: its devices are listed without their latest values.
            </p>
          )}
          <div class="scroll">
            <table class="devices">
              <thead>
                <tr><th>Id</th><th>Name</th><th>Online</th><th>Last seen</th><th>Latest values</th></tr>
              </thead>
              <tbody>
                {data.items.map((d) => (
                  <tr key={d.id} data-device={d.id}>
                    <td><Link href={`/devices/${seg(d.id)}`}>{d.id}</Link></td>
                    <td>{d.name}</td>
                    {d.data_unavailable ? (
                      <>
                        <td><Badge kind="off">unknown</Badge></td>
                        <td>—</td>
                      </>
                    ) : (
                      <>
                        <td>{d.online ? <Badge kind="ok">online</Badge> : <Badge kind="off">offline</Badge>}</td>
                        <td title={formatTime(d.last_seen_ms)}>{formatRelative(d.last_seen_ms, now)}</td>
                      </>
                    )}
                    <td class="latest">
                      {d.data_unavailable ? <Badge kind="alert">data unavailable</Badge> : formatLatest(d.latest)}
                    </td>
                  </tr>
                ))}
                {data.items.length === 0 && <tr><td colSpan={5}>No devices{q || online ? ' match' : ''}.</td></tr>}
              </tbody>
            </table>
          </div>
          <div class="pager">
            <button type="button" onClick={prev} disabled={!cursor}>Previous</button>
            {(!cursor || back.length > 0) && <span>Page {back.length + 1}</span>}
            <button type="button" onClick={next} disabled={!data.next_cursor}>Next</button>
          </div>
        </>
      )}
    </section>
  );
}

/**
 * One command to many devices, folded away until asked for: to the devices
 * on this page, or to every device the search and filter match (the
 * server selects them, up to 10,000).
 */
function BulkCommand({ listed, q, online }) {
  const [scope, setScope] = useState('page');
  const [sent, setSent] = useState(null);
  const n = listed.length;
  const filtered = q || online;
  const everyone = filtered ? 'every device matching this search' : 'every device in the fleet';
  const filter = { ...(q ? { q } : {}), ...(online ? { online: online === 'true' } : {}) };
  const page = scope === 'page';
  const failures = (r) => r.items.filter((i) => i.status !== 201).slice(0, 5)
    .map((i) => `${i.device_id} (${i.error?.message || i.status})`).join(', ');
  return (
    <details class="card bulk">
      <summary>Send a command to many devices…</summary>
      <fieldset class="scope">
        <legend>To</legend>
        <label><input type="radio" name="scope" value="page" checked={page} onChange={() => setScope('page')} /> the {n} devices listed</label>
        <label><input type="radio" name="scope" value="all" checked={!page} onChange={() => setScope('all')} /> {everyone} (up to 10,000)</label>
      </fieldset>
      <SendCommand key={scope}
        label={page ? `Send a command to the ${n} devices listed` : `Send a command to ${everyone}`}
        button={page ? `Send to ${n} devices` : `Send to ${everyone}`}
        send={(cmd) => (page ? api.sendCommands(listed, cmd) : api.sendCommandsWhere(filter, cmd))}
        onSent={setSent} />
      {sent && (
        <p class={sent.failed ? 'error' : 'ok'} role="status" data-sent={sent.sent} data-failed={sent.failed}
          data-matched={sent.matched ?? sent.items.length}>
          Sent to {sent.sent} devices{sent.matched !== undefined && ` of ${sent.matched} matching`}
          {sent.failed > 0 && `; ${sent.failed} failed: ${failures(sent)}`}
        </p>
      )}
    </details>
  );
}
