// Validates every manifest of packaging/kubernetes against the Kubernetes
// OpenAPI schemas (npm kubernetes-models: the API's own schemas compiled
// with ajv), the Prometheus Operator CRD schemas
// (@kubernetes-models/prometheus-operator) and the InferencePool CRD's
// openAPIV3Schema (packaging/kubernetes/schemas, compiled here with ajv).
// Prints one line per object and exits 1 on the first invalid file set.
//   node validate_kubernetes.mjs DIR
import fs from "node:fs";
import path from "node:path";
import yaml from "js-yaml";
import Ajv from "ajv";

const dir = process.argv[2];
const models = {
  "v1": "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "rbac.authorization.k8s.io/v1": "kubernetes-models/rbac.authorization.k8s.io/v1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};
const crdSchemas = {
  "inference.networking.k8s.io/v1/InferencePool": "inferencepool-v1.json",
};

const ajv = new Ajv({ allErrors: true, strict: false });
// OpenAPI's integer formats (ajv knows only JSON Schema's).
ajv.addFormat("int32", { type: "number", validate: (n) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
ajv.addFormat("int64", { type: "number", validate: (n) => Number.isInteger(n) });
for (const f of ["date-time", "byte", "int-or-string", "duration"]) ajv.addFormat(f, true);

let failures = 0;
const objects = [];
for (const file of fs.readdirSync(dir).filter((f) => f.endsWith(".yaml")).sort()) {
  const docs = yaml.loadAll(fs.readFileSync(path.join(dir, file), "utf8")).filter((d) => d != null);
  for (const obj of docs) {
    const id = `${file}: ${obj.kind}/${obj.metadata?.name}`;
    objects.push({ file, obj });
    try {
      const key = `${obj.apiVersion}/${obj.kind}`;
      if (crdSchemas[key]) {
        const schema = JSON.parse(fs.readFileSync(path.join(dir, "schemas", crdSchemas[key]), "utf8"));
        const validate = ajv.compile(schema);
        if (!validate(obj)) throw new Error(ajv.errorsText(validate.errors));
      } else if (models[obj.apiVersion]) {
        const mod = await import(`${models[obj.apiVersion]}/${obj.kind}`);
        new mod[obj.kind](obj).validate();
      } else {
        throw new Error(`no schema for ${obj.apiVersion} ${obj.kind}`);
      }
      if (!obj.metadata?.name) throw new Error("no metadata.name");
      console.log(`valid   ${id}`);
    } catch (e) {
      console.log(`INVALID ${id}: ${e.message}`);
      ++failures;
    }
  }
}
// The endpoint picker's config is YAML inside a ConfigMap: it must parse and
// name the families tokenmill exports.
for (const { obj } of objects) {
  if (obj.kind !== "ConfigMap") continue;
  for (const [name, text] of Object.entries(obj.data ?? {})) {
    if (!name.endsWith(".yaml")) continue;
    try {
      const config = yaml.load(text);
      if (config.kind !== "EndpointPickerConfig") throw new Error(`kind ${config.kind}`);
      console.log(`valid   ${obj.metadata.name}/${name}: EndpointPickerConfig`);
    } catch (e) {
      console.log(`INVALID ${obj.metadata.name}/${name}: ${e.message}`);
      ++failures;
    }
  }
}
fs.writeFileSync(path.join(process.env.OUT_DIR ?? "/tmp", "manifests.json"), JSON.stringify(objects.map((o) => o.obj)));
console.log(`${objects.length} objects, ${failures} invalid`);
process.exit(failures === 0 && objects.length > 0 ? 0 : 1);
