// Small shared pieces: errors, confirmations, secrets, fields.

import { useEffect, useRef } from 'preact/hooks';

/** An API error (or text) inline, announced to screen readers. */
export function ErrorText({ error }) {
  if (!error) return null;
  return <p class="error" role="alert">{typeof error === 'string' ? error : error.message}</p>;
}

/** A modal confirmation (native <dialog>: focus stays inside, Esc cancels). */
export function Confirm({ title, children, confirmLabel = 'Confirm', danger = true, onConfirm, onCancel }) {
  const ref = useRef();
  useEffect(() => {
    ref.current.showModal();
  }, []);
  return (
    <dialog ref={ref} class="dialog" aria-labelledby="dialog-title" onCancel={(e) => { e.preventDefault(); onCancel(); }}>
      <form method="dialog" onSubmit={(e) => { e.preventDefault(); onConfirm(); }}>
        <h2 id="dialog-title">{title}</h2>
        <div>{children}</div>
        <div class="actions">
          <button type="button" onClick={onCancel}>Cancel</button>
          <button type="submit" class={danger ? 'danger' : 'primary'}>{confirmLabel}</button>
        </div>
      </form>
    </dialog>
  );
}

/** A secret shown once, focused and selected for copying. */
export function Secret({ label, value, onDone }) {
  const ref = useRef();
  useEffect(() => ref.current.focus(), [value]);
  return (
    <div class="secret" role="status">
      <label>
        {label} (shown only now; store it safely)
        <input ref={ref} readOnly value={value} class="mono" onFocus={(e) => e.currentTarget.select()} data-secret />
      </label>
      {onDone && <button type="button" onClick={onDone}>Done</button>}
    </div>
  );
}

/** A labelled input; extra props go to the <input>. */
export function Field({ label, value, onInput, ...props }) {
  return (
    <label class="field">
      <span>{label}</span>
      <input value={value} onInput={(e) => onInput(e.currentTarget.value)} {...props} />
    </label>
  );
}

/** A labelled <select> of [value, text] pairs. */
export function Select({ label, value, onChange, options, ...props }) {
  return (
    <label class="field">
      <span>{label}</span>
      <select value={value} onChange={(e) => onChange(e.currentTarget.value)} {...props}>
        {options.map(([v, t]) => <option value={v} key={v}>{t}</option>)}
      </select>
    </label>
  );
}

/** A status word as a coloured badge. */
export function Badge({ kind, children }) {
  return <span class={`badge badge-${kind}`}>{children}</span>;
}
