import { useState } from 'preact/hooks';
import { api } from '../api.js';
import { useAction, useResource } from '../components/hooks.js';
import { ErrorText, Field } from '../components/ui.jsx';
import { formatTime } from '../lib/format.js';

export default function Tenants() {
  const list = useResource(() => api.tenants(), [], 0);
  const [id, setId] = useState('');
  const [name, setName] = useState('');
  const act = useAction();
  const submit = async (e) => {
    e.preventDefault();
    if (await act.run(() => api.createTenant({ id: id.trim(), name: name.trim() || id.trim() }))) {
      setId(''); setName(''); list.reload();
    }
  };
  return (
    <section>
      <h1>Tenants</h1>
      <form class="card row" onSubmit={submit} aria-label="New tenant">
        <Field label="Id" value={id} onInput={setId} name="id" required pattern="[A-Za-z0-9_.:\-]{1,64}" />
        <Field label="Name" value={name} onInput={setName} name="name" />
        <ErrorText error={act.error} />
        <button type="submit" class="primary" disabled={act.busy}>Create tenant</button>
      </form>
      <ErrorText error={list.error} />
      {list.data && (
        <div class="scroll">
          <table>
            <thead><tr><th>Id</th><th>Name</th><th>Created</th></tr></thead>
            <tbody>
              {list.data.items.map((t) => (
                <tr key={t.id} data-tenant={t.id}><td>{t.id}</td><td>{t.name}</td><td>{formatTime(t.created_ms)}</td></tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
