// Builds {{name}}.wasm (a WebAssembly component, SpiderMonkey inside: ~12 MB) with the
// componentize-js node API (pinned in package-lock.json). Run: npm ci && node build.mjs
import { writeFile } from 'node:fs/promises';
import { componentize } from '@bytecodealliance/componentize-js';

const { component } = await componentize({
  sourcePath: new URL('./app.js', import.meta.url).pathname,
  witPath: new URL('./wit', import.meta.url).pathname,
  worldName: '{{world}}',
  // The host gives no randomness, clocks or HTTP; stdout/stderr are captured.
  disableFeatures: ['random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(new URL('./{{name}}.wasm', import.meta.url), component);
console.log('built {{name}}.wasm');
