// Integration tests start the built programs as processes: build once before any test runs.
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';

export default function setup(): void {
  // While iterating on one unit test file: SLIM_TEST_SKIP_BUILD=1 npx vitest run test/x.test.ts
  if (process.env['SLIM_TEST_SKIP_BUILD'] === '1') return;
  const root = resolve(import.meta.dirname, '../..');
  execFileSync(process.execPath, [resolve(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
}
