import { useState } from 'preact/hooks';
import { useAction } from './hooks.js';
import { ErrorText, Field } from './ui.jsx';
import { parseArgs, parseOptionalInt } from '../lib/validate.js';

/**
 * The command form: name, args (a JSON object), optional time to live.
 * `send(cmd)` posts it (to one device, or to many); `onSent` gets its answer.
 */
export default function SendCommand({ send, onSent, label = 'Send a command', button = 'Send command' }) {
  const [name, setName] = useState('');
  const [args, setArgs] = useState('{}');
  const [ttl, setTtl] = useState('');
  const act = useAction();
  const submit = async (e) => {
    e.preventDefault();
    const a = parseArgs(args);
    const t = parseOptionalInt(ttl, 'ttl_s', 1, 2592000);
    if (a.error || t.error) return act.setError(a.error || t.error);
    const r = await act.run(() => send({ name: name.trim(), args: a.value, ttl_s: t.value }));
    if (r) { setName(''); onSent(r); }
  };
  return (
    <form class="card send" onSubmit={submit} aria-label={label}>
      <Field label="Command" value={name} onInput={setName} name="name" required pattern="[A-Za-z0-9_.:\-]{1,64}" placeholder="reboot" />
      <label class="field grow">
        <span>Args (JSON object)</span>
        <textarea name="args" rows={2} value={args} onInput={(e) => setArgs(e.currentTarget.value)} class="mono" />
      </label>
      <Field label="TTL (s, optional)" value={ttl} onInput={setTtl} name="ttl_s" inputMode="numeric" placeholder="86400" />
      <ErrorText error={act.error} />
      <button type="submit" class="primary" disabled={act.busy}>{button}</button>
    </form>
  );
}
