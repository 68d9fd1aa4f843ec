// Checks of the Dockerfile that the linters leave out, on its parsed form (dockerfile-ast):
// multi-stage (a CUDA devel build stage, a runtime stage), every external base image pinned to a
// tag once its ARG defaults are applied, COPY --from naming a real stage, the final stage running
// as a non-root user, the runtime stage running ldd on every binary and failing on "not found",
// and the image holding mq-server, mq-worker, mqctl, mq-engine and libmq_cuda_backend.so.
//   node dockerfile_check.mjs Dockerfile
import fs from "node:fs";
import { DockerfileParser } from "dockerfile-ast";

const file = process.argv[2];
const df = DockerfileParser.parse(fs.readFileSync(file, "utf8"));
const problems = [];
const fail = (line, what) => problems.push(`${file}:${line + 1}: ${what}`);

const argDefaults = new Map();
for (const arg of df.getInitialARGs()) {
  const p = arg.getProperty();
  if (p?.getValue() != null) argDefaults.set(p.getName(), p.getValue());
}
const expand = (s) => s.replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_, n) => argDefaults.get(n) ?? `\${${n}}`);

const froms = df.getFROMs();
const stages = [];
for (const from of froms) {
  const line = from.getRange().start.line;
  const image = expand(from.getImage() ?? "");
  const name = from.getBuildStage();
  if (!stages.includes(image)) {
    if (image.includes("$")) fail(line, `base image ${image} has an ARG without a default`);
    else if (!/:[A-Za-z0-9._-]+$|@sha256:[0-9a-f]{64}$/.test(image) || image.endsWith(":latest")) fail(line, `base image ${image} must be pinned to a tag`);
  }
  if (name) stages.push(name);
}
if (froms.length < 3) fail(0, "expected the stages cuda-devel, build and runtime");
for (const s of ["cuda-devel", "build", "runtime"]) if (!stages.includes(s)) fail(0, `no stage named ${s}`);

const all = df.getInstructions();
const last = froms[froms.length - 1];
const finalStage = all.filter((i) => i.getRange().start.line > last.getRange().start.line);
for (const ins of all) {
  if (ins.getKeyword() !== "COPY") continue;
  const from = ins.getFlags().find((f) => f.getName() === "from");
  if (from && !stages.includes(from.getValue())) fail(ins.getRange().start.line, `COPY --from=${from.getValue()}: no such stage`);
}
const users = finalStage.filter((i) => i.getKeyword() === "USER");
const user = users.length ? users[users.length - 1].getArgumentsContent() : "root";
if (/^(root|0)(:|$)/.test(user)) fail(last.getRange().start.line, `the runtime stage runs as ${user}; it must be a non-root user`);
const runs = finalStage.filter((i) => i.getKeyword() === "RUN").map((i) => i.getArgumentsContent() ?? "");
if (!runs.some((r) => r.includes("ldd") && r.includes("not found") && r.includes("exit 1")))
  fail(last.getRange().start.line, "the runtime stage must run ldd on every binary and fail on \"not found\"");
const lddRun = runs.find((r) => r.includes("ldd")) ?? "";
for (const bin of ["mq-server", "mq-worker", "mqctl", "mq-engine", "libmq_cuda_backend.so"]) {
  if (!lddRun.includes(bin)) fail(last.getRange().start.line, `ldd does not check ${bin}`);
}
const devel = df.getInstructions().filter((i) => i.getKeyword() === "RUN").map((i) => i.getArgumentsContent() ?? "").join("\n");
if (!/cuda-nvcc/.test(devel)) fail(0, "the build stage must install nvcc (CUDA devel)");
if (!/-DMQ_CUDA=ON/.test(devel)) fail(0, "the build must enable the CUDA backend (-DMQ_CUDA=ON)");
for (const pkg of ["libgrpc++-dev", "libprotobuf-dev", "libabsl-dev", "prometheus-cpp-dev", "libsqlite3-dev", "libgrpc++1.51", "libprotobuf32", "libabsl20220623", "libprometheus-cpp-pull1.0", "libsqlite3-0"])
  if (!devel.includes(pkg)) fail(0, `Debian package ${pkg} is not installed`);

for (const p of problems) console.error(`INVALID ${p}`);
console.log(problems.length ? `${problems.length} Dockerfile problems` : `Dockerfile: ${froms.length} stages, runs as ${user}, ldd checked`);
process.exit(problems.length ? 1 : 0);
