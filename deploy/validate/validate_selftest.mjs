// Proves that validate.mjs catches what it claims to: each case breaks one thing in a copy of
// the rendered manifests and requires validate.mjs to exit 1 naming the problem.
//   node validate_selftest.mjs OUT_DIR METRICS_DOC
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const [outDir, metricsDoc] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const load = (name) => YAML.parseAllDocuments(fs.readFileSync(path.join(outDir, `${name}.yaml`), "utf8")).map((d) => d.toJS());
const find = (objs, kind, name) => objs.find((o) => o.kind === kind && o.metadata.name === name);
const worker = (objs) => find(objs, "Deployment", "mq-worker").spec.template.spec.containers[0];
const server = (objs) => find(objs, "StatefulSet", "mq-server").spec.template.spec.containers[0];

const cases = [
  ["a schema violation (replicas as a string)", "gpu", (o) => { find(o, "Deployment", "mq-worker").spec.replicas = "two"; }, /replicas must be integer/],
  ["a ServiceMonitor against the operator's schema", "cpu", (o) => { find(o, "ServiceMonitor", "mambaquant").spec.endpoints = "metrics"; }, /ServiceMonitor\/mambaquant: schema/],
  ["a misspelt field", "gpu", (o) => { worker(o).imagee = worker(o).image; }, /unknown field spec.template.spec.containers\[0\].imagee/],
  ["a misspelt probe", "cpu", (o) => { server(o).readinessprobe = server(o).readinessProbe; }, /unknown field .*readinessprobe/],
  ["a kind with no schema", "cpu", (o) => { o.push({ apiVersion: "example.com/v1", kind: "Widget", metadata: { name: "w" } }); }, /no schema for example.com\/v1 Widget/],
  ["an HTTP probe instead of gRPC", "cpu", (o) => { server(o).livenessProbe = { httpGet: { path: "/metrics", port: 9090 } }; }, /livenessProbe must be a native gRPC probe/],
  ["a probe on the TLS API port", "cpu", (o) => { server(o).readinessProbe.grpc.port = 7070; }, /probes port 7070, but health is served on 7072/],
  ["a gpu worker without a GPU", "gpu", (o) => { delete worker(o).resources.limits["nvidia.com/gpu"]; }, /nvidia.com\/gpu/],
  ["an unresolved $(VAR)", "cpu", (o) => { worker(o).args.push("--poll-seconds=$(MQ_POLL)"); }, /\$\(MQ_POLL\) is not set/],
  ["a root container", "cpu", (o) => { find(o, "StatefulSet", "mq-server").spec.template.spec.securityContext.runAsNonRoot = false; }, /runAsNonRoot/],
  ["a writable root file system", "gpu", (o) => { worker(o).securityContext.readOnlyRootFilesystem = false; }, /readOnlyRootFilesystem/],
  ["two server replicas", "cpu", (o) => { find(o, "StatefulSet", "mq-server").spec.replicas = 2; }, /exactly one replica/],
  ["an HPA metric that does not exist", "cpu", (o) => { find(o, "HorizontalPodAutoscaler", "mq-worker").spec.metrics[0].object.metric.name = "mq_queue_length"; }, /HPA metric mq_queue_length/],
  ["a dashboard query of a metric that does not exist", "monitoring", (o) => {
    const cm = find(o, "ConfigMap", "mq-grafana-dashboard");
    const d = JSON.parse(cm.data["mambaquant.json"]);
    d.panels.find((p) => p.targets).targets[0].expr = "sum(mq_gpu_utilization)";
    cm.data["mambaquant.json"] = JSON.stringify(d);
  }, /mq_gpu_utilization is not a real metric/],
  ["a missing Secret", "cpu", null, /Secret mq-tokens is not defined/],
];

let failed = 0;
for (const [what, target, mutate, expect] of cases) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mq-validate-selftest-"));
  const names = ["cpu", "gpu", "monitoring", "secrets"];
  const files = {};
  for (const n of names) {
    let objs = load(n);
    if (n === target && mutate) mutate(objs);
    if (mutate === null && n === "secrets") objs = objs.filter((s) => s.metadata.name !== "mq-tokens");
    files[n] = path.join(dir, `${n}.yaml`);
    fs.writeFileSync(files[n], objs.map((x) => YAML.stringify(x)).join("---\n"));
  }
  const r = spawnSync(process.execPath, [path.join(here, "validate.mjs"), "--metrics", metricsDoc, ...names.map((n) => `${n}=${files[n]}`)], { encoding: "utf8" });
  fs.rmSync(dir, { recursive: true });
  const ok = r.status === 1 && expect.test(r.stderr);
  if (!ok) failed++;
  console.log(`${ok ? "caught" : "MISSED"}  ${what}${ok ? "" : `\n  exit ${r.status}\n${r.stderr}`}`);
}
console.log(failed ? `${failed} of ${cases.length} broken manifests not caught` : `all ${cases.length} broken manifests caught`);
process.exit(failed ? 1 : 0);
