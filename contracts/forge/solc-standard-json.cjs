// Standard JSON in on stdin, standard JSON out on stdout, through the pinned solcjs (see ./solc).
const fs = require('fs');
const path = require('path');
const solc = require(path.join(__dirname, '..', '..', 'node_modules', 'solc'));

if (process.argv.includes('--version')) {
  const version = solc.version().replace('.Emscripten.clang', '');
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${version}.Linux.g++\n`);
} else {
  const findImports = (file) => {
    try {
      return { contents: fs.readFileSync(path.resolve(file), 'utf8') };
    } catch (err) {
      return { error: `cannot read ${file}: ${err.message}` };
    }
  };
  process.stdout.write(solc.compile(fs.readFileSync(0, 'utf8'), { import: findImports }));
}
