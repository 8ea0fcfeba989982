import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { useAction, useResource } from '../components/hooks.js';
import { Link } from '../components/router.jsx';
import { Confirm, ErrorText, Field, Secret, Select } from '../components/ui.jsx';
import { parseDeviceCsv, secretsCsv } from '../lib/csv.js';
import { formatWindow } from '../lib/format.js';
import { parseSilenceMinutes } from '../lib/validate.js';
import { seg } from '../lib/url.js';

export default function AdminDevices() {
  const tenants = useResource(() => api.tenants(), [], 0);
  const tenantOptions = (tenants.data?.items || []).map((t) => [t.id, t.name || t.id]);
  const [text, setText] = useState('');
  const [q, setQ] = useState('');
  const [cursors, setCursors] = useState(['']);
  const cursor = cursors[cursors.length - 1];
  useEffect(() => {
    const t = setTimeout(() => { setQ(text.trim()); setCursors(['']); }, 300);
    return () => clearTimeout(t);
  }, [text]);
  const list = useResource(() => api.devices({ q, limit: 100, cursor }), [q, cursor], 0);
  const [secret, setSecret] = useState(null);
  const [doomed, setDoomed] = useState(null);
  const [editing, setEditing] = useState(null);
  const act = useAction();

  const rotate = async (d) => {
    const r = await act.run(() => api.rotateSecret(d.id));
    if (r) setSecret({ label: `New secret of ${r.id}`, value: r.secret });
  };
  const remove = async () => {
    const d = doomed;
    setDoomed(null);
    if (await act.run(() => api.deleteDevice(d.id)) !== undefined) list.reload();
  };
  return (
    <section>
      <h1>Devices</h1>
      <div class="two">
        <Register tenants={tenantOptions} onRegistered={(d) => { setSecret({ label: `Secret of ${d.id}`, value: d.secret }); list.reload(); }} />
        <Import tenants={tenantOptions} onImported={list.reload} />
      </div>
      {secret && <Secret label={secret.label} value={secret.value} onDone={() => setSecret(null)} />}
      <h2>Registered devices</h2>
      <div class="toolbar" role="search">
        <Field label="Search devices" type="search" value={text} onInput={setText} name="q" placeholder="id or name" />
      </div>
      <ErrorText error={list.error || act.error} />
      {list.data && (
        <div class="scroll">
          <table>
            <thead><tr><th>Id</th><th>Name</th><th>Tenant</th><th>Silence alert after</th><th><span class="sr">Actions</span></th></tr></thead>
            <tbody>
              {list.data.items.map((d) => (
                <tr key={d.id} data-device={d.id}>
                  <td><Link href={`/devices/${seg(d.id)}`}>{d.id}</Link></td>
                  <td>{editing?.id === d.id ? <Edit device={d} onDone={(ok) => { setEditing(null); if (ok) list.reload(); }} /> : d.name}</td>
                  <td>{d.tenant}</td>
                  <td data-silence>{d.silence_s ? formatWindow(d.silence_s) : <span class="hint">node default</span>}</td>
                  <td class="buttons">
                    <button type="button" onClick={() => setEditing(d)}>Edit</button>
                    <button type="button" onClick={() => rotate(d)}>Rotate secret</button>
                    <button type="button" class="danger" onClick={() => setDoomed(d)}>Delete</button>
                  </td>
                </tr>
              ))}
              {list.data.items.length === 0 && <tr><td colSpan={5}>No devices.</td></tr>}
            </tbody>
          </table>
        </div>
      )}
      <div class="pager">
        <button type="button" disabled={cursors.length < 2} onClick={() => setCursors(cursors.slice(0, -1))}>Previous</button>
        <button type="button" disabled={!list.data?.next_cursor} onClick={() => setCursors([...cursors, list.data.next_cursor])}>Next</button>
      </div>
      {doomed && (
        <Confirm title={`Delete device ${doomed.id}?`} confirmLabel="Delete" onConfirm={remove} onCancel={() => setDoomed(null)}>
          <p>Its telemetry, commands and alerts go with it.</p>
        </Confirm>
      )}
    </section>
  );
}

function Register({ tenants, onRegistered }) {
  const [id, setId] = useState('');
  const [name, setName] = useState('');
  const [tenant, setTenant] = useState('');
  const act = useAction();
  const submit = async (e) => {
    e.preventDefault();
    const r = await act.run(() => api.registerDevices({ id: id.trim(), name: name.trim() || id.trim(), tenant: tenant || tenants[0]?.[0] }));
    if (r) { setId(''); setName(''); onRegistered(r); }
  };
  return (
    <form class="card" onSubmit={submit} aria-label="Register a device">
      <h2>Register a device</h2>
      <Field label="Device id" value={id} onInput={setId} name="id" required pattern="[A-Za-z0-9_.:\-]{1,64}" />
      <Field label="Name" value={name} onInput={setName} name="name" />
      <Select label="Tenant" value={tenant || tenants[0]?.[0] || ''} onChange={setTenant} name="tenant" options={tenants} />
      <ErrorText error={act.error} />
      <button type="submit" class="primary" disabled={act.busy}>Register</button>
    </form>
  );
}

function Import({ tenants, onImported }) {
  const [parsed, setParsed] = useState(null);
  const [tenant, setTenant] = useState('');
  const [text, setText] = useState('');
  const [download, setDownload] = useState(null);
  const act = useAction();
  const fallback = tenant || tenants[0]?.[0] || '';
  useEffect(() => setParsed(text ? parseDeviceCsv(text, fallback) : null), [text, fallback]);
  useEffect(() => () => download && URL.revokeObjectURL(download.url), [download]);

  const pick = async (e) => {
    const file = e.currentTarget.files[0];
    setDownload(null);
    setText(file ? await file.text() : '');
  };
  const submit = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const r = await act.run(() => api.registerDevices(parsed.devices));
    if (r) {
      const url = URL.createObjectURL(new Blob([secretsCsv(r)], { type: 'text/csv' }));
      setDownload({ url, count: r.length });
      setText('');
      form.reset();
      onImported();
    }
  };
  return (
    <form class="card" onSubmit={submit} aria-label="Import devices">
      <h2>Import from CSV</h2>
      <p class="hint">Lines <code>id,name,tenant</code>; a header line is optional.</p>
      <label class="field">
        <span>CSV file</span>
        <input type="file" accept=".csv,text/csv,text/plain" name="csv" onChange={pick} />
      </label>
      <Select label="Tenant for lines without one" value={fallback} onChange={setTenant} name="default-tenant" options={tenants} />
      {parsed && (
        <div role="status">
          <p data-import-count={parsed.devices.length}>{parsed.devices.length} devices to register.</p>
          {parsed.errors.length > 0 && (
            <ul class="error">{parsed.errors.slice(0, 10).map((x) => <li key={x}>{x}</li>)}
              {parsed.errors.length > 10 && <li>… and {parsed.errors.length - 10} more</li>}</ul>
          )}
        </div>
      )}
      <ErrorText error={act.error} />
      <button type="submit" class="primary" disabled={act.busy || !parsed || !parsed.devices.length || parsed.errors.length > 0}>
        Import {parsed?.devices.length || ''} devices
      </button>
      {download && (
        <p class="ok" role="status">
          Registered {download.count} devices. Their secrets are shown only now:{' '}
          <a href={download.url} download="devices-secrets.csv" class="download">Download devices-secrets.csv</a>
        </p>
      )}
    </form>
  );
}

/** Changes a device's name and its silence window (minutes; blank: the node's default). */
function Edit({ device, onDone }) {
  const [name, setName] = useState(device.name);
  const [silence, setSilence] = useState(device.silence_s ? String(device.silence_s / 60) : '');
  const act = useAction();
  const submit = async (e) => {
    e.preventDefault();
    const s = parseSilenceMinutes(silence);
    if (s.error) return act.setError(s.error);
    if (await act.run(() => api.updateDevice(device.id, { name: name.trim(), silence_s: s.value }))) onDone(true);
  };
  return (
    <form class="inline" onSubmit={submit}>
      <Field label={`New name of ${device.id}`} value={name} onInput={setName} name="new-name" required autoFocus />
      <Field label="Silence alert after, minutes" value={silence} onInput={setSilence} name="silence-min" inputmode="decimal" placeholder="node default" />
      <button type="submit" class="primary" disabled={act.busy}>Save</button>
      <button type="button" onClick={() => onDone(false)}>Cancel</button>
      <ErrorText error={act.error} />
    </form>
  );
}
