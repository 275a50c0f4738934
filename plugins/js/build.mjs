// Builds one JavaScript plugin into a WebAssembly component with the componentize-js
// node API (the `jco componentize` CLI fails on wit paths here; see TOOLCHAINS.md).
// Usage: node build.mjs NODE_MODULES SOURCE.js WIT_DIR WORLD OUT.wasm
// NODE_MODULES is where `npm ci` installed the plugin's package-lock.json.
import { writeFile, rename } from 'node:fs/promises';
import { resolve, join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [nodeModules, source, wit, world, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node build.mjs NODE_MODULES SOURCE.js WIT_DIR WORLD OUT.wasm');
  process.exit(2);
}
const entry = join(resolve(nodeModules), '@bytecodealliance/componentize-js/src/componentize.js');
const { componentize } = await import(pathToFileURL(entry).href);
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(wit),
  worldName: world,
  // No WASI randomness, clocks or HTTP: the host gives none (stdout/stderr stay: the
  // host captures them).
  disableFeatures: ['random', 'clocks', 'http', 'fetch-event'],
});
const tmp = `${resolve(out)}.tmp${process.pid}`;
await writeFile(tmp, component);
await rename(tmp, resolve(out));
