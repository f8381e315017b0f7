// Records in the built package.json a hash of the sources it was built from;
// tests/unit/test_jupyterlab_build.py recomputes it and fails when the build is older.
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';

const SOURCES = ['package.json', 'package-lock.json', 'tsconfig.json', 'stamp.mjs'];
const files = [...SOURCES, ...readdirSync('src').map(name => `src/${name}`)].sort();
const hash = createHash('sha256');
for (const file of files) {
  hash.update(`${file}\0`).update(readFileSync(file)).update('\0');
}
const built = '../share/labextensions/smartlab-jupyterlab/package.json';
const pkg = JSON.parse(readFileSync(built, 'utf8'));
pkg.smartlab = { sourceHash: hash.digest('hex') };
writeFileSync(built, JSON.stringify(pkg, null, 2) + '\n');
console.log(`${built}: sourceHash ${pkg.smartlab.sourceHash}`);
