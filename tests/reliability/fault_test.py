#!/usr/bin/env python3
"""Fault tests (issue 13, item 6): real mq-server / mq-worker processes on loopback, killed with
SIGKILL mid-job, mid-stream and mid-upload, a data directory that fills up, a blob corrupted on
disk. Each scenario checks what the service answered and what is on disk afterwards.

  fault_test.py BUILD_DIR SCENARIO      (scenarios: see SCENARIOS; exit 77 = skipped)
"""

import calendar
import hashlib
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Cluster, Failure, blob_path, check, check_store, repo_dir, temp_root, wait_until  # noqa: E402

SKIP = 77
MODEL_DIR = os.path.join(repo_dir(), "models", "mamba-tiny")
CALIB = os.path.join(repo_dir(), "models", "text", "calib.txt")
# A job long enough on the CPU worker (several seconds) to be killed while it runs.
LONG_JOB = ["--preset", "mambaquant", "--bits", "w8a8", "--samples", "64", "--seq-len", "512"]
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
QUICK_JOB = ["--preset", "rtn", "--bits", "w8a8", "--samples", "4", "--seq-len", "64"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seed(c):
    c.ctl_ok("models", "upload", MODEL_DIR, "--name", "tiny")
    c.ctl_ok("datasets", "upload", CALIB, "--name", "calib")


def submit(c, output, job=LONG_JOB):
    return c.ctl_ok("jobs", "submit", "--model", "tiny", "--calib", "calib", "--output-name", output, *job).json()["id"]


def state(j):
    return j["state"].replace("JOB_STATE_", "")


def iso_time(text):
    """Seconds since the epoch of an RFC 3339 UTC time as the JSON output prints it."""
    m = re.match(r"(\d+-\d+-\d+T\d+:\d+:\d+)(\.\d+)?Z$", text)
    check(m is not None, f"not an RFC 3339 UTC time: {text!r}")
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + float(m.group(2) or 0)


def sha_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- SIGKILL ----------------------------------------------------------------------------------

def worker_kill_mid_job(c):
    """The lease rule (scheduler.h): a worker silent for --lease_seconds is dropped and its running
    job requeued (attempt + 1, at most --max_attempts); another worker then runs it to the end."""
    c.start_server()
    c.start_worker("w1")
    seed(c)
    job = submit(c, "out-a")
    # Killed while it computes (past fetching its inputs).
    j = c.wait_job(job, lambda j: state(j) in TERMINAL or (state(j) == "RUNNING" and j.get("stage") not in (None, "STAGE_FETCH")),
                   60, "the job to compute on w1")
    check(state(j) == "RUNNING", f"the job ended {state(j)} before it could be killed")
    first_worker = j["worker_id"]
    c.sigkill(c.workers["w1"])
    killed_at = time.time()
    lease_expires = [w for w in c.ctl_ok("workers", "list").json()["workers"] if w["name"] == "w1"][0]["lease_expires"]
    log(f"w1 killed while {job} ran (stage {j.get('stage')}); its lease expires {lease_expires}")
    # Not requeued before the lease runs out: the server cannot tell a dead worker from a slow one.
    j = c.wait_job(job, lambda j: state(j) in ("QUEUED", "FAILED") or int(j.get("attempt", 1)) > 1, 30,
                   "the job to be taken back from the dead worker")
    requeued_at = time.time()
    check(state(j) == "QUEUED", f"after the lease the job is {state(j)}, not QUEUED: {j.get('error')}")
    check(requeued_at >= iso_time(lease_expires) - 0.2, f"requeued at {requeued_at}, before the lease expired ({lease_expires})")
    log(f"requeued {requeued_at - killed_at:.1f}s after the kill, {requeued_at - iso_time(lease_expires):.2f}s after the lease expired")
    c.start_worker("w2")
    j = c.wait_job(job, lambda j: state(j) in ("SUCCEEDED", "FAILED", "CANCELLED"), 120, "the job to finish on w2")
    check(state(j) == "SUCCEEDED", f"job ended {state(j)}: {j.get('error')}")
    check(int(j["attempt"]) == 2, f"attempt {j['attempt']}, expected 2")
    check(j["worker_id"] != first_worker, "finished by the killed worker's id")
    check(j["result_model"] == "out-a:1", f"result {j.get('result_model')}")
    workers = [w["name"] for w in c.ctl_ok("workers", "list").json().get("workers", [])]
    check("w1" not in workers, f"the killed worker is still listed: {workers}")
    c.kill_server()
    log(f"store: {check_store(c.data_dir)} registered files check out")


def worker_kill_mid_stream(c):
    c.start_server()
    c.start_worker("w1")
    seed(c)
    argv = [os.path.join(c.build, "client", "mqctl"), "--server", c.addr, "--insecure", "--json", "generate",
            "--model", "tiny", "--prompt", "Once upon a time", "--max-new-tokens", "4096", "--ignore-eos"]
    gen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = gen.stdout.readline()
    check(first.startswith("{"), f"no token before the kill: {first!r}")
    c.sigkill(c.workers["w1"])
    killed_at = time.monotonic()
    try:
        out, err = gen.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        gen.kill()
        raise Failure("the generate stream hangs after its worker died")
    took = time.monotonic() - killed_at
    check(gen.returncode != 0, "the stream of a killed worker ended as if complete")
    m = re.search(r"error: ([A-Z_]+): (.*)", err)
    check(m is not None, f"no clear error: {err!r}")
    check(m.group(1) in ("UNAVAILABLE", "ABORTED", "INTERNAL"), f"stream ended with {m.group(1)}")
    log(f"stream ended {took:.2f}s after the kill: {m.group(1)}: {m.group(2)[:160]}")
    c.start_worker("w2")
    r = c.ctl_ok("generate", "--model", "tiny", "--prompt", "Hello", "--max-new-tokens", "8", "--ignore-eos")
    lines = [l for l in r.out.splitlines() if l.startswith("{")]
    check(len(lines) >= 8, f"the new worker's generation has {len(lines)} lines")


def server_kill_mid_upload(c):
    c.start_server()
    seed(c)
    big = os.path.join(c.root, "big.txt")
    text = open(CALIB, "rb").read()
    with open(big, "wb") as f:
        for _ in range((256 << 20) // len(text) + 1):
            f.write(text)
    before = c.inventory()
    argv = [os.path.join(c.build, "client", "mqctl"), "--server", c.addr, "--insecure", "datasets", "upload", big,
            "--name", "big"]
    up = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial_dir = os.path.join(c.data_dir, "partial")

    def receiving():
        sizes = [os.path.getsize(os.path.join(partial_dir, n)) for n in os.listdir(partial_dir)]
        return sizes and max(sizes) >= (16 << 20)
    wait_until(receiving, 60, "the upload's bytes to arrive", interval=0.005)
    c.kill_server()
    out, err = up.communicate(timeout=60)
    check(up.returncode != 0, "the upload succeeded although the server died")
    m = re.search(r"--resume (\S+)", err)
    check(m is not None, f"the interrupted upload does not say how to resume: {err!r}")
    upload_id = m.group(1)
    kept = max(os.path.getsize(os.path.join(partial_dir, n)) for n in os.listdir(partial_dir))
    errline = [l for l in err.splitlines() if l.startswith("error:")]
    log(f"server killed mid-upload at {kept >> 20} MiB of {os.path.getsize(big) >> 20} MiB; mqctl: {errline[-1][:160] if errline else err[:160]!r}")
    log(f"store: {check_store(c.data_dir)} registered files check out")
    c.start_server()
    check(c.inventory() == before, f"registry changed by a killed upload: {before} -> {c.inventory()}")
    r = c.ctl("datasets", "get", "big")
    check(r.rc != 0 and r.code() == "NOT_FOUND", f"half-uploaded dataset visible: {r.out} {r.err}")
    # The bytes received before the crash are kept for the resume (no re-send from zero).
    kept_after = max([os.path.getsize(os.path.join(partial_dir, n)) for n in os.listdir(partial_dir)] or [0])
    check(kept_after > 0, "the restarted server dropped the partial upload")
    r = c.ctl_ok("datasets", "upload", big, "--name", "big", "--resume", upload_id, timeout=120)
    art = r.json()
    check(art["files"][0]["sha256"] == sha_file(big), "resumed upload registered other bytes")
    check(int(art["files"][0]["size"]) == os.path.getsize(big), "resumed upload size")
    check(not os.listdir(partial_dir), f"partial files left after the commit: {os.listdir(partial_dir)}")
    c.kill_server()
    log(f"store: {check_store(c.data_dir)} registered files check out")


def server_kill_mid_job(c):
    c.start_server()
    c.start_worker("w1")
    seed(c)
    done = submit(c, "out-a", QUICK_JOB)
    c.wait_job(done, lambda j: state(j) == "SUCCEEDED", 60, "a first job to succeed")
    job = submit(c, "out-b")
    j = c.wait_job(job, lambda j: state(j) in ("RUNNING",) + TERMINAL, 60, "the job to run")
    check(state(j) == "RUNNING", f"the job ended {state(j)} before the server could be killed")
    before = c.inventory()
    c.kill_server()
    log(f"server killed while {job} ran")
    log(f"store: {check_store(c.data_dir)} registered files check out")
    c.start_server()
    after = c.inventory()
    for k in ("models", "datasets", "jobs"):
        check(set(before[k]) <= set(after[k]), f"{k} lost across the crash: {before[k]} -> {after[k]}")
    j = c.wait_job(job, lambda j: state(j) in ("SUCCEEDED", "FAILED", "CANCELLED"), 120, "the job to finish after the restart")
    check(state(j) == "SUCCEEDED", f"job ended {state(j)}: {j.get('error')}")
    check(j["result_model"] == "out-b:1", f"result {j.get('result_model')}")
    log(f"job finished after the restart (attempt {j['attempt']})")
    c.kill_server()
    log(f"store: {check_store(c.data_dir)} registered files check out")


# --- full disk --------------------------------------------------------------------------------

def mount_small_disk(root, mib):
    """A tmpfs of `mib` MiB (root only); None when mounting is not allowed here."""
    mnt = os.path.join(root, "disk")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", mnt], capture_output=True, text=True)
    return mnt if r.returncode == 0 else None


def umount(mnt):
    subprocess.run(["umount", "-l", mnt], capture_output=True)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, leave):
    """Fills the file system of `path` until `leave` bytes are free."""
    filler = os.path.join(path, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free_bytes(path) - leave))
    return filler


def full_disk_upload(c):
    c.start_server()
    seed(c)
    before = c.inventory()
    left = free_bytes(c.data_dir)
    big = os.path.join(c.root, "big.txt")
    text = open(CALIB, "rb").read()
    with open(big, "wb") as f:
        while f.tell() < left + (1 << 20):
            f.write(text)
    r = c.ctl("datasets", "upload", big, "--name", "big")
    check(r.rc != 0, "an upload larger than the free space succeeded")
    check(r.code() == "RESOURCE_EXHAUSTED", f"full disk answered {r.code()!r}: {r.err.strip()[-300:]}")
    log(f"upload onto a full disk: {[l for l in r.err.splitlines() if 'error:' in l][-1][:200]}")
    check(c.inventory() == before, "the registry changed")
    # The refused file's bytes are dropped (kept, they would hold the disk full for every client
    # until the upload expires), so the next small upload goes through.
    partial_dir = os.path.join(c.data_dir, "partial")
    held = sum(os.path.getsize(os.path.join(partial_dir, n)) for n in os.listdir(partial_dir))
    check(held == 0, f"{held} bytes of the refused upload still held in partial/")
    c.ctl_ok("datasets", "upload", os.path.join(repo_dir(), "models", "text", "eval.txt"), "--name", "eval")
    c.kill_server()
    log(f"store: {check_store(c.data_dir)} registered files check out")


def full_disk_result_upload(c):
    c.start_server()
    c.start_worker("w1")
    seed(c)
    before = c.inventory()
    # Room for the job's records but not for its result (the quantized model is ~2.6 MB).
    filler = fill(c.data_dir, 1 << 20)
    job = submit(c, "out-full", QUICK_JOB)
    j = c.wait_job(job, lambda j: state(j) in ("SUCCEEDED", "FAILED", "CANCELLED"), 120, "the job to end")
    log(f"job with a full disk: {state(j)} attempt {j.get('attempt')}: {j.get('error', '')[:200]}")
    check(state(j) == "FAILED", f"job ended {state(j)}")
    check("RESOURCE_EXHAUSTED" in j.get("error", ""), f"the job's error does not say RESOURCE_EXHAUSTED: {j.get('error')}")
    after = c.inventory()
    check(after["models"] == before["models"], f"a result registered on a full disk: {after['models']}")
    os.remove(filler)
    job2 = submit(c, "out-after", QUICK_JOB)
    j = c.wait_job(job2, lambda j: state(j) in ("SUCCEEDED", "FAILED", "CANCELLED"), 120, "the job after freeing space")
    check(state(j) == "SUCCEEDED", f"with space again the job ended {state(j)}: {j.get('error')}")
    c.kill_server()
    log(f"store: {check_store(c.data_dir)} registered files check out")


# --- corruption -------------------------------------------------------------------------------

def server_detections(c):
    with open(os.path.join(c.root, "server.log"), errors="replace") as f:
        return sum('msg="blob corrupt on disk' in line for line in f)


def corrupt_blob(c):
    c.start_server()
    c.start_worker("w1")
    seed(c)
    art = c.ctl_ok("models", "get", "tiny").json()
    files = {f["path"]: f for f in art["files"]}
    weights = files["model.safetensors"]
    check(int(weights["size"]) > (1 << 20), "the weights fit one chunk: the test needs a blob of several")
    # One bit flipped near the end: the first 1 MiB chunk is sound, the last one is not.
    p = blob_path(c.data_dir, weights["sha256"])
    at = int(weights["size"]) - 100
    with open(p, "r+b") as fh:
        fh.seek(at)
        b = fh.read(1)
        fh.seek(at)
        fh.write(bytes([b[0] ^ 0x01]))
    out = os.path.join(c.root, "download")
    r = c.ctl("models", "download", "tiny", "--out", out)
    check(r.rc != 0, "a corrupt model downloaded without error")
    check(r.code() == "DATA_LOSS", f"download answered {r.code()!r}: {r.err.strip()[-300:]}")
    check(weights["sha256"] in r.err, "the error does not name the corrupt blob")
    log(f"download: {r.err.strip().splitlines()[-1][:200]}")
    got = os.path.join(out, "model.safetensors")
    if os.path.exists(got):
        check(os.path.getsize(got) < int(weights["size"]), "the whole of the corrupt blob reached the client")
    # The server itself detected it (mqctl would also catch a bad digest; other clients may not).
    check(server_detections(c) == 1, f"the server logged {server_detections(c)} corrupt-blob detections, expected 1")
    # Again: mqctl resumes from the .part it kept (a read from an offset), still refused.
    r = c.ctl("models", "download", "tiny", "--out", out)
    check(r.rc != 0 and r.code() == "DATA_LOSS", f"the resumed download answered {r.code()!r}")
    check(server_detections(c) == 2, "the resumed read was not checked by the server")
    # A job that reads it fails with DATA_LOSS (the worker's fetch), and is not retried elsewhere.
    job = submit(c, "out-corrupt", QUICK_JOB)
    j = c.wait_job(job, lambda j: state(j) in ("SUCCEEDED", "FAILED", "CANCELLED"), 60, "the job on a corrupt model")
    check(state(j) == "FAILED", f"a job on a corrupt model ended {state(j)}")
    check("DATA_LOSS" in j.get("error", ""), f"job error: {j.get('error')}")
    log(f"job: {j['error'][:200]}")
    r = c.ctl("generate", "--model", "tiny", "--prompt", "Hello", "--max-new-tokens", "4", timeout=30)
    check(r.rc != 0, "generation from a corrupt model succeeded")
    check(r.code() in ("DATA_LOSS", "FAILED_PRECONDITION", "UNAVAILABLE"), f"generate answered {r.code()!r}: {r.err[-300:]}")
    log(f"generate: {r.err.strip().splitlines()[-1][:200]}")
    c.kill_server()


SCENARIOS = {
    "worker_kill_mid_job": (worker_kill_mid_job, None),
    "worker_kill_mid_stream": (worker_kill_mid_stream, None),
    "server_kill_mid_upload": (server_kill_mid_upload, None),
    "server_kill_mid_job": (server_kill_mid_job, None),
    "full_disk_upload": (full_disk_upload, 6),
    "full_disk_result_upload": (full_disk_result_upload, 8),
    "corrupt_blob": (corrupt_blob, None),
}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in SCENARIOS:
        print(f"usage: {sys.argv[0]} BUILD_DIR {{{'|'.join(SCENARIOS)}}}", file=sys.stderr)
        return 2
    build, name = os.path.abspath(sys.argv[1]), sys.argv[2]
    fn, disk_mib = SCENARIOS[name]
    with temp_root(f"mq-fault-{name}-") as root:
        mnt = None
        if disk_mib:
            mnt = mount_small_disk(root, disk_mib)
            if mnt is None:
                print("SKIP: cannot mount a tmpfs here (needs root)", flush=True)
                return SKIP
        c = Cluster(build, root, data_dir=os.path.join(mnt, "server") if mnt else None)
        try:
            fn(c)
        except Failure as e:
            print(f"FAIL {name}: {e}\n(logs in {root}; MQ_KEEP_TMP=1 keeps them)", flush=True)
            for f in sorted(os.listdir(root)):
                if f.endswith(".log"):
                    tail = open(os.path.join(root, f), errors="replace").read()[-1500:]
                    print(f"--- {f} (tail)\n{tail}")
            return 1
        finally:
            c.stop()
            if mnt:
                umount(mnt)
    print(f"PASS {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
