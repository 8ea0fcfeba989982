import { useState } from 'preact/hooks';
import { api } from '../api.js';
import { useAction } from '../components/hooks.js';
import { ErrorText, Field } from '../components/ui.jsx';

export default function Login({ onLogin }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const act = useAction();
  const submit = async (e) => {
    e.preventDefault();
    const r = await act.run(() => api.login(username, password));
    if (r) onLogin(r.user);
  };
  return (
    <main class="login">
      <form onSubmit={submit} class="card">
        <h1>troupe console</h1>
        <Field label="Username" value={username} onInput={setUsername} name="username" autocomplete="username" required autofocus />
        <Field label="Password" type="password" value={password} onInput={setPassword} name="password" autocomplete="current-password" required />
        <ErrorText error={act.error} />
        <button type="submit" class="primary" disabled={act.busy}>Log in</button>
      </form>
    </main>
  );
}
