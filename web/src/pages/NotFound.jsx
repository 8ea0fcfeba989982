import { Link } from '../components/router.jsx';

/** Unknown pages, devices of other tenants, and pages the role may not see. */
export default function NotFound({ what = 'This page' }) {
  return (
    <section class="notfound">
      <h1>Not found</h1>
      <p>{what} was not found, or you may not see it.</p>
      <p><Link href="/">Back to the fleet</Link></p>
    </section>
  );
}
