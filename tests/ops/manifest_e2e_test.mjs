// End-to-end test of the Kubernetes manifests as local processes: the exact container commands
// and args of the rendered cpu overlay (deploy/validate.sh renders it), with only what a cluster
// provides substituted: 0.0.0.0:PORT listen addresses become free loopback ports, Service names
// (mq-server:7070) become the server's loopback port, volume mount paths become temp
// directories (the Secrets' files generated here: a self-signed certificate with the SAN the
// workers check, random tokens), $(VAR) is expanded from envFrom ConfigMaps and env like the
// kubelet does, and POD_NAME is a pod name. One server and two workers (the Deployment's
// replicas) start; each is probed like the kubelet would (startup, then readiness and liveness:
// grpc.health.v1.Health/Check on the probe's port and service, in plaintext, with the probe's
// period and failure threshold, periods shortened); then a quantization job and a generation go
// through them with mqctl over TLS with an admin token minted by mqctl; both workers must be
// registered and the job must have run on one of them. The gpu overlay's worker (gpu.yaml next to
// the cpu file) must exit saying why when no GPU is usable, never registering as a CPU worker.
// Logs must be JSON lines without any token; SIGTERM must turn the server's health NOT_SERVING.
//
//   node tests/ops/manifest_e2e_test.mjs BUILD_DIR RENDERED_CPU_YAML
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import net from "node:net";
import crypto from "node:crypto";
import { spawn, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(path.join(REPO, "deploy/validate/package.json"));
const YAML = require("yaml");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [buildDir, renderedFile] = process.argv.slice(2);
if (!buildDir || !renderedFile) {
  console.error("usage: node manifest_e2e_test.mjs BUILD_DIR RENDERED_CPU_YAML");
  process.exit(2);
}
const BUILD = path.resolve(buildDir);
const BINARIES = { "mq-server": "server/mq-server", "mq-worker": "worker/mq-worker" };
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "mq-manifest-e2e-"));
const children = [];
let failed = false;

function fail(msg) {
  console.error(`FAIL: ${msg}`);
  for (const c of children) {
    console.error(`--- ${c.name} log (tail)`);
    console.error(fs.readFileSync(c.log, "utf8").split("\n").slice(-15).join("\n"));
  }
  failed = true;
  throw new Error(msg);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

// ---- the rendered manifests
const objs = YAML.parseAllDocuments(fs.readFileSync(renderedFile, "utf8")).map((d) => d.toJS()).filter(Boolean);
const findIn = (list, kind, name) => list.find((o) => o.kind === kind && o.metadata.name === name) ?? fail(`no ${kind}/${name} in the rendered manifests`);
const find = (kind, name) => findIn(objs, kind, name);
// The gpu overlay, rendered next to the cpu one: its worker must refuse to run without a GPU.
const gpuFile = path.join(path.dirname(renderedFile), "gpu.yaml");
const gpuObjs = fs.existsSync(gpuFile) ? YAML.parseAllDocuments(fs.readFileSync(gpuFile, "utf8")).map((d) => d.toJS()).filter(Boolean) : null;
const serverSet = find("StatefulSet", "mq-server");
const workerDeploy = find("Deployment", "mq-worker");
const serverService = find("Service", "mq-server");

// ---- what the cluster would provide: the Secrets' files
const secretsDir = path.join(TMP, "secrets");
fs.mkdirSync(secretsDir);
const openssl = spawnSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
  "-subj", "/CN=mq-server", "-addext", "subjectAltName=DNS:mq-server", "-keyout", path.join(secretsDir, "tls.key"),
  "-out", path.join(secretsDir, "tls.crt")], { encoding: "utf8" });
if (openssl.status !== 0) fail(`openssl: ${openssl.stderr}`);
fs.copyFileSync(path.join(secretsDir, "tls.crt"), path.join(secretsDir, "ca.crt"));
// Tokens as an operator makes them: mqctl tokens mint prints each token and its tokens-file line.
const mint = (role) => {
  const r = spawnSync(path.join(BUILD, "client/mqctl"), ["tokens", "mint", "--role", role, "--name", `e2e-${role}`, "--json"], { encoding: "utf8" });
  if (r.status !== 0) fail(`mqctl tokens mint --role ${role}: ${r.stderr}`);
  return JSON.parse(r.stdout);
};
const minted = { client: mint("admin"), worker: mint("worker") };
const tokens = { client: minted.client.token, worker: minted.worker.token };
fs.writeFileSync(path.join(secretsDir, "tokens"), `# e2e\n${minted.client.tokens_file_line}\n${minted.worker.tokens_file_line}\n`, { mode: 0o600 });
fs.writeFileSync(path.join(secretsDir, "worker"), tokens.worker);
fs.writeFileSync(path.join(secretsDir, "client"), tokens.client);  // mqctl's --token-file, not a Secret key
const secretData = {
  "mq-server-tls": ["tls.crt", "tls.key", "ca.crt"],
  "mq-tokens": ["tokens", "worker"],
};

// ---- one pod as local processes
const portMap = new Map(); // containerPort -> loopback port, per pod
async function podCommand(podName, podSpec, container, source = objs) {
  const dir = path.join(TMP, podName);
  fs.mkdirSync(dir);
  // Volumes: secrets get their files (only the listed items), the rest empty directories.
  const volDirs = new Map();
  for (const v of podSpec.volumes || []) {
    const d = path.join(dir, `vol-${v.name}`);
    fs.mkdirSync(d);
    if (v.secret) {
      const keys = secretData[v.secret.secretName] ?? fail(`pod ${podName}: unknown Secret ${v.secret.secretName}`);
      const items = v.secret.items ?? keys.map((k) => ({ key: k, path: k }));
      for (const it of items) {
        if (!keys.includes(it.key)) fail(`Secret ${v.secret.secretName} has no key ${it.key}`);
        fs.copyFileSync(path.join(secretsDir, it.key), path.join(d, it.path));
      }
    }
    volDirs.set(v.name, d);
  }
  for (const claim of serverSet === null ? [] : podSpec === serverSet.spec.template.spec ? serverSet.spec.volumeClaimTemplates : []) {
    const d = path.join(dir, `pvc-${claim.metadata.name}`);
    fs.mkdirSync(d);
    volDirs.set(claim.metadata.name, d);
  }
  const mounts = (container.volumeMounts || []).map((m) => ({ at: m.mountPath, dir: volDirs.get(m.name) ?? fail(`mount ${m.name} has no volume`) }));
  // Environment as the kubelet builds it.
  const env = {};
  for (const ef of container.envFrom || []) {
    if (!ef.configMapRef) continue;
    Object.assign(env, findIn(source, "ConfigMap", ef.configMapRef.name).data);
  }
  for (const e of container.env || []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef?.fieldPath === "metadata.name") env[e.name] = podName;
    else fail(`env ${e.name}: unsupported source`);
  }
  const expand = (s) => s.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n) => (n in env ? env[n] : m));
  const ports = new Map();
  for (const p of container.ports || []) ports.set(p.containerPort, await freePort());
  const subst = (arg) => {
    let a = expand(arg);
    // Listen addresses: the declared containerPorts, on loopback.
    a = a.replace(/0\.0\.0\.0:(\d+)/, (m, p) => `127.0.0.1:${ports.get(Number(p)) ?? fail(`${arg}: port ${p} is not a declared containerPort`)}`);
    // The server's Service name: its port, through targetPort, to the server pod's port.
    a = a.replace(/^(--server=)mq-server:(\d+)$/, (m, f, p) => {
      const sp = serverService.spec.ports.find((x) => x.port === Number(p)) ?? fail(`Service mq-server has no port ${p}`);
      const target = serverSet.spec.template.spec.containers[0].ports.find((x) => x.name === sp.targetPort || x.containerPort === sp.targetPort);
      return `${f}127.0.0.1:${portMap.get("mq-server-0").get(target.containerPort)}`;
    });
    // A flag's path under a mount point (the deepest one) moves to that volume's directory.
    const m = [...mounts].sort((x, y) => y.at.length - x.at.length).find(({ at }) => new RegExp(`=${at}(?=/|$)`).test(a));
    if (m) a = a.replace(`=${m.at}`, `=${m.dir}`);
    if (/\$\(/.test(a)) fail(`${arg}: unresolved variable`);
    return a;
  };
  const bin = BINARIES[container.command[0]] ?? fail(`unknown entrypoint ${container.command[0]}`);
  portMap.set(podName, ports);
  return { bin: path.join(BUILD, bin), args: [...container.command.slice(1), ...(container.args || [])].map(subst), ports, dir };
}

function start(name, cmd) {
  const log = path.join(cmd.dir, "log");
  const out = fs.openSync(log, "w");
  const child = spawn(cmd.bin, cmd.args, { stdio: ["ignore", out, out] });
  children.push({ name, child, log });
  console.log(`started ${name}: ${path.basename(cmd.bin)} ${cmd.args.join(" ")}`);
  return child;
}

// ---- the kubelet's gRPC probe
const healthProto = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(REPO, "tests/server/proto/health_probe.proto"), { enums: String }));
function check(port, service) {
  return new Promise((resolve) => {
    const client = new healthProto.grpc.health.v1.Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    client.Check({ service }, { deadline: Date.now() + 1000 }, (err, res) => {
      client.close();
      resolve(err ? `error ${err.code}` : res.status);
    });
  });
}
// Runs a probe until it succeeds or fails failureThreshold times in a row (periods shortened to
// at most 250 ms: the test waits for the same number of attempts, not the same time).
async function probe(name, kind, spec, ports, child) {
  const p = spec[kind] ?? fail(`${name}: no ${kind}`);
  if (!p.grpc) fail(`${name}: ${kind} is not a gRPC probe`);
  const port = ports.get(p.grpc.port) ?? fail(`${name}: ${kind} port ${p.grpc.port} is not declared`);
  const attempts = p.failureThreshold ?? 3;
  const period = Math.min((p.periodSeconds ?? 10) * 1000, 250);
  let last;
  for (let i = 0; i < attempts; i++) {
    if (child.exitCode !== null) fail(`${name} exited (${child.exitCode}) during its ${kind}`);
    last = await check(port, p.grpc.service ?? "");
    if (last === "SERVING") {
      console.log(`${name}: ${kind} passed (attempt ${i + 1} of ${attempts}, port ${p.grpc.port})`);
      return;
    }
    await sleep(period);
  }
  fail(`${name}: ${kind} failed ${attempts} times (last: ${last})`);
}

// The manifests ask for JSON logs: every line of every pod parses, none holds a secret, and on a
// worker every line after registration names the worker, and the job's lines name job and model.
function checkLogs(workerNames, secrets) {
  for (const c of children) {
    const text = fs.readFileSync(c.log, "utf8");
    for (const s of secrets) if (text.includes(s)) fail(`${c.name}'s log holds a token`);
    const lines = text.split("\n").filter(Boolean).map((l, i) => {
      try { return JSON.parse(l); } catch { fail(`${c.name} log line ${i + 1} is not JSON: ${l}`); }
    });
    if (!workerNames.includes(c.name)) continue;
    const registered = lines.findIndex((l) => l.msg === "registered");
    if (registered < 0) fail(`${c.name} never logged its registration`);
    const id = lines[registered].worker;
    for (const l of lines.slice(registered)) if (l.worker !== id) fail(`${c.name}: a line after registration does not name the worker: ${JSON.stringify(l)}`);
    for (const l of lines.filter((x) => /^job (started|finished)$/.test(x.msg)))
      if (!l.job || l.model !== "mamba-tiny:1") fail(`${c.name}: a job line lacks job or model: ${JSON.stringify(l)}`);
  }
  console.log("logs: JSON lines, no token, worker/job/model fields present");
}

function mqctl(serverPort, ...args) {
  const r = spawnSync(path.join(BUILD, "client/mqctl"), ["--server", `127.0.0.1:${serverPort}`, "--tls-ca", path.join(secretsDir, "ca.crt"),
    "--tls-server-name", "mq-server", "--token-file", path.join(secretsDir, "client"), "--timeout", "300", ...args], { encoding: "utf8", timeout: 300000 });
  if (r.status !== 0) fail(`mqctl ${args.join(" ")}: exit ${r.status}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

try {
  // Server: the StatefulSet's one pod.
  const sSpec = serverSet.spec.template.spec;
  const sContainer = sSpec.containers[0];
  const sCmd = await podCommand("mq-server-0", sSpec, sContainer);
  const server = start("mq-server-0", sCmd);
  await probe("mq-server-0", "startupProbe", sContainer, sCmd.ports, server);
  await probe("mq-server-0", "readinessProbe", sContainer, sCmd.ports, server);
  // Workers: the Deployment's replicas.
  const wSpec = workerDeploy.spec.template.spec;
  const wContainer = wSpec.containers[0];
  const replicas = workerDeploy.spec.replicas;
  if (replicas !== 2) fail(`expected the base's 2 worker replicas, found ${replicas}`);
  const workers = [];
  for (let i = 0; i < replicas; i++) {
    const name = `mq-worker-${i}`;
    const cmd = await podCommand(name, wSpec, wContainer);
    workers.push({ name, cmd, child: start(name, cmd) });
  }
  for (const w of workers) {
    await probe(w.name, "startupProbe", wContainer, w.cmd.ports, w.child);
    await probe(w.name, "readinessProbe", wContainer, w.cmd.ports, w.child);
  }

  // The API over TLS with the client token, on the Service's port.
  const apiPort = sCmd.ports.get(serverService.spec.ports.find((p) => p.name === "grpc").port);
  let listed;
  for (let i = 0; i < 50; i++) {
    listed = JSON.parse(mqctl(apiPort, "--json", "workers", "list").trim().split("\n").pop() || "{}");
    const names = JSON.stringify(listed);
    if (workers.every((w) => names.includes(w.name))) break;
    await sleep(200);
  }
  for (const w of workers) if (!JSON.stringify(listed).includes(w.name)) fail(`worker ${w.name} is not registered: ${JSON.stringify(listed)}`);
  console.log(`both workers registered (--name=$(POD_NAME))`);

  mqctl(apiPort, "models", "upload", path.join(REPO, "models/mamba-tiny"), "--name", "mamba-tiny");
  mqctl(apiPort, "datasets", "upload", path.join(REPO, "models/text/calib.txt"), "--name", "calib");
  const job = mqctl(apiPort, "--json", "jobs", "submit", "--model", "mamba-tiny", "--preset", "rtn", "--bits", "w8a8", "--calib", "calib",
    "--samples", "4", "--seq-len", "32", "--output-name", "tiny-e2e", "--wait");
  const finalJob = JSON.parse(job.trim().split("\n").pop());
  if (!JSON.stringify(finalJob).includes("SUCCEEDED")) fail(`job did not succeed: ${job}`);
  const ranOn = workers.filter((w) => fs.readFileSync(children.find((c) => c.name === w.name).log, "utf8").includes("job finished"));
  if (ranOn.length !== 1) fail(`the job should have run on exactly one worker, ran on ${ranOn.length}`);
  console.log(`job succeeded on ${ranOn[0].name}`);

  const gen = mqctl(apiPort, "--json", "generate", "--model", "tiny-e2e", "--prompt-ids", "464,3290,273", "--max-new-tokens", "6", "--ignore-eos");
  const lines = gen.trim().split("\n").map((l) => JSON.parse(l));
  const field = (m, snake, camel) => m[snake] ?? m[camel];
  const streamed = lines.reduce((n, m) => n + (field(m, "token_ids", "tokenIds") ?? []).length, 0);
  const last = lines[lines.length - 1];
  if (streamed !== 6 || field(last, "finish_reason", "finishReason") !== "length" || Number(field(last, "completion_tokens", "completionTokens")) !== 6 ||
      Number(field(last, "prompt_tokens", "promptTokens")) !== 3)
    fail(`the generation should stream 6 tokens for a 3-token prompt and end with finish reason length: ${gen}`);
  console.log(`generation streamed ${streamed} tokens in ${lines.length} messages (finish reason length)`);

  // A call that fails on the worker (a token id beyond the vocabulary) is logged by the server
  // with its request id and model.
  const bad = spawnSync(path.join(BUILD, "client/mqctl"), ["--server", `127.0.0.1:${apiPort}`, "--tls-ca", path.join(secretsDir, "ca.crt"),
    "--tls-server-name", "mq-server", "--token-file", path.join(secretsDir, "client"), "generate", "--model", "tiny-e2e",
    "--prompt-ids", "1,999999", "--max-new-tokens", "2"], { encoding: "utf8" });
  if (bad.status === 0) fail("a generation with an out-of-vocabulary token id succeeded");
  const failedLine = fs.readFileSync(children.find((c) => c.name === "mq-server-0").log, "utf8").split("\n").filter(Boolean)
    .map((l) => JSON.parse(l)).find((l) => l.msg === "inference call failed");
  if (!failedLine || !failedLine.request || failedLine.model !== "tiny-e2e" || !failedLine.code)
    fail(`the server did not log the failed call with request, model and code: ${JSON.stringify(failedLine)}\n${bad.stderr}`);
  console.log(`failed call logged: request=${failedLine.request} model=${failedLine.model} code=${failedLine.code}`);

  // A call with a wrong token is refused, and no token, right or wrong, reaches a log.
  const wrong = `wrong-${crypto.randomBytes(16).toString("hex")}`;
  const refused = spawnSync(path.join(BUILD, "client/mqctl"), ["--server", `127.0.0.1:${apiPort}`, "--tls-ca", path.join(secretsDir, "ca.crt"),
    "--tls-server-name", "mq-server", "--token", wrong, "models", "list"], { encoding: "utf8" });
  if (refused.status === 0) fail("a wrong token was accepted");
  checkLogs(workers.map((w) => w.name), [tokens.client, tokens.worker, wrong]);

  // The gpu overlay's worker on this machine: with no usable GPU it must exit, saying why, and
  // never register (computing on the CPU instead); on a GPU machine it registers as cuda.
  if (gpuObjs) {
    const gDeploy = findIn(gpuObjs, "Deployment", "mq-worker");
    const gContainer = gDeploy.spec.template.spec.containers[0];
    const gCmd = await podCommand("mq-worker-gpu", gDeploy.spec.template.spec, gContainer, gpuObjs);
    const g = start("mq-worker-gpu", gCmd);
    const code = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), 20000);
      g.on("exit", (c) => { clearTimeout(timer); resolve(c); });
    });
    const gLog = fs.readFileSync(children.find((c) => c.name === "mq-worker-gpu").log, "utf8");
    const listedNow = mqctl(apiPort, "--json", "workers", "list");
    if (code === null) {
      // Still running: only acceptable on a machine with a GPU, as a cuda worker.
      if (!/"device":\s*"cuda"/.test(listedNow) || !listedNow.includes("mq-worker-gpu")) fail(`the gpu worker runs but is not a cuda worker: ${listedNow}`);
      console.log("gpu overlay worker: registered as cuda (a GPU is present)");
    } else {
      if (code !== 2 || !/no usable CUDA device|--backend cuda/.test(gLog)) fail(`the gpu worker should exit 2 saying why without a GPU; exit ${code}: ${gLog}`);
      if (listedNow.includes("mq-worker-gpu")) fail("the gpu worker registered although it cannot use a GPU");
      console.log("gpu overlay worker without a GPU: exits 2 saying why, never registers");
    }
  }

  // Liveness after the work, on every pod.
  await probe("mq-server-0", "livenessProbe", sContainer, sCmd.ports, server);
  for (const w of workers) await probe(w.name, "livenessProbe", wContainer, w.cmd.ports, w.child);

  // SIGTERM the server as the kubelet would: its health goes NOT_SERVING (or the port closes)
  // while it drains.
  server.kill("SIGTERM");
  const hp = sCmd.ports.get(sContainer.readinessProbe.grpc.port);
  let after = "SERVING";
  for (let i = 0; i < 40 && after === "SERVING"; i++) { after = await check(hp, ""); if (after === "SERVING") await sleep(100); }
  if (after === "SERVING") fail("the server still reports SERVING after SIGTERM");
  console.log(`after SIGTERM the server's health says ${after}`);
} catch (e) {
  if (!failed) { console.error(`FAIL: ${e.stack}`); failed = true; }
} finally {
  for (const c of children) if (c.child.exitCode === null) c.child.kill("SIGTERM");
  await Promise.all(children.map((c) => (c.child.exitCode !== null ? null : new Promise((r) => c.child.on("exit", r)))));
  if (process.env.KEEP_TMP !== "1") fs.rmSync(TMP, { recursive: true, force: true });
  else console.log(`kept ${TMP}`);
}
console.log(failed ? "FAIL" : "PASS");
process.exit(failed ? 1 : 0);
