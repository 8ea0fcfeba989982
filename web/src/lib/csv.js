// CSV (RFC 4180) parsing and writing, and the device import format `id,name,tenant`.

export const ID_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Rows of fields; quoted fields may hold commas, quotes ("") and newlines. Blank lines are skipped. */
export function parseCsv(text) {
  const rows = [];
  let row = [], field = '', quoted = false, i = 0, any = false;
  const s = String(text).replace(/^\uFEFF/, '');
  const endField = () => { row.push(field); field = ''; };
  const endRow = () => {
    endField();
    if (any || row.length > 1 || row[0] !== '') rows.push(row);
    row = []; any = false;
  };
  while (i < s.length) {
    const c = s[i];
    if (quoted) {
      if (c === '"') {
        if (s[i + 1] === '"') { field += '"'; i++; } else quoted = false;
      } else field += c;
    } else if (c === '"') { quoted = true; any = true; }
    else if (c === ',') endField();
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && s[i + 1] === '\n') i++;
      endRow();
    } else field += c;
    i++;
  }
  if (field !== '' || row.length || any) endRow();
  return rows;
}

function quote(v) {
  const s = v == null ? '' : String(v);
  return /[",\r\n]|^\s|\s$/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Writes rows as CSV text with CRLF line ends. */
export function toCsv(rows) {
  return rows.map((r) => r.map(quote).join(',')).join('\r\n') + '\r\n';
}

/**
 * Reads `id,name,tenant` rows (header optional; name and tenant optional,
 * tenant then `defaultTenant`). Returns `{devices, errors}`, errors naming lines.
 */
export function parseDeviceCsv(text, defaultTenant = '') {
  const rows = parseCsv(text).map((r) => r.map((f) => f.trim()));
  const devices = [], errors = [];
  const seen = new Set();
  rows.forEach((r, n) => {
    if (n === 0 && r[0].toLowerCase() === 'id') return;
    if (r.every((f) => f === '')) return;
    const [id, name = '', tenant = ''] = r;
    const where = `line ${n + 1}`;
    if (!ID_RE.test(id)) return errors.push(`${where}: invalid device id "${id}"`);
    if (seen.has(id)) return errors.push(`${where}: device ${id} appears twice`);
    const t = tenant || defaultTenant;
    if (!t) return errors.push(`${where}: no tenant for ${id}`);
    if (!ID_RE.test(t)) return errors.push(`${where}: invalid tenant "${t}"`);
    seen.add(id);
    devices.push({ id, name: name || id, tenant: t });
  });
  return { devices, errors };
}

/** The CSV of registered devices and their secrets, with a header. */
export function secretsCsv(items) {
  return toCsv([['id', 'name', 'tenant', 'secret'], ...items.map((d) => [d.id, d.name, d.tenant, d.secret])]);
}
