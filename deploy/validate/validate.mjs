// Offline validation of rendered Kubernetes manifests (deploy/validate.sh renders them).
//
//   node validate.mjs --metrics docs/observability.md NAME=rendered.yaml ...
//
// Every object is checked against the Kubernetes schemas (kubernetes-models) or, for the
// ServiceMonitor, the Prometheus Operator schema, and built-in objects for unknown (misspelt)
// fields; an object of a kind with no schema here is an error, not a pass. Then the rules this project relies on, which no schema knows: probes are
// native gRPC probes on a port the process serves health on, every $(VAR) in args resolves,
// every ConfigMap/Secret reference exists, containers run non-root with a read-only root file
// system and resources set, the gpu overlay asks for a GPU and the CUDA backend (cpu: neither),
// the HPA's metric is served by the adapter rule and is a real metric, and every metric the
// dashboard queries is a real metric (the list in docs/observability.md, itself checked against
// a live /metrics by tests/ops). Prints one line per problem; exits 1 if there is any.
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";

const problems = [];
const fail = (where, what) => problems.push(`${where}: ${what}`);

// ---- arguments
const args = process.argv.slice(2);
let metricsDoc = null;
let dashboardFile = null;
const renders = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--metrics") metricsDoc = args[++i];
  else if (args[i] === "--dashboard") dashboardFile = args[++i];
  else {
    const eq = args[i].indexOf("=");
    if (eq <= 0) throw new Error(`expected NAME=FILE, got ${args[i]}`);
    renders.push({ name: args[i].slice(0, eq), file: args[i].slice(eq + 1) });
  }
}
if (!metricsDoc || renders.length === 0) {
  console.error("usage: node validate.mjs --metrics docs/observability.md [--dashboard FILE] NAME=rendered.yaml ...");
  process.exit(2);
}

// ---- the real metric families: first column of the table in docs/observability.md
const metricFamilies = new Set();
for (const line of fs.readFileSync(metricsDoc, "utf8").split("\n")) {
  const m = /^\|\s*`(mq_[a-z0-9_]+)`\s*\|/.exec(line);
  if (m) metricFamilies.add(m[1]);
}
if (metricFamilies.size === 0) fail(metricsDoc, "no metric table found");
// A PromQL series name may carry a histogram's or summary's suffix.
const knownSeries = (name) =>
  metricFamilies.has(name) || ["_bucket", "_sum", "_count"].some((s) => name.endsWith(s) && metricFamilies.has(name.slice(0, -s.length)));
const metricNamesIn = (expr) => [...new Set(expr.match(/\bmq_[a-z0-9_]+/g) || [])];

// ---- schema check: the model class of (apiVersion, kind), by its module path.
async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const module = group === "monitoring.coreos.com" ? `@kubernetes-models/prometheus-operator/${group}/${version}`
    : group === "" ? `kubernetes-models/${version}` : `kubernetes-models/${group}/${version}`;
  try {
    return (await import(module))[kind] ?? null;
  } catch {
    return null;
  }
}

async function checkSchema(where, obj) {
  const Model = await modelFor(obj.apiVersion, obj.kind);
  if (!Model) return fail(where, `no schema for ${obj.apiVersion} ${obj.kind}`);
  try {
    new Model(obj).validate();
  } catch (e) {
    fail(where, `schema: ${e.message}`);
  }
}

// ---- unknown fields: the schemas above accept any extra property, so a misspelt field (imagee,
// readinessprobe) would pass and be dropped by the API server. Walk built-in objects with the
// field lists of @kubernetes/client-node's models (generated from the same OpenAPI) and reject
// every field they do not know, like kubectl apply --validate=strict.
const k8sClient = await import("@kubernetes/client-node");
function checkFields(where, value, type, at) {
  if (value === null || value === undefined) return;
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) {
    if (!Array.isArray(value)) return fail(where, `${at}: expected a list`);
    value.forEach((v, i) => checkFields(where, v, arr[1], `${at}[${i}]`));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    for (const [k, v] of Object.entries(value)) checkFields(where, v, map[1], `${at}.${k}`);
    return;
  }
  const model = k8sClient[type];
  if (!model?.getAttributeTypeMap) return;  // a scalar, IntOrString, any
  if (typeof value !== "object" || Array.isArray(value)) return fail(where, `${at}: expected an object`);
  const fields = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) fail(where, `unknown field ${at ? `${at}.` : ""}${k}`);
    else checkFields(where, v, fields.get(k), at ? `${at}.${k}` : k);
  }
}
function checkKnownFields(where, obj) {
  const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/") : ["", obj.apiVersion];
  if (group.includes(".") && group.endsWith(".k8s.io") === false) return;  // a CRD: its own schema
  const type = `${version[0].toUpperCase()}${version.slice(1)}${obj.kind}`;
  if (!k8sClient[type]?.getAttributeTypeMap) return fail(where, `no field list for ${obj.apiVersion} ${obj.kind}`);
  checkFields(where, obj, type, "");
}

// ---- project rules
const podSpecOf = (o) => (["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(o.kind) ? o.spec?.template?.spec : null);
const portOfFlag = (args, flag) => {
  const a = (args || []).find((x) => x.startsWith(`--${flag}=`));
  return a ? Number(a.split(":").pop()) : null;
};

function checkWorkload(where, o, byKindName) {
  const spec = podSpecOf(o);
  if (!spec) return;
  const psc = spec.securityContext || {};
  if (psc.runAsNonRoot !== true) fail(where, "pod securityContext.runAsNonRoot must be true");
  if (!(psc.runAsUser > 0)) fail(where, "pod securityContext.runAsUser must be a non-root uid");
  const volumes = new Map((spec.volumes || []).map((v) => [v.name, v]));
  for (const claim of o.spec.volumeClaimTemplates || []) volumes.set(claim.metadata.name, claim);
  for (const v of spec.volumes || []) {
    if (v.secret && !byKindName.has(`Secret/${v.secret.secretName}`))
      fail(where, `volume ${v.name}: Secret ${v.secret.secretName} is not defined in deploy/k8s/secrets`);
    if (v.configMap && !byKindName.has(`ConfigMap/${v.configMap.name}`)) fail(where, `volume ${v.name}: ConfigMap ${v.configMap.name} is not rendered`);
  }
  // The kubelet evicts a pod whose emptyDir volumes and containers' writable layers and logs
  // exceed the sum of its containers' ephemeral-storage limits: the limits must hold the volumes.
  const bytes = (q) => {
    const m = /^([0-9.]+)([KMGT]i?)?$/.exec(String(q ?? ""));
    if (!m) return NaN;
    const unit = { K: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 }[m[2]] ?? 1;
    return Number(m[1]) * unit;
  };
  const emptyDirBytes = (spec.volumes || []).reduce((sum, v) => sum + (v.emptyDir ? bytes(v.emptyDir.sizeLimit) : 0), 0);
  const limitBytes = (spec.containers || []).reduce((sum, c) => sum + bytes(c.resources?.limits?.["ephemeral-storage"]), 0);
  if (!(limitBytes >= emptyDirBytes))
    fail(where, `containers' ephemeral-storage limits (${limitBytes} B) are below the emptyDir sizeLimits (${emptyDirBytes} B): the kubelet would evict the pod as its volumes fill`);
  for (const c of spec.containers || []) {
    const cw = `${where} container ${c.name}`;
    const sc = c.securityContext || {};
    if (sc.allowPrivilegeEscalation !== false) fail(cw, "allowPrivilegeEscalation must be false");
    if (sc.readOnlyRootFilesystem !== true) fail(cw, "readOnlyRootFilesystem must be true");
    if (!(sc.capabilities?.drop || []).includes("ALL")) fail(cw, "capabilities must drop ALL");
    for (const r of ["cpu", "memory"]) if (!c.resources?.requests?.[r]) fail(cw, `resources.requests.${r} missing`);
    if (!c.resources?.limits?.memory) fail(cw, "resources.limits.memory missing");
    // $(VAR) in args must resolve, as the kubelet would expand it.
    const env = new Set((c.env || []).map((e) => e.name));
    for (const ef of c.envFrom || []) {
      const cm = ef.configMapRef && byKindName.get(`ConfigMap/${ef.configMapRef.name}`);
      if (ef.configMapRef && !cm) fail(cw, `envFrom ConfigMap ${ef.configMapRef.name} is not rendered`);
      for (const k of Object.keys(cm?.data || {})) env.add(k);
    }
    for (const a of [...(c.command || []), ...(c.args || [])])
      for (const m of a.matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) if (!env.has(m[1])) fail(cw, `${a}: $(${m[1]}) is not set`);
    // Every volume mounted, every mount a volume; writable paths are volumes.
    for (const vm of c.volumeMounts || []) if (!volumes.has(vm.name)) fail(cw, `volumeMount ${vm.name} has no volume`);
    // Native gRPC probes on the port the process serves health on.
    const healthPort = c.command?.[0] === "mq-server" ? portOfFlag(c.args, "health-listen") : portOfFlag(c.args, "listen");
    for (const p of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      const probe = c[p];
      if (!probe) { fail(cw, `${p} missing`); continue; }
      if (!probe.grpc) { fail(cw, `${p} must be a native gRPC probe`); continue; }
      if (probe.grpc.port !== healthPort) fail(cw, `${p} probes port ${probe.grpc.port}, but health is served on ${healthPort}`);
    }
    const declared = new Set((c.ports || []).map((p) => p.containerPort));
    if (healthPort && !declared.has(healthPort)) fail(cw, `health port ${healthPort} is not a declared containerPort`);
    const metricsPort = portOfFlag(c.args, "metrics-listen");
    const metricsNamed = (c.ports || []).find((p) => p.name === "metrics");
    if (!metricsNamed || metricsNamed.containerPort !== metricsPort) fail(cw, `port "metrics" must be --metrics-listen's port ${metricsPort}`);
  }
}

function checkOverlay(name, objs, byKindName) {
  const server = byKindName.get("StatefulSet/mq-server");
  const worker = byKindName.get("Deployment/mq-worker");
  if (!server) fail(name, "no StatefulSet mq-server");
  if (!worker) fail(name, "no Deployment mq-worker");
  if (server) {
    if (server.spec.replicas !== 1) fail(name, "mq-server must have exactly one replica (it owns the SQLite store)");
    const claims = (server.spec.volumeClaimTemplates || []).map((v) => v.metadata.name);
    const dataMount = server.spec.template.spec.containers[0].volumeMounts.find((m) => m.mountPath === "/data");
    if (!dataMount || !claims.includes(dataMount.name)) fail(name, "mq-server's /data must be a volumeClaimTemplate");
  }
  for (const kind of ["Service/mq-server", "Service/mq-worker", "PodDisruptionBudget/mq-worker", "HorizontalPodAutoscaler/mq-worker", "ServiceMonitor/mambaquant"])
    if (!byKindName.has(kind)) fail(name, `no ${kind}`);
  if (worker) {
    const c = worker.spec.template.spec.containers[0];
    const cm = byKindName.get(`ConfigMap/${c.envFrom?.[0]?.configMapRef?.name}`);
    const backend = cm?.data?.MQ_BACKEND;
    const gpus = c.resources?.limits?.["nvidia.com/gpu"];
    if (name === "gpu") {
      if (backend !== "cuda") fail(name, `workers must use the CUDA backend (MQ_BACKEND=${backend})`);
      if (String(gpus) !== "1" || String(c.resources?.requests?.["nvidia.com/gpu"]) !== "1") fail(name, "workers must request and limit nvidia.com/gpu: 1");
    } else if (name === "cpu") {
      if (backend !== "cpu") fail(name, `workers must use the CPU backend (MQ_BACKEND=${backend})`);
      if (gpus !== undefined) fail(name, "cpu workers must not request a GPU");
    }
  }
  // Selectors select something: Services, PDBs, the ServiceMonitor.
  const pods = objs.filter(podSpecOf).map((o) => o.spec.template.metadata.labels || {});
  const matches = (labels, sel) => Object.entries(sel || {}).every(([k, v]) => labels[k] === v);
  for (const o of objs) {
    const sel = o.kind === "Service" ? o.spec.selector : o.kind === "PodDisruptionBudget" ? o.spec.selector.matchLabels : null;
    if (sel && !pods.some((l) => matches(l, sel))) fail(`${name} ${o.kind}/${o.metadata.name}`, "selects no pod");
  }
  const sm = byKindName.get("ServiceMonitor/mambaquant");
  if (sm) {
    const values = sm.spec.selector.matchExpressions?.[0]?.values || [];
    const services = objs.filter((o) => o.kind === "Service" && values.includes(o.metadata.labels?.app) && o.spec.ports.some((p) => p.name === "metrics"));
    if (services.length < 2) fail(name, "the ServiceMonitor must select the server's and the workers' metrics Services");
  }
  const hpa = byKindName.get("HorizontalPodAutoscaler/mq-worker");
  if (hpa) {
    const t = hpa.spec.scaleTargetRef;
    if (!byKindName.has(`${t.kind}/${t.name}`)) fail(name, `HPA targets ${t.kind}/${t.name}, which is not rendered`);
    for (const m of hpa.spec.metrics || []) {
      const metric = m.object?.metric?.name ?? m.external?.metric?.name ?? m.pods?.metric?.name;
      if (metric && !knownSeries(metric)) fail(name, `HPA metric ${metric} is not a metric the server or worker exports`);
      if (m.object && !byKindName.has(`${m.object.describedObject.kind}/${m.object.describedObject.name}`))
        fail(name, `HPA describedObject ${m.object.describedObject.name} is not rendered`);
    }
  }
}

function checkMonitoring(name, byKindName, hpaMetrics) {
  const cm = byKindName.get("ConfigMap/mq-prometheus-adapter-rules");
  if (!cm) return fail(name, "no ConfigMap mq-prometheus-adapter-rules");
  let cfg;
  try { cfg = YAML.parse(cm.data["config.yaml"]); } catch (e) { return fail(name, `adapter config.yaml: ${e.message}`); }
  const served = new Set();
  for (const [i, r] of (cfg.rules || []).entries()) {
    const w = `${name} adapter rule ${i}`;
    for (const k of ["seriesQuery", "resources", "name", "metricsQuery"]) if (!r[k]) fail(w, `${k} missing`);
    for (const m of metricNamesIn(r.seriesQuery || "")) if (!knownSeries(m)) fail(w, `${m} is not a real metric`);
    if (!String(r.metricsQuery).includes("<<.Series>>")) fail(w, "metricsQuery must use <<.Series>>");
    served.add(r.name?.as);
  }
  for (const m of hpaMetrics) if (!served.has(m)) fail(name, `the HPA's metric ${m} is served by no adapter rule`);
  const dash = byKindName.get("ConfigMap/mq-grafana-dashboard");
  if (!dash) return fail(name, "no ConfigMap mq-grafana-dashboard");
  if (dash.metadata.labels?.grafana_dashboard !== "1") fail(name, "the dashboard ConfigMap needs label grafana_dashboard=1");
  for (const [file, text] of Object.entries(dash.data)) checkDashboard(`${name} ${file}`, text);
}

function checkDashboard(where, text) {
  let d;
  try { d = JSON.parse(text); } catch (e) { return fail(where, `not JSON: ${e.message}`); }
  if (!d.title || !d.uid || !Array.isArray(d.panels)) fail(where, "title, uid and panels are required");
  const ids = new Set();
  let queried = 0;
  for (const p of d.panels || []) {
    if (ids.has(p.id)) fail(where, `duplicate panel id ${p.id}`);
    ids.add(p.id);
    for (const t of p.targets || []) {
      queried++;
      for (const m of metricNamesIn(t.expr || "")) if (!knownSeries(m)) fail(`${where} panel "${p.title}"`, `${m} is not a real metric`);
    }
  }
  if (queried === 0) fail(where, "no queries");
}

// ---- main
const hpaMetrics = new Set();
const rendered = [];
for (const { name, file } of renders) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  const objs = [];
  for (const doc of docs) {
    if (doc.errors.length) fail(`${name}`, `YAML: ${doc.errors[0].message}`);
    const o = doc.toJS();
    if (o) objs.push(o);
  }
  rendered.push({ name, objs });
}
// Secrets are rendered separately (deploy/k8s/secrets); the overlays may reference them.
const secrets = rendered.flatMap((r) => r.objs).filter((o) => o.kind === "Secret");
for (const { name, objs } of rendered) {
  const byKindName = new Map([...secrets, ...objs].map((o) => [`${o.kind}/${o.metadata?.name}`, o]));
  for (const o of objs) {
    const where = `${name} ${o.kind}/${o.metadata?.name}`;
    await checkSchema(where, o);
    checkKnownFields(where, o);
    checkWorkload(where, o, byKindName);
    if (o.kind === "HorizontalPodAutoscaler") for (const m of o.spec.metrics || []) hpaMetrics.add(m.object?.metric?.name);
  }
  if (name === "cpu" || name === "gpu") checkOverlay(name, objs, byKindName);
  console.log(`${name}: ${objs.length} objects (${[...new Set(objs.map((o) => o.kind))].join(", ")})`);
}
for (const { name, objs } of rendered)
  if (name === "monitoring") checkMonitoring(name, new Map(objs.map((o) => [`${o.kind}/${o.metadata?.name}`, o])), hpaMetrics);
if (dashboardFile) checkDashboard(path.basename(dashboardFile), fs.readFileSync(dashboardFile, "utf8"));

for (const p of problems) console.error(`INVALID ${p}`);
console.log(problems.length ? `${problems.length} problems` : "all objects valid");
process.exit(problems.length ? 1 : 0);
