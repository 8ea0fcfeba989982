// The console's entry: who is logged in, the routes, the frame.

import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import './style.css';
import { api, isAdmin, setUnauthorizedHandler } from './api.js';
import { matchRoute, withQuery, safeNext } from './lib/url.js';
import { useLocation, navigate, here } from './components/router.jsx';
import { Layout } from './components/Layout.jsx';
import { ErrorText } from './components/ui.jsx';
import Login from './pages/Login.jsx';
import Fleet from './pages/Fleet.jsx';
import Device from './pages/Device.jsx';
import Alerts from './pages/Alerts.jsx';
import Rules from './pages/Rules.jsx';
import Tenants from './pages/Tenants.jsx';
import Users from './pages/Users.jsx';
import AdminDevices from './pages/AdminDevices.jsx';
import Cluster from './pages/Cluster.jsx';
import Account from './pages/Account.jsx';
import NotFound from './pages/NotFound.jsx';

const routes = [
  { path: '/', page: Fleet, title: 'Fleet' },
  { path: '/devices/:id', page: Device, title: 'Device' },
  { path: '/alerts', page: Alerts, title: 'Alerts' },
  { path: '/rules', page: Rules, title: 'Rules' },
  { path: '/admin/tenants', page: Tenants, title: 'Tenants', admin: true },
  { path: '/admin/users', page: Users, title: 'Users', admin: true },
  { path: '/admin/devices', page: AdminDevices, title: 'Devices', admin: true },
  { path: '/cluster', page: Cluster, title: 'Cluster', admin: true },
  { path: '/account', page: Account, title: 'Account' },
];

const toLogin = () => navigate(withQuery('/login', { next: here() }), { replace: true });

function App() {
  const loc = useLocation();
  const onLoginPage = loc.path === '/login';
  // undefined: not known yet; null: nobody.
  const [user, setUser] = useState(onLoginPage ? null : undefined);
  const [error, setError] = useState(null);

  useEffect(() => {
    setUnauthorizedHandler(() => {
      setUser(null);
      if (location.pathname !== '/login') toLogin();
    });
    if (onLoginPage) return;
    api.me().then(setUser, (e) => {
      if (e.status === 401) {
        setUser(null);
        toLogin();
      } else setError(e);
    });
  }, []);

  const m = onLoginPage ? null : matchRoute(routes, loc.path);
  useEffect(() => {
    document.title = `${onLoginPage ? 'Log in' : m ? m.route.title : 'Not found'} · troupe`;
  });

  if (onLoginPage)
    return <Login next={loc.query.next} onLogin={(u) => { setUser(u); navigate(safeNext(loc.query.next), { replace: true }); }} />;
  if (error) return <main class="center"><ErrorText error={error} /></main>;
  if (!user) return <main class="center" aria-busy="true">Loading…</main>;

  const logout = async () => {
    try { await api.logout(); } catch { /* gone already */ }
    setUser(null);
    navigate('/login');
  };
  let body;
  if (!m || (m.route.admin && !isAdmin(user))) body = <NotFound />;
  else {
    const Page = m.route.page;
    body = <Page key={m.route.path + JSON.stringify(m.params)} user={user} params={m.params} query={loc.query} state={loc.state} />;
  }
  return <Layout user={user} path={loc.path} onLogout={logout}>{body}</Layout>;
}

render(<App />, document.getElementById('app'));
