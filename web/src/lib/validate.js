// Client-side checks of form input, mirroring the API's rules.

import { ID_RE } from './csv.js';

export { ID_RE };

/** Command args from a JSON textarea: `{value}` (an object; blank is {}) or `{error}`. */
export function parseArgs(text) {
  if (!text || !text.trim()) return { value: {} };
  let v;
  try { v = JSON.parse(text); } catch (e) { return { error: `args is not valid JSON: ${e.message}` }; }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return { error: 'args must be a JSON object, like {"delay_s": 5}' };
  return { value: v };
}

/** An optional integer in [min, max]: `{value}` (undefined when blank) or `{error}`. */
export function parseOptionalInt(text, name, min, max) {
  const s = String(text ?? '').trim();
  if (!s) return { value: undefined };
  if (!/^-?\d+$/.test(s) || Number(s) < min || Number(s) > max) return { error: `${name} must be an integer from ${min} to ${max}` };
  return { value: Number(s) };
}

/** The longest silence window the API takes, s (a year). */
export const MAX_SILENCE_S = 365 * 86400;

/**
 * A silence window typed in minutes (decimals allowed): `{value}` in whole
 * seconds, null when blank (the node's default), or `{error}`.
 */
export function parseSilenceMinutes(text) {
  const s = String(text ?? '').trim();
  if (!s) return { value: null };
  const secs = Math.round(Number(s) * 60);
  if (!/^\d+(\.\d+)?$/.test(s) || secs < 1 || secs > MAX_SILENCE_S) {
    return { error: `the silence window must be a number of minutes up to ${MAX_SILENCE_S / 60} (a year), or blank for the node's default` };
  }
  return { value: secs };
}

/** A finite number: `{value}` or `{error}`. */
export function parseNumber(text, name) {
  const s = String(text ?? '').trim();
  const v = Number(s);
  return s && Number.isFinite(v) ? { value: v } : { error: `${name} must be a number` };
}

/** A password the API accepts (8..1024 characters), or an error text. */
export function passwordError(pw) {
  return pw.length < 8 || pw.length > 1024 ? 'password must be 8 to 1024 characters' : null;
}
