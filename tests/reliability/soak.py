#!/usr/bin/env python3
"""Soak test (issue 13, item 7): one mq-server and two CPU mq-workers on loopback, CLIENTS
concurrent mqctl clients mixing uploads, downloads, deletions, quantization jobs, cancellations
and generations for SECONDS. Fails on any unexpected error, on a job that does not end as it
should, and on leaks: server and worker RSS sampled throughout (growth after warm-up bounded),
open descriptors (/proc/PID/fd) and threads (/proc/PID/status) compared before and after.

  soak.py BUILD_DIR SECONDS [CLIENTS]       (tests/reliability/soak.sh wraps it, niced)
"""

import hashlib
import os
import random
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Cluster, Failure, check, check_store, proc_stats, repo_dir, temp_root, wait_until  # noqa: E402

MODEL_DIR = os.path.join(repo_dir(), "models", "mamba-tiny")
CALIB = os.path.join(repo_dir(), "models", "text", "calib.txt")
JOB = ["--preset", "rtn", "--bits", "w8a8", "--samples", "4", "--seq-len", "64"]
MAX_OPEN_JOBS = 4  # jobs queued or running at once (two CPU workers, one job each)
# Leak bounds, after the load stops and a short settle. Descriptors and threads must come back to
# where they were give or take gRPC's pools; RSS may grow after warm-up by allocator slack only.
FD_SLACK = 8
THREAD_SLACK = 8
# A worker's RSS climbs for a minute or so (the model, a job's buffers, allocator arenas) and then
# stays flat, so the end of the run is compared with the first half's peak, not with the start.
RSS_GROWTH = 1.25         # end RSS <= RSS_GROWTH x the first half's largest RSS + ...
RSS_GROWTH_KB = 32 << 10  # ... 32 MiB


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}  # kind -> {"ok", "expected", "unexpected", "lat": []}
        self.errors = []
        self.t0 = time.monotonic()

    def record(self, kind, outcome, latency, detail=""):
        with self.lock:
            s = self.ops.setdefault(kind, {"ok": 0, "expected": 0, "unexpected": 0, "lat": []})
            s[outcome] += 1
            s["lat"].append(latency)
            if outcome == "unexpected":
                # When it happened (s into the load) and the machine's load: tells one stall of a
                # starved machine from errors spread over the run.
                at = time.monotonic() - self.t0
                self.errors.append(f"t={at:.1f}s load={os.getloadavg()[0]:.1f} {kind}: {detail}")


class Soak:
    def __init__(self, c, seconds, clients, root):
        self.c, self.seconds, self.clients, self.root = c, seconds, clients, root
        self.stats = Stats()
        self.lock = threading.Lock()
        self.open_jobs = 0
        self.jobs = {}  # id -> "plain" | "cancelled"
        self.counter = 0
        self.deadline = 0
        self.model_sha = {}

    def next_id(self):
        with self.lock:
            self.counter += 1
            return self.counter

    # --- operations: each returns ("ok" | "expected" | "unexpected", detail) ---------------
    def op_upload(self, rnd):
        n = self.next_id()
        path = os.path.join(self.root, f"text-{n}.txt")
        words = ["state", "space", "model", "token", "scan", "gate", "delta", "quant"]
        with open(path, "w") as f:
            f.write(" ".join(rnd.choice(words) for _ in range(rnd.randint(100, 20000))) + "\n")
        r = self.c.ctl("datasets", "upload", path, "--name", f"soak-ds-{n}")
        if r.rc != 0:
            return "unexpected", f"upload: {r.err.strip()[-300:]}"
        art = r.json()
        ok = art["files"][0]["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
        os.remove(path)
        if not ok:
            return "unexpected", "upload registered other bytes"
        # Half of them deleted again, so the registry both grows and shrinks.
        if rnd.random() < 0.5:
            d = self.c.ctl("datasets", "delete", f"soak-ds-{n}:1")
            if d.rc != 0:
                return "unexpected", f"delete: {d.err.strip()[-300:]}"
        return "ok", ""

    def op_download(self, rnd):
        out = os.path.join(self.root, f"dl-{self.next_id()}")
        r = self.c.ctl("models", "download", "tiny", "--out", out)
        try:
            if r.rc != 0:
                return "unexpected", f"download: {r.err.strip()[-300:]}"
            for path, sha in self.model_sha.items():
                got = hashlib.sha256(open(os.path.join(out, path), "rb").read()).hexdigest()
                if got != sha:
                    return "unexpected", f"downloaded {path} hashes to {got}"
            return "ok", ""
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def submit(self, cancel):
        with self.lock:
            if self.open_jobs >= MAX_OPEN_JOBS:
                return None
            self.open_jobs += 1
        n = self.next_id()
        r = self.c.ctl("jobs", "submit", "--model", "tiny", "--calib", "calib", "--output-name", f"soak-out-{n}", *JOB)
        if r.rc != 0:
            with self.lock:
                self.open_jobs -= 1
            return "unexpected", f"submit: {r.err.strip()[-300:]}"
        job = r.json()["id"]
        with self.lock:
            self.jobs[job] = "cancelled" if cancel else "plain"
        return job

    def op_job(self, rnd):
        job = self.submit(cancel=False)
        if job is None:
            return None
        if isinstance(job, tuple):
            return job
        return "ok", ""

    def op_cancel(self, rnd):
        job = self.submit(cancel=True)
        if job is None:
            return None
        if isinstance(job, tuple):
            return job
        time.sleep(rnd.uniform(0, 0.3))  # sometimes queued, sometimes running, sometimes done
        r = self.c.ctl("jobs", "cancel", job)
        if r.rc == 0:
            return "ok", ""
        if r.code() == "FAILED_PRECONDITION":  # it finished first
            return "expected", ""
        return "unexpected", f"cancel: {r.err.strip()[-300:]}"

    def op_generate(self, rnd):
        r = self.c.ctl("generate", "--model", "tiny", "--prompt", rnd.choice(["Once upon a time", "The state", "Hello"]),
                       "--max-new-tokens", str(rnd.randint(4, 48)), "--ignore-eos", "--seed", str(rnd.randint(1, 1000)))
        if r.rc != 0:
            return "unexpected", f"generate: {r.err.strip()[-300:]}"
        return "ok", ""

    OPS = [("upload", op_upload, 3), ("download", op_download, 3), ("job", op_job, 1), ("cancel", op_cancel, 1),
           ("generate", op_generate, 4)]

    def client(self, seed):
        rnd = random.Random(seed)
        kinds = [o for o in self.OPS for _ in range(o[2])]
        while time.monotonic() < self.deadline:
            name, fn, _ = rnd.choice(kinds)
            t0 = time.monotonic()
            try:
                res = fn(self, rnd)
            except Failure as e:
                res = ("unexpected", str(e))
            if res is None:
                continue
            self.stats.record(name, res[0], time.monotonic() - t0, res[1])

    # --- job bookkeeping ----------------------------------------------------------------------
    def reaper(self):
        """Counts jobs out of MAX_OPEN_JOBS as they end, and checks how they ended."""
        seen = set()
        while True:
            done = time.monotonic() > self.deadline
            with self.lock:
                pending = [j for j in self.jobs if j not in seen]
            for job in pending:
                j = self.c.ctl("jobs", "get", job)
                if j.rc != 0:
                    self.stats.record("job-end", "unexpected", 0, f"jobs get {job}: {j.err.strip()[-200:]}")
                    seen.add(job)
                    continue
                st = j.json()["state"].replace("JOB_STATE_", "")
                if st not in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    continue
                seen.add(job)
                with self.lock:
                    self.open_jobs -= 1
                    kind = self.jobs[job]
                good = st == "SUCCEEDED" or (kind == "cancelled" and st == "CANCELLED")
                self.stats.record("job-end", "ok" if good else "unexpected", 0,
                                  f"{job} ({kind}) ended {st}: {j.json().get('error', '')[:200]}")
            with self.lock:
                all_seen = len(seen) == len(self.jobs)
            if done and all_seen:
                return
            if done and time.monotonic() > self.deadline + 120:
                self.stats.record("job-end", "unexpected", 0, f"{len(self.jobs) - len(seen)} jobs still open 120 s after the load")
                return
            time.sleep(0.5)


def sample(pids):
    return {name: proc_stats(pid) for name, pid in pids.items()}


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    build, seconds = os.path.abspath(sys.argv[1]), int(sys.argv[2])
    clients = int(sys.argv[3]) if len(sys.argv) == 4 else 8
    check(1 <= seconds <= 24 * 3600 and 1 <= clients <= 256, "SECONDS in [1, 86400], CLIENTS in [1, 256]")
    with temp_root("mq-soak-") as root:
        c = Cluster(build, root, lease_seconds=5)
        try:
            return run(c, root, seconds, clients)
        except Failure as e:
            print(f"FAIL soak: {e}", flush=True)
            return 1
        finally:
            c.stop()


def run(c, root, seconds, clients):
    c.start_server()
    c.start_worker("w1")
    c.start_worker("w2")
    c.ctl_ok("models", "upload", MODEL_DIR, "--name", "tiny")
    c.ctl_ok("datasets", "upload", CALIB, "--name", "calib")
    soak = Soak(c, seconds, clients, root)
    soak.model_sha = {f["path"]: f["sha256"] for f in c.ctl_ok("models", "get", "tiny").json()["files"]}
    # Warm-up: the model loaded on both workers, one job done, so "before" is the steady state.
    for _ in range(4):
        c.ctl_ok("generate", "--model", "tiny", "--prompt", "warm", "--max-new-tokens", "4")
    job = c.ctl_ok("jobs", "submit", "--model", "tiny", "--calib", "calib", "--output-name", "warm", *JOB).json()["id"]
    c.wait_job(job, lambda j: j["state"] == "JOB_STATE_SUCCEEDED", 120, "the warm-up job")
    pids = {"server": c.server.pid, "worker w1": c.workers["w1"].pid, "worker w2": c.workers["w2"].pid}
    before = sample(pids)
    rss = {n: [(0.0, s["rss_kb"])] for n, s in before.items()}
    t_start = time.monotonic()
    soak.stats.t0 = t_start
    soak.deadline = t_start + seconds
    load = [os.getloadavg()[0]]
    threads = [threading.Thread(target=soak.client, args=(i,)) for i in range(clients)]
    reaper = threading.Thread(target=soak.reaper)
    for t in threads + [reaper]:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(min(2.0, max(0.1, seconds / 30)))
        for n, s in sample(pids).items():
            rss[n].append((time.monotonic() - t_start, s["rss_kb"]))
        load.append(os.getloadavg()[0])
    for t in threads + [reaper]:
        t.join()
    time.sleep(3)  # let finished streams and connections close
    after = sample(pids)
    for n, s in after.items():
        rss[n].append((time.monotonic() - t_start, s["rss_kb"]))

    # --- summary ------------------------------------------------------------------------------
    print(f"\nsoak: {seconds} s, {clients} clients, {len(soak.jobs)} jobs submitted; "
          f"machine load average (1 min) {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} CPUs")
    print(f"{'operation':<10} {'ok':>6} {'expected':>9} {'unexpected':>11} {'p50 s':>7} {'p95 s':>7}")
    for kind, s in sorted(soak.stats.ops.items()):
        lat = sorted(s["lat"])
        p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0)
        print(f"{kind:<10} {s['ok']:>6} {s['expected']:>9} {s['unexpected']:>11} {p(0.5):>7.3f} {p(0.95):>7.3f}")
    print(f"\n{'process':<10} {'RSS MiB start':>13} {'q1':>6} {'max':>6} {'end':>6} {'fds':>9} {'threads':>9}")
    problems = list(soak.stats.errors)
    for n in pids:
        series = [v for _, v in rss[n]]
        q1 = [v for t, v in rss[n] if t <= seconds / 4][-1]
        end = series[-1]
        print(f"{n:<10} {series[0] / 1024:>13.1f} {q1 / 1024:>6.1f} {max(series) / 1024:>6.1f} {end / 1024:>6.1f} "
              f"{before[n]['fds']:>4}>{after[n]['fds']:<4} {before[n]['threads']:>4}>{after[n]['threads']:<4}")
        if after[n]["fds"] > before[n]["fds"] + FD_SLACK:
            problems.append(f"{n}: descriptors {before[n]['fds']} -> {after[n]['fds']}")
        if after[n]["threads"] > before[n]["threads"] + THREAD_SLACK:
            problems.append(f"{n}: threads {before[n]['threads']} -> {after[n]['threads']}")
        half = max(v for t, v in rss[n] if t <= seconds / 2)
        if end > RSS_GROWTH * half + RSS_GROWTH_KB:
            problems.append(f"{n}: RSS grew from {half >> 10} MiB (the first half's peak) to {end >> 10} MiB")
    # RSS over time (MiB), to tell a plateau from a slope in long runs.
    print(f"\nRSS MiB at {', '.join(f'{f * seconds // 8}s' for f in range(9))}:")
    for n in pids:
        row = [min(rss[n], key=lambda tv: abs(tv[0] - f * seconds / 8))[1] / 1024 for f in range(9)]
        print(f"  {n:<10} " + " ".join(f"{v:6.1f}" for v in row))
    total = sum(s["ok"] + s["expected"] for s in soak.stats.ops.values())
    check(total > 0, "no operation completed")
    c.kill_server()
    print(f"\nstore after the soak: {check_store(c.data_dir)} registered files check out, integrity ok")
    if problems:
        print("\nFAIL soak:\n  " + "\n  ".join(problems[:30]), flush=True)
        return 1
    print("PASS soak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
