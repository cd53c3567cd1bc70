// Reads {cases: [{name, schema, outputs: [text]}]} and checks that every
// output parses as JSON and validates against its schema (ajv, draft
// 2020-12, with ajv-formats in full mode). Prints each failure; exits 1 on
// any, 0 with a count otherwise.
"use strict";
const fs = require("fs");
const Ajv2020 = require("ajv/dist/2020").default;
const addFormats = require("ajv-formats").default;

const input = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
let checked = 0;
let failed = 0;
for (const c of input.cases) {
  const ajv = new Ajv2020({ allErrors: true, strict: false });
  addFormats(ajv);
  const validate = ajv.compile(c.schema);
  for (const text of c.outputs) {
    checked++;
    let value;
    try {
      value = JSON.parse(text);
    } catch (e) {
      failed++;
      console.log(`${c.name}: does not parse (${e.message}): ${text}`);
      continue;
    }
    if (!validate(value)) {
      failed++;
      console.log(`${c.name}: invalid ${JSON.stringify(validate.errors)}: ${text}`);
    }
  }
}
console.log(`ajv: ${checked} outputs checked, ${failed} invalid`);
process.exit(failed === 0 && checked > 0 ? 0 : 1);
