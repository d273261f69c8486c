#!/usr/bin/env python3
"""Sync benchmark: rtest's tree sync over ssh side by side with `rsync -a`
over the same ssh, to an sshd on 127.0.0.1 started here with its own keys.

The tree: 10,000 files, about 50 MB (9,000 source-like text files and
1,000 incompressible binary files), under one rsyncdir. Measured, each
REPEAT times, interleaved, medians printed:

- initial sync into an empty remote home: rtest vs rsync (target: rtest
  at most 1.5x rsync's time);
- a no-change re-sync (target: at most 0.5 s);
- a one-file change (target: at most 0.5 s).

rtest's sync time is the one it prints ("synced ... in 1.23s"): from before
it connects to the host until the tree is in place, connection, agent
start and manifests included, as rsync's time includes its ssh connection.

    python3 bench/sync.py [--repeat 3]

Needs: a release build (cargo build --release), openssh-server and rsync
(apt-get install openssh-server rsync), and a Python with pytest for the
remote side (the bench venv of bench/run.py, made here if missing).
"""
import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench")
VENV = os.path.join(WORK, "venv")
PY = os.path.join(VENV, "bin", "python")
RTEST = os.path.join(ROOT, "target", "release", "rtest")
SSHD = "/usr/sbin/sshd"


def sh(*cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def ensure_venv():
    if not os.path.exists(PY):
        sh(sys.executable, "-m", "venv", VENV)
        sh(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pytest")


def gen_tree(path, seed=11):
    rng = random.Random(seed)
    words = ["def", "return", "self", "value", "import", "class", "for", "in", "if", "else",
             "assert", "data", "result", "items", "config", "None", "True", "False", "x", "y"]
    pkg = os.path.join(path, "proj")
    for i in range(9000):
        d = os.path.join(pkg, "mod%02d" % (i % 90), "sub%d" % (i % 7))
        os.makedirs(d, exist_ok=True)
        lines = []
        size = rng.randint(800, 5200)
        while sum(len(l) for l in lines) < size:
            lines.append("    " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + "\n")
        with open(os.path.join(d, "f%05d.py" % i), "w") as fh:
            fh.write("".join(lines))
    for i in range(1000):
        d = os.path.join(pkg, "data%02d" % (i % 20))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "blob%04d.bin" % i), "wb") as fh:
            fh.write(os.urandom(rng.randint(16000, 32000)))
    with open(os.path.join(pkg, "test_one.py"), "w") as fh:
        fh.write("def test_one():\n    pass\n")
    with open(os.path.join(path, "pytest.ini"), "w") as fh:
        fh.write("[pytest]\naddopts = -p no:cacheprovider\n")


def tree_stats(path):
    n = size = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            n += 1
            size += os.path.getsize(os.path.join(dirpath, f))
    return n, size


class Sshd:
    def __init__(self, base):
        self.dir = os.path.join(base, "sshd")
        os.makedirs(self.dir)
        self.home = os.path.join(self.dir, "home")
        os.makedirs(self.home)
        d = self.dir
        for k in ("host_key", "client_key"):
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, k))
        shutil.copy(os.path.join(d, "client_key.pub"), os.path.join(d, "authorized_keys"))
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        with open(os.path.join(d, "sshd_config"), "w") as fh:
            fh.write(
                "Port %d\nListenAddress 127.0.0.1\nHostKey %s/host_key\n"
                "AuthorizedKeysFile %s/authorized_keys\nPidFile %s/sshd.pid\nStrictModes no\n"
                "UsePAM no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n"
                "SetEnv HOME=%s\nLogLevel ERROR\n" % (self.port, d, d, d, self.home)
            )
        host_pub = " ".join(open(os.path.join(d, "host_key.pub")).read().split()[:2])
        with open(os.path.join(d, "known_hosts"), "w") as fh:
            fh.write("[127.0.0.1]:%d %s\n" % (self.port, host_pub))
        self.config = os.path.join(d, "ssh_config")
        with open(self.config, "w") as fh:
            fh.write(
                "Host *\n  Port %d\n  User %s\n  IdentityFile %s/client_key\n  IdentitiesOnly yes\n"
                "  UserKnownHostsFile %s/known_hosts\n  GlobalKnownHostsFile /dev/null\n"
                "  StrictHostKeyChecking yes\n" % (self.port, user, d, d)
            )
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", os.path.join(d, "sshd_config")],
                                     stderr=open(os.path.join(d, "log"), "w"))
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("sshd did not start: " + open(os.path.join(d, "log")).read())

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def rsync(sshd, src, dest):
    t = time.perf_counter()
    sh("rsync", "-a", "--delete", "-e", "ssh -F %s" % sshd.config, src + "/", "127.0.0.1:%s/" % dest)
    return time.perf_counter() - t


def rtest(sshd, src):
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run(
        [RTEST, "--tx", "ssh=127.0.0.1//ssh_config=%s//python=%s" % (sshd.config, PY),
         "--rsyncdir", "proj", "proj/test_one.py"],
        cwd=src, capture_output=True, text=True, env=env,
    )
    m = re.search(r"synced to .*: (\d+) of (\d+) files sent \((\d+) bytes\), (\d+) deleted in ([0-9.]+)s", out.stdout)
    if out.returncode != 0 or not m:
        raise SystemExit("rtest failed:\n" + out.stdout + out.stderr)
    return float(m.group(5)), int(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for tool in (SSHD, shutil.which("rsync"), RTEST):
        if not tool or not os.path.exists(tool):
            raise SystemExit("missing %s (see the docstring)" % tool)
    ensure_venv()
    base = tempfile.mkdtemp(prefix="rtest-sync-bench-")
    try:
        src = os.path.join(base, "src")
        gen_tree(src)
        n, size = tree_stats(os.path.join(src, "proj"))
        print("tree: %d files, %.1f MB" % (n, size / 1e6))
        sshd = Sshd(base)
        cold_r, cold_s, none_r, none_s, one_r, one_s = [], [], [], [], [], []
        try:
            for i in range(args.repeat):
                rtest_first = i % 2 == 0
                # cold: empty remote
                cache = os.path.join(sshd.home, ".cache", "rtest")
                shutil.rmtree(cache, ignore_errors=True)
                dest = os.path.join(sshd.home, "rsync-copy")
                shutil.rmtree(dest, ignore_errors=True)
                # Alternate who goes first, and let the disk settle before
                # each timed step (writeback of the last one is not this one's).
                def timed_pair(rtest_list, rsync_list, dest):
                    steps = [("rtest", lambda: rtest(sshd, src)), ("rsync", lambda: (rsync(sshd, os.path.join(src, "proj"), dest), None))]
                    if not rtest_first:
                        steps.reverse()
                    sent = None
                    for name, fn in steps:
                        os.sync()
                        t, n = fn()
                        if name == "rtest":
                            rtest_list.append(t)
                            sent = n
                        else:
                            rsync_list.append(t)
                    return sent

                timed_pair(cold_s, cold_r, dest)
                timed_pair(none_s, none_r, dest)
                f = os.path.join(src, "proj", "mod01", "sub1", "f00001.py")
                with open(f, "a") as fh:
                    fh.write("# change %d\n" % i)
                sent = timed_pair(one_s, one_r, dest)
                if sent != 1:
                    raise SystemExit("expected one file sent, got %d" % sent)
                print("run %d: cold rtest %.2fs rsync %.2fs | no change %.3fs | one file %.3fs"
                      % (i + 1, cold_s[-1], cold_r[-1], none_s[-1], one_s[-1]))
        finally:
            sshd.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = statistics.median
    ratio = med(cold_s) / med(cold_r)
    pairs = [a / b for a, b in zip(cold_s, cold_r)]
    lines = [
        "tree: %d files, %.1f MB; %d runs, medians" % (n, size / 1e6, args.repeat),
        "initial sync: rtest %.2fs, rsync -a %.2fs: %.2fx (median of per-run ratios %.2fx) (target <= 1.5x) %s"
        % (med(cold_s), med(cold_r), ratio, med(pairs), "ok" if ratio <= 1.5 else "MISSED"),
        "no-change re-sync: rtest %.3fs (rsync %.3fs) (target <= 0.5s) %s"
        % (med(none_s), med(none_r), "ok" if med(none_s) <= 0.5 else "MISSED"),
        "one-file change: rtest %.3fs (rsync %.3fs) (target <= 0.5s) %s"
        % (med(one_s), med(one_r), "ok" if med(one_s) <= 0.5 else "MISSED"),
    ]
    print("\n".join(lines))
    with open(os.path.join(ROOT, "bench", "last-sync-results.txt"), "w") as fh:
        fh.write("# python3 bench/sync.py --repeat %d (%s)\n" % (args.repeat, time.strftime("%Y-%m-%d")))
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
