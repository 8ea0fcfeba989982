import { useState } from 'preact/hooks';
import { api } from '../api.js';
import { useAction, useResource } from '../components/hooks.js';
import { Confirm, ErrorText, Field, Select } from '../components/ui.jsx';
import { formatTime } from '../lib/format.js';
import { passwordError } from '../lib/validate.js';

export default function Users({ user: me }) {
  const list = useResource(() => api.users({ limit: 1000 }), [], 0);
  const tenants = useResource(() => api.tenants(), [], 0);
  const [doomed, setDoomed] = useState(null);
  const [resetting, setResetting] = useState(null);
  const [notice, setNotice] = useState('');
  const act = useAction();
  const remove = async () => {
    const u = doomed;
    setDoomed(null);
    if (await act.run(() => api.deleteUser(u.username)) !== undefined) { setNotice(`Deleted ${u.username}.`); list.reload(); }
  };
  return (
    <section>
      <h1>Users</h1>
      <NewUser tenants={tenants.data?.items || []} onCreated={(u) => { setNotice(`Created ${u.username}.`); list.reload(); }} />
      {notice && <p class="ok" role="status">{notice}</p>}
      <ErrorText error={list.error || act.error} />
      {list.data && (
        <div class="scroll">
          <table>
            <thead><tr><th>Username</th><th>Role</th><th>Tenant</th><th>Created</th><th><span class="sr">Actions</span></th></tr></thead>
            <tbody>
              {list.data.items.map((u) => (
                <tr key={u.username} data-user={u.username}>
                  <td>{u.username}</td><td>{u.role}</td><td>{u.tenant || '—'}</td><td>{formatTime(u.created_ms)}</td>
                  <td class="buttons">
                    <button type="button" onClick={() => setResetting(u)}>Reset password</button>
                    {u.username !== me.username && <button type="button" class="danger" onClick={() => setDoomed(u)}>Delete</button>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {doomed && (
        <Confirm title={`Delete user ${doomed.username}?`} confirmLabel="Delete" onConfirm={remove} onCancel={() => setDoomed(null)}>
          <p>Their sessions end and they cannot log in again.</p>
        </Confirm>
      )}
      {resetting && <ResetPassword user={resetting} onDone={(msg) => { setResetting(null); if (msg) setNotice(msg); }} />}
    </section>
  );
}

function NewUser({ tenants, onCreated }) {
  const blank = { username: '', password: '', role: 'viewer', tenant: '' };
  const [f, setF] = useState(blank);
  const set = (k) => (v) => setF({ ...f, [k]: v });
  const act = useAction();
  const submit = async (e) => {
    e.preventDefault();
    const bad = passwordError(f.password);
    if (bad) return act.setError(bad);
    const body = { username: f.username.trim(), password: f.password, role: f.role };
    const tenant = f.tenant || tenants[0]?.id;
    if (f.role !== 'admin') body.tenant = tenant;
    const u = await act.run(() => api.createUser(body));
    if (u) { setF(blank); onCreated(u); }
  };
  return (
    <form class="card row" onSubmit={submit} aria-label="New user">
      <Field label="Username" value={f.username} onInput={set('username')} name="username" required autocomplete="off" />
      <Field label="Password" type="password" value={f.password} onInput={set('password')} name="password" required autocomplete="new-password" />
      <Select label="Role" value={f.role} onChange={set('role')} name="role" options={[['viewer', 'viewer'], ['operator', 'operator'], ['admin', 'admin']]} />
      {f.role !== 'admin' && (
        <Select label="Tenant" value={f.tenant || tenants[0]?.id || ''} onChange={set('tenant')} name="tenant" options={tenants.map((t) => [t.id, t.name || t.id])} />
      )}
      <ErrorText error={act.error} />
      <button type="submit" class="primary" disabled={act.busy}>Create user</button>
    </form>
  );
}

function ResetPassword({ user, onDone }) {
  const [pw, setPw] = useState('');
  const act = useAction();
  const submit = async () => {
    const bad = passwordError(pw);
    if (bad) return act.setError(bad);
    if (await act.run(() => api.resetPassword(user.username, pw))) onDone(`Password of ${user.username} reset.`);
  };
  return (
    <Confirm title={`Reset the password of ${user.username}`} confirmLabel="Reset password" danger={false} onConfirm={submit} onCancel={() => onDone()}>
      <Field label="New password" type="password" value={pw} onInput={setPw} name="new-password" autocomplete="new-password" required />
      <ErrorText error={act.error} />
    </Confirm>
  );
}
