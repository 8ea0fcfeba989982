import { defineConfig } from 'vite';

// `npx vite` serves the console and forwards the API to a running node
// (TROUPE_URL, default http://127.0.0.1:8080).
const node = process.env.TROUPE_URL || 'http://127.0.0.1:8080';
const proxy = Object.fromEntries(['/api', '/metrics', '/healthz', '/readyz'].map((p) => [p, { target: node }]));

export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: { target: 'es2020', chunkSizeWarningLimit: 200 },
  server: { proxy },
  preview: { proxy },
  test: { include: ['src/**/*.test.js'] },
});
