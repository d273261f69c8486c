#!/usr/bin/env python3
"""The controller's own CPU per thousand reports.

Runs rtest -n 2 on a suite of N trivial tests with a conftest that hooks
pytest_runtest_logreport (so the controller gets every report replayed) and
reads the controller's CPU time (user + system) from inside its session, at
pytest_sessionstart and at pytest_unconfigure. Prints the CPU per 1,000
reports (3 per test: setup, call, teardown; the session's own start
excluded) and the wall time of the same suite with and without the hook,
side by side.

    python3 bench/controller.py [--tests 5000] [--repeat 3]

Needs a release build and the bench venv of bench/run.py.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench")
VENV = os.path.join(WORK, "venv")
RTEST = os.path.join(ROOT, "target", "release", "rtest")

HOOKED = '''
import os, resource

STARTED = []


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pytest_sessionstart(session):
    STARTED.append(_cpu())


def pytest_runtest_logreport(report):
    pass


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput") and STARTED:
        with open(os.environ["RTEST_BENCH_CPU"], "w") as f:
            f.write("%f %f" % (STARTED[0], _cpu()))
'''


def suite(path, n, hooked):
    os.makedirs(path, exist_ok=True)
    per_file = 100
    for f in range(n // per_file):
        with open(os.path.join(path, "test_t%03d.py" % f), "w") as fh:
            for i in range(per_file):
                fh.write("def test_%d():\n    assert %d == %d\n\n" % (i, i, i))
    with open(os.path.join(path, "conftest.py"), "w") as fh:
        fh.write(HOOKED if hooked else "")


def run(path, cpu_file):
    env = dict(os.environ, VIRTUAL_ENV=VENV, RTEST_BENCH_CPU=cpu_file)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    # hypothesis's plugin (in the bench venv for attrs) hooks the terminal
    # summary: off, so that "no plugin hooks" means none.
    cmd = [RTEST, "-n", "2", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    subprocess.run(cmd, cwd=path, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    plain = os.path.join(WORK, "controller-plain")
    hooked = os.path.join(WORK, "controller-hooked")
    suite(plain, args.tests, False)
    suite(hooked, args.tests, True)
    cpu_file = os.path.join(WORK, "controller-cpu.txt")
    walls = {"plain": [], "hooked": []}
    cpus = []
    run(plain, cpu_file)
    run(hooked, cpu_file)
    for _ in range(args.repeat):
        walls["plain"].append(run(plain, cpu_file))
        walls["hooked"].append(run(hooked, cpu_file))
        with open(cpu_file) as fh:
            start, end = (float(x) for x in fh.read().split())
            cpus.append((start, end))
    reports = 3 * args.tests
    startup = statistics.median(c[0] for c in cpus)
    replay = statistics.median(c[1] - c[0] for c in cpus)
    print("tests %d, reports %d" % (args.tests, reports))
    print("controller CPU (medians): %.3f s to start its session, %.3f s for the run = %.1f ms per 1,000 reports"
          % (startup, replay, replay / reports * 1e6))
    p, h = statistics.median(walls["plain"]), statistics.median(walls["hooked"])
    print("wall: no plugin hooks %.3f s, a logreport hook %.3f s (%.2fx)" % (p, h, h / p))


if __name__ == "__main__":
    sys.exit(main())
