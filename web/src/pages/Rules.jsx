import { useState } from 'preact/hooks';
import { api, canOperate, isAdmin } from '../api.js';
import { useAction, useResource } from '../components/hooks.js';
import { Confirm, ErrorText, Field, Select } from '../components/ui.jsx';
import { formatTime, formatValue } from '../lib/format.js';
import { parseNumber, parseOptionalInt } from '../lib/validate.js';

const OPS = ['>', '>=', '<', '<=', '==', '!='];

export default function Rules({ user }) {
  const list = useResource(() => api.rules({ limit: 1000 }), [], 0);
  const [doomed, setDoomed] = useState(null);
  const act = useAction();
  const remove = async () => {
    const r = doomed;
    setDoomed(null);
    if (await act.run(() => api.deleteRule(r.id)) !== undefined) list.reload();
  };
  const may = canOperate(user);
  return (
    <section>
      <h1>Rules</h1>
      {may && <NewRule user={user} onCreated={list.reload} />}
      <ErrorText error={list.error || act.error} />
      {list.data && (
        <div class="scroll">
          <table class="rules">
            <thead>
              <tr><th>Metric</th><th>Condition</th><th>For</th><th>Device</th><th>Tenant</th><th>Created</th>{may && <th><span class="sr">Actions</span></th>}</tr>
            </thead>
            <tbody>
              {list.data.items.map((r) => (
                <tr key={r.id} data-rule={r.id}>
                  <td>{r.metric}</td>
                  <td>{r.op} {formatValue(r.value)}</td>
                  <td>{r.for_s ? `${r.for_s} s` : '—'}</td>
                  <td>{r.device_id || 'all'}</td>
                  <td>{r.tenant}</td>
                  <td>{formatTime(r.created_ms)}</td>
                  {may && <td><button type="button" class="danger" onClick={() => setDoomed(r)}>Delete</button></td>}
                </tr>
              ))}
              {list.data.items.length === 0 && <tr><td colSpan={7}>No rules.</td></tr>}
            </tbody>
          </table>
        </div>
      )}
      {doomed && (
        <Confirm title="Delete rule?" confirmLabel="Delete" onConfirm={remove} onCancel={() => setDoomed(null)}>
          <p>{doomed.metric} {doomed.op} {formatValue(doomed.value)} ({doomed.device_id || 'all devices'})</p>
        </Confirm>
      )}
    </section>
  );
}

function NewRule({ user, onCreated }) {
  const [f, setF] = useState({ metric: '', op: '>', value: '', for_s: '', device_id: '', tenant: '' });
  const set = (k) => (v) => setF({ ...f, [k]: v });
  const admin = isAdmin(user);
  const tenants = useResource(() => (admin ? api.tenants() : Promise.resolve(null)), [], 0);
  const act = useAction();
  const submit = async (e) => {
    e.preventDefault();
    const v = parseNumber(f.value, 'value');
    const fs = parseOptionalInt(f.for_s, 'for_s', 0, 86400);
    if (v.error || fs.error) return act.setError(v.error || fs.error);
    const rule = { metric: f.metric.trim(), op: f.op, value: v.value, for_s: fs.value ?? 0 };
    if (f.device_id.trim()) rule.device_id = f.device_id.trim();
    if (admin) rule.tenant = f.tenant || tenants.data?.items[0]?.id;
    if (await act.run(() => api.createRule(rule))) {
      setF({ ...f, metric: '', value: '', device_id: '' });
      onCreated();
    }
  };
  return (
    <form class="card row" onSubmit={submit} aria-label="New rule">
      <Field label="Metric" value={f.metric} onInput={set('metric')} name="metric" required />
      <Select label="Operator" value={f.op} onChange={set('op')} name="op" options={OPS.map((o) => [o, o])} />
      <Field label="Value" value={f.value} onInput={set('value')} name="value" inputMode="decimal" required />
      <Field label="For (s)" value={f.for_s} onInput={set('for_s')} name="for_s" inputMode="numeric" placeholder="0" />
      <Field label="Device (optional)" value={f.device_id} onInput={set('device_id')} name="device_id" />
      {admin && tenants.data && (
        <Select label="Tenant" value={f.tenant || tenants.data.items[0]?.id || ''} onChange={set('tenant')} name="tenant"
          options={tenants.data.items.map((t) => [t.id, t.name || t.id])} />
      )}
      <ErrorText error={act.error} />
      <button type="submit" class="primary" disabled={act.busy}>Create rule</button>
    </form>
  );
}
