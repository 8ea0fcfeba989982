// The API client: same-origin fetch with the session cookie, JSON in and
// out, errors as ApiError carrying API.md's error code and message.

import { withQuery, seg } from './lib/url.js';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};

/** Called with no arguments whenever a request answers 401 (the session ended). */
export function setUnauthorizedHandler(f) {
  onUnauthorized = f;
}

/** Sends a request; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function request(method, path, { body, query, text = false, quiet401 = false } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: text ? 'text/plain' : 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(withQuery(path, query), init);
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach the server (${e.message})`);
  }
  if (res.ok) {
    if (res.status === 204) return null;
    return text ? res.text() : res.json();
  }
  let code = 'http_' + res.status, message = `${res.status} ${res.statusText}`;
  try {
    const e = (await res.json()).error;
    if (e) ({ code, message } = e);
  } catch { /* not JSON */ }
  if (res.status === 401 && !quiet401) onUnauthorized();
  throw new ApiError(res.status, code, message);
}

const get = (path, query) => request('GET', path, { query });
const post = (path, body) => request('POST', path, { body: body ?? {} });
const del = (path) => request('DELETE', path);
const dev = (id) => `/api/v1/devices/${seg(id)}`;

export const api = {
  login: (username, password) => request('POST', '/api/v1/login', { body: { username, password }, quiet401: true }),
  logout: () => request('POST', '/api/v1/logout', { body: {}, quiet401: true }),
  me: () => request('GET', '/api/v1/me', { quiet401: true }),
  changePassword: (current_password, new_password) => post('/api/v1/me/password', { current_password, new_password }),

  devices: (query) => get('/api/v1/devices', query),
  device: (id) => get(dev(id)),
  telemetry: (id, query) => get(`${dev(id)}/telemetry`, query),
  commands: (id) => get(`${dev(id)}/commands`, { limit: 50 }),
  sendCommand: (id, cmd) => post(`${dev(id)}/commands`, cmd),
  sendCommands: (ids, cmd) => post('/api/v1/commands', { device_ids: ids, ...cmd }),
  sendCommandsWhere: (filter, cmd) => post('/api/v1/commands', { filter, ...cmd }),
  cancelCommand: (id, cid) => post(`${dev(id)}/commands/${seg(cid)}/cancel`, {}),
  analysis: (id) => get(`${dev(id)}/analysis`),

  alerts: (query) => get('/api/v1/alerts', query),
  closeAlert: (id) => post(`/api/v1/alerts/${seg(id)}/close`),
  rules: (query) => get('/api/v1/rules', query),
  createRule: (rule) => post('/api/v1/rules', rule),
  deleteRule: (id) => del(`/api/v1/rules/${seg(id)}`),

  tenants: () => get('/api/v1/admin/tenants'),
  createTenant: (t) => post('/api/v1/admin/tenants', t),
  users: (query) => get('/api/v1/admin/users', query),
  createUser: (u) => post('/api/v1/admin/users', u),
  deleteUser: (name) => del(`/api/v1/admin/users/${seg(name)}`),
  resetPassword: (name, password) => post(`/api/v1/admin/users/${seg(name)}/password`, { password }),
  registerDevices: (specs) => post('/api/v1/admin/devices', specs),
  updateDevice: (id, change) => request('PATCH', `/api/v1/admin/devices/${seg(id)}`, { body: change }),
  rotateSecret: (id) => post(`/api/v1/admin/devices/${seg(id)}/rotate-secret`),
  deleteDevice: (id) => del(`/api/v1/admin/devices/${seg(id)}`),

  cluster: () => get('/api/v1/cluster'),
  drain: (id) => post(`/api/v1/cluster/nodes/${seg(id)}/drain`),
  metrics: () => request('GET', '/metrics', { text: true }),
};

/** Who may do what. */
export const canOperate = (user) => user?.role === 'admin' || user?.role === 'operator';
export const isAdmin = (user) => user?.role === 'admin';
