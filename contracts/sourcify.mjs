// Verify a deployed contract the way Sourcify does, with Sourcify's own library (@ethereum-sourcify/lib-sourcify).
//
// Usage: node contracts/sourcify.mjs <request.json>
// request: {"input": <path of the standard-JSON input>, "path": "src/Runs.sol", "name": "Runs",
//           "rpc": "http://127.0.0.1:8545", "chainId": 31337, "address": "0x…", "creationTx": "0x…" | null}
// Prints one JSON line: {"compiler": "0.8.28+commit…", "runtimeMatch": …, "creationMatch": …} on success,
// {"error": "…"} and exit code 1 on failure. The compiler is the project's pinned solcjs (npm `solc`), so
// nothing is downloaded: lib-sourcify recompiles the committed input and compares both bytecodes
// (a "perfect" match also covers the metadata hash, i.e. every source byte).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

function fail(message) {
  process.stdout.write(JSON.stringify({ error: message }) + '\n');
  process.exit(1);
}

let request;
try {
  request = JSON.parse(readFileSync(process.argv[2], 'utf8'));
} catch (err) {
  fail(`cannot read the request ${process.argv[2]}: ${err.message}`);
}

// lib-sourcify logs progress on the console; keep stdout for the result line alone.
console.log = (...args) => process.stderr.write(args.join(' ') + '\n');
console.info = console.log;
console.debug = console.log;

const solc = require('solc');
const { SolidityCompilation, Verification, SourcifyChain } = await import('@ethereum-sourcify/lib-sourcify');

const version = solc.version().replace('.Emscripten.clang', '');
const compiler = {
  async compile(wanted, jsonInput) {
    if (wanted !== version) throw new Error(`the input asks for solc ${wanted}, the pinned solcjs is ${version}`);
    return JSON.parse(solc.compile(JSON.stringify(jsonInput)));
  },
};

try {
  const input = JSON.parse(readFileSync(request.input, 'utf8'));
  const compilation = new SolidityCompilation(compiler, version, input, { path: request.path, name: request.name });
  const chain = new SourcifyChain({
    name: 'fedchain',
    chainId: Number(request.chainId),
    rpcs: [{ rpc: request.rpc }],
    rpc: [request.rpc],
    supported: true,
  });
  const verification = new Verification(compilation, chain, request.address, request.creationTx ?? undefined);
  await verification.verify();
  const status = verification.status;
  process.stdout.write(
    JSON.stringify({ compiler: version, runtimeMatch: status.runtimeMatch ?? null, creationMatch: status.creationMatch ?? null }) +
      '\n',
  );
} catch (err) {
  fail(String(err?.message ?? err));
}
