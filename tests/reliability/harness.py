"""Processes and checks shared by the fault tests and the soak (python3 standard library only).

Starts mq-server and mq-worker as real processes on loopback (--insecure), drives them with mqctl
(--json), kills them with SIGKILL, samples their memory, threads and descriptors from /proc, and
checks a server data directory the way an operator would after a crash: SQLite's own integrity
check, and every registered file's blob present with the size and SHA-256 the registry records.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(fn, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def proc_stats(pid):
    """RSS (KiB), threads and open descriptors of a live process, from /proc."""
    rss = threads = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_kb": rss, "threads": threads, "fds": fds}


class Cluster:
    """One server and any number of workers under a temporary root; stop() kills what is left."""

    def __init__(self, build, root, data_dir=None, lease_seconds=2, server_args=()):
        self.build = build
        self.root = root
        self.data_dir = data_dir or os.path.join(root, "server")
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.lease_seconds = lease_seconds
        self.server_args = list(server_args)
        self.server = None
        self.workers = {}
        self.logs = []

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, name, argv):
        log = open(os.path.join(self.root, f"{name}.log"), "ab")
        self.logs.append(log)
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start_server(self):
        self.server = self._spawn("server", [
            os.path.join(self.build, "server", "mq-server"), "--listen", self.addr, "--data-dir", self.data_dir,
            "--insecure", f"--lease_seconds={self.lease_seconds}", "--drain_seconds=1", *self.server_args])
        wait_until(lambda: self.server.poll() is not None or self.ctl("server", "status", timeout=2).rc == 0, 30,
                   "the server to answer")
        check(self.server.poll() is None, f"the server exited ({self.server.returncode}); see {self.root}/server.log")

    def start_worker(self, name="w1", extra=()):
        cache = os.path.join(self.root, f"cache-{name}")
        p = self._spawn(f"worker-{name}", [
            os.path.join(self.build, "worker", "mq-worker"), "--server", self.addr, "--listen", f"127.0.0.1:{free_port()}",
            "--backend", "cpu", "--cache-dir", cache, "--insecure", "--name", name, "--poll_seconds=1", *extra])
        self.workers[name] = p

        def registered():
            if p.poll() is not None:
                raise Failure(f"worker {name} exited ({p.returncode}); see {self.root}/worker-{name}.log")
            r = self.ctl("workers", "list", timeout=5)
            return r.rc == 0 and any(w.get("name") == name and w.get("inference_connected")
                                     for w in r.json().get("workers", []))
        wait_until(registered, 30, f"worker {name} to register")
        return p

    def sigkill(self, p):
        p.send_signal(signal.SIGKILL)
        p.wait()

    def kill_server(self):
        self.sigkill(self.server)
        self.server = None

    def stop(self):
        for p in [*self.workers.values(), self.server]:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        for f in self.logs:
            f.close()

    # -- client ----------------------------------------------------------------------------
    def ctl(self, *args, timeout=60, proc_timeout=None):
        argv = [os.path.join(self.build, "client", "mqctl"), "--server", self.addr, "--insecure", "--json",
                "--timeout", str(timeout), *args]
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=proc_timeout or timeout + 30)
        except subprocess.TimeoutExpired as e:
            raise Failure(f"mqctl {' '.join(args)} hung (no answer in {e.timeout}s)")
        return CtlResult(args, cp.returncode, cp.stdout, cp.stderr)

    def ctl_ok(self, *args, **kw):
        r = self.ctl(*args, **kw)
        check(r.rc == 0, f"mqctl {' '.join(args)} failed ({r.rc}): {r.err.strip()[-500:]}")
        return r

    def job(self, job_id):
        return self.ctl_ok("jobs", "get", job_id).json()

    def wait_job(self, job_id, pred, timeout, what):
        return wait_until(lambda: (lambda j: j if pred(j) else None)(self.job(job_id)), timeout, what, interval=0.1)

    def inventory(self):
        """Every model, dataset and job the server lists: {"models": {name:version...}, ...}."""
        out = {}
        for kind in ("models", "datasets"):
            items = self.ctl_ok(kind, "list", "--limit", "1000").json().get("artifacts", [])
            out[kind] = sorted(f"{a['name']}:{a['version']}" for a in items)
        out["jobs"] = sorted(j["id"] for j in self.ctl_ok("jobs", "list", "--limit", "1000").json().get("jobs", []))
        return out


class CtlResult:
    def __init__(self, args, rc, out, err):
        self.args, self.rc, self.out, self.err = args, rc, out, err

    def json(self):
        lines = [l for l in self.out.splitlines() if l.startswith("{")]
        check(lines, f"mqctl {' '.join(self.args)} printed no JSON: {self.out[-300:]!r} {self.err[-300:]!r}")
        return json.loads(lines[-1])

    def code(self):
        """The gRPC code mqctl reports in its error line (e.g. DATA_LOSS), or ''."""
        m = re.search(r"\b(CANCELLED|UNKNOWN|INVALID_ARGUMENT|DEADLINE_EXCEEDED|NOT_FOUND|ALREADY_EXISTS|PERMISSION_DENIED|"
                      r"RESOURCE_EXHAUSTED|FAILED_PRECONDITION|ABORTED|OUT_OF_RANGE|UNIMPLEMENTED|INTERNAL|UNAVAILABLE|"
                      r"DATA_LOSS|UNAUTHENTICATED)\b", self.err)
        return m.group(1) if m else ""


def blob_path(data_dir, sha):
    return os.path.join(data_dir, "blobs", "sha256", sha[0:2], sha[2:4], sha)


def check_store(data_dir):
    """The checks an operator runs on a data directory after a crash (the server must be stopped)."""
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'mq.db')}?mode=ro", uri=True)
    try:
        rows = db.execute("PRAGMA integrity_check").fetchall()
        check(rows == [("ok",)], f"PRAGMA integrity_check: {rows}")
        files = db.execute("SELECT path, size, sha256 FROM artifact_files").fetchall()
    finally:
        db.close()
    for path, size, sha in files:
        p = blob_path(data_dir, sha)
        check(os.path.isfile(p), f"registered file {path} has no blob {sha}")
        check(os.path.getsize(p) == size, f"blob {sha} of {path} has {os.path.getsize(p)} bytes, registry says {size}")
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        check(h.hexdigest() == sha, f"blob {sha} of {path} hashes to {h.hexdigest()}")
    # Nothing half-written under blobs/: every file there is named by a digest and hashes to it.
    for dirpath, _, names in os.walk(os.path.join(data_dir, "blobs")):
        for n in names:
            check(HEX64.match(n), f"stray file in the blob store: {os.path.join(dirpath, n)}")
    return len(files)


@contextlib.contextmanager
def temp_root(prefix):
    root = tempfile.mkdtemp(prefix=prefix)
    try:
        yield root
    finally:
        if os.environ.get("MQ_KEEP_TMP") != "1":
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}", file=sys.stderr)


def repo_dir():
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
