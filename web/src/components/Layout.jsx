// The page frame: header with navigation (collapsible on narrow screens),
// who is logged in, logout.

import { useState } from 'preact/hooks';
import { Link } from './router.jsx';
import { isAdmin } from '../api.js';

function nav(user) {
  const items = [['/', 'Fleet'], ['/alerts', 'Alerts'], ['/rules', 'Rules']];
  if (isAdmin(user))
    items.push(['/admin/tenants', 'Tenants'], ['/admin/users', 'Users'], ['/admin/devices', 'Devices'], ['/cluster', 'Cluster']);
  return items;
}

const active = (path, href) => (href === '/' ? path === '/' || path.startsWith('/devices/') : path.startsWith(href));

export function Layout({ user, path, onLogout, children }) {
  const [open, setOpen] = useState(false);
  return (
    <>
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <Link href="/" class="brand">troupe</Link>
        <button type="button" class="menu" aria-expanded={open} aria-controls="nav" onClick={() => setOpen(!open)}>
          Menu
        </button>
        <nav id="nav" class={open ? 'open' : ''} aria-label="Main">
          <ul>
            {nav(user).map(([href, text]) => (
              <li key={href}>
                <Link href={href} aria-current={active(path, href) ? 'page' : undefined} onClick={() => setOpen(false)}>{text}</Link>
              </li>
            ))}
          </ul>
          <div class="who">
            <Link href="/account" onClick={() => setOpen(false)} data-user={user.username}>
              {user.username} <small>({user.role}{user.tenant ? `, ${user.tenant}` : ''})</small>
            </Link>
            <button type="button" onClick={onLogout}>Log out</button>
          </div>
        </nav>
      </header>
      <main id="main" tabIndex={-1}>{children}</main>
    </>
  );
}
