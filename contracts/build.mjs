// Compiles the test contracts with the pinned npm `solc` and writes contracts/artifacts/*.json.
// Output is deterministic (sorted keys, 2-space indent, trailing newline): rebuilding gives
// byte-identical files. Run with `npm run build:contracts`.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(HERE);
const OUT = join(HERE, "artifacts");
const CONTRACTS = ["TestToken", "ContractWallet", "Batcher", "Eip3009Token"];
const EVM_VERSION = "cancun";

const sources = {};
for (const name of CONTRACTS) {
  const path = relative(ROOT, join(HERE, `${name}.sol`)).split("\\").join("/");
  sources[path] = { content: readFileSync(join(ROOT, path), "utf8") };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: EVM_VERSION,
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
  }
  return value;
}

mkdirSync(OUT, { recursive: true });
for (const source of Object.keys(sources)) {
  const name = source.split("/").pop().replace(/\.sol$/, "");
  const compiled = output.contracts[source][name];
  const artifact = {
    contractName: name,
    abi: compiled.abi,
    bytecode: "0x" + compiled.evm.bytecode.object,
    compiler: solc.version(),
    source,
  };
  const file = join(OUT, `${name}.json`);
  writeFileSync(file, JSON.stringify(sortKeys(artifact), null, 2) + "\n");
  console.log(`wrote ${relative(ROOT, file)} (${compiled.evm.bytecode.object.length / 2} bytes)`);
}
