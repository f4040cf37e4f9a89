// Writes the field rules of every request body in openapi.json (lengths, bounds, patterns,
// item counts) as a TypeScript module, so the dashboard's forms check what the server
// checks without restating it, and the values of every enum schema (e.g. the final states of
// an execution). Run by `npm run gen:api`; `npm run check:api` compares.
//   node scripts/constraints.mjs [openapi.json] [out.ts]
import { readFileSync, writeFileSync } from "node:fs";

const [specPath = "openapi.json", outPath = "src/api/constraints.ts"] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(specPath, "utf8"));
const KEYS = [
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "minLength",
  "maxLength",
  "pattern",
  "minItems",
  "maxItems",
];

/** The rules of one property; for `X | null` those of X. */
function rulesOf(schema) {
  const rules = {};
  const branches = [schema, ...(schema.anyOf ?? []).filter((branch) => branch.type !== "null")];
  for (const branch of branches) {
    for (const key of KEYS) if (branch[key] !== undefined) rules[key] = branch[key];
  }
  return rules;
}

/** The request bodies and every schema they hold (e.g. an execution's options). */
const bodies = new Set();
function add(schema) {
  if (!schema || typeof schema !== "object") return;
  if (typeof schema.$ref === "string") {
    const name = schema.$ref.split("/").pop();
    if (bodies.has(name)) return;
    bodies.add(name);
    add(spec.components.schemas[name]);
    return;
  }
  for (const value of Object.values(schema.properties ?? {})) add(value);
  for (const branch of [...(schema.anyOf ?? []), ...(schema.allOf ?? [])]) add(branch);
  add(schema.items);
}
for (const operations of Object.values(spec.paths)) {
  for (const operation of Object.values(operations)) {
    add(operation?.requestBody?.content?.["application/json"]?.schema);
  }
}

const out = {};
for (const name of [...bodies].sort()) {
  const properties = spec.components.schemas[name]?.properties ?? {};
  const fields = {};
  for (const field of Object.keys(properties).sort()) {
    const rules = rulesOf(properties[field]);
    if (Object.keys(rules).length > 0) fields[field] = rules;
  }
  if (Object.keys(fields).length > 0) out[name] = fields;
}

// The values of every enum schema (an execution's states, the final ones among them, roles,
// ...), for code that must list them at run time rather than only type-check against them.
const enums = {};
for (const [name, schema] of Object.entries(spec.components.schemas).sort()) {
  if (Array.isArray(schema.enum)) enums[name] = schema.enum;
}

const HEADER =
  "// Generated from openapi.json by scripts/constraints.mjs (npm run gen:api): do not edit.";
writeFileSync(
  outPath,
  `${HEADER}\nexport const constraints = ${JSON.stringify(out, null, 2)} as const;\n` +
    `\nexport const enums = ${JSON.stringify(enums, null, 2)} as const;\n`,
);
