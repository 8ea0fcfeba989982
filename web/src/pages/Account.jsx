import { useState } from 'preact/hooks';
import { api } from '../api.js';
import { useAction } from '../components/hooks.js';
import { ErrorText, Field } from '../components/ui.jsx';
import { passwordError } from '../lib/validate.js';

export default function Account({ user }) {
  const [cur, setCur] = useState('');
  const [pw, setPw] = useState('');
  const [pw2, setPw2] = useState('');
  const [done, setDone] = useState(false);
  const act = useAction();
  const submit = async (e) => {
    e.preventDefault();
    setDone(false);
    const bad = passwordError(pw) || (pw !== pw2 ? 'the new passwords differ' : null);
    if (bad) return act.setError(bad);
    const r = await act.run(() => api.changePassword(cur, pw));
    if (r) { setDone(true); setCur(''); setPw(''); setPw2(''); }
  };
  return (
    <section>
      <h1>Account</h1>
      <p>{user.username}, {user.role}{user.tenant ? ` in ${user.tenant}` : ''}.</p>
      <form onSubmit={submit} class="card narrow">
        <h2>Change password</h2>
        <Field label="Current password" type="password" value={cur} onInput={setCur} autocomplete="current-password" required />
        <Field label="New password" type="password" value={pw} onInput={setPw} autocomplete="new-password" required minLength={8} />
        <Field label="New password again" type="password" value={pw2} onInput={setPw2} autocomplete="new-password" required />
        <ErrorText error={act.error} />
        {done && <p class="ok" role="status">Password changed.</p>}
        <button type="submit" class="primary" disabled={act.busy}>Change password</button>
      </form>
    </section>
  );
}
