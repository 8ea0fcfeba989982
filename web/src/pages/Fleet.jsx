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
  const [sent, setSent] = useState(null);

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
          {canOperate(user) && data.items.length > 0 && (
            <>
              <h2>Send a command to the {data.items.length} devices listed</h2>
              <SendCommand key={`${q}|${online}|${cursor}`}
                label={`Send a command to the ${data.items.length} devices listed`}
                button={`Send to ${data.items.length} devices`}
                send={(cmd) => api.sendCommands(data.items.map((d) => d.id), cmd)}
                onSent={setSent} />
              {sent && (
                <p class={sent.failed ? 'error' : 'ok'} role="status" data-sent={sent.sent} data-failed={sent.failed}>
                  Sent to {sent.sent} devices{sent.failed > 0 && `; ${sent.failed} failed: ${sent.items.filter((i) => i.status !== 201).slice(0, 5).map((i) => `${i.device_id} (${i.error?.message || i.status})`).join(', ')}`}
                </p>
              )}
            </>
          )}
        </>
      )}
    </section>
  );
}
