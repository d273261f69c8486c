#!/usr/bin/env python3
"""Scheduling benchmark: a heavy-tailed sleep suite, against its lower bound.

400 sleep-based tests in 8 modules with module-scoped fixtures: most take
20-80 ms, ten take 1 s (scattered), one takes 12 s (late in collection
order). Runs, side by side and repeated: rtest cold (no history), rtest with
history, pytest-xdist --dist load and --dist worksteal, all with 2 workers;
prints each one's median and its ratio to the lower bound
max(longest test, total / workers), and the ratio of the slowest to the mean
of `rtest --shard K/3` jobs' expected times.

    python3 bench/sched.py [--repeat 3]
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as common  # noqa: E402

WORKERS = 2


def generate(path):
    rng = random.Random(11)
    durations = [0.02 + 0.06 * rng.random() for _ in range(400)]
    for k in rng.sample(range(0, 360), 10):
        durations[k] = 1.0
    durations[380] = 12.0
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    for m in range(8):
        with open(os.path.join(path, "test_m%d.py" % m), "w") as fh:
            fh.write("import time\nimport pytest\n\n@pytest.fixture(scope='module')\ndef resource():\n    time.sleep(0.05)\n    return 1\n\n")
            for i in range(50):
                fh.write("def test_%d(resource):\n    time.sleep(%.4f)\n\n" % (i, durations[m * 50 + i]))
    return durations


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    common.ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    common.ensure_venv()
    if not os.path.exists(common.RTEST):
        subprocess.run(["cargo", "build", "--release"], cwd=common.ROOT, check=True)
    path = os.path.join(common.WORK, "sched")
    durations = generate(path)
    # module fixtures add 50 ms per module per worker at least once
    bound = max(max(durations), (sum(durations) + 8 * 0.05) / WORKERS)
    base = ["-p", "no:cacheprovider", "-q"]
    tools = {
        "rtest-cold": [common.RTEST, "-n", str(WORKERS)] + base,
        "rtest-history": [common.RTEST, "-n", str(WORKERS)] + base,
        "xdist-load": [common.PY, "-m", "pytest", "-n", str(WORKERS), "--dist", "load"] + base,
        "xdist-worksteal": [common.PY, "-m", "pytest", "-n", str(WORKERS), "--dist", "worksteal"] + base,
    }
    history = os.path.join(path, ".rtest")
    times = {t: [] for t in tools}
    for _ in range(args.repeat):
        for tool, cmd in tools.items():
            if tool == "rtest-cold":
                shutil.rmtree(history, ignore_errors=True)
            secs, code, _ = common.timed(cmd, path)
            times[tool].append(secs)
    print("lower bound: %.2fs (longest %.1fs, total %.1fs over %d workers)" % (bound, max(durations), sum(durations), WORKERS))
    print("%-16s %9s %9s" % ("tool", "median_s", "vs_bound"))
    for tool in tools:
        med = statistics.median(times[tool])
        print("%-16s %9.2f %9.2f" % (tool, med, med / bound))
    best_xdist = min(statistics.median(times["xdist-load"]), statistics.median(times["xdist-worksteal"]))
    print("rtest-history / best xdist: %.2f" % (statistics.median(times["rtest-history"]) / best_xdist))
    # shards, from the history the runs above left
    out = subprocess.run(
        [common.RTEST, "plan", "--format", "json", "--collect", "--shard", "1/3"] + base,
        cwd=path, capture_output=True, text=True, env=dict(common.ENV, VIRTUAL_ENV=common.VENV),
    )
    shards = json.loads(out.stdout)["collect"]["shards"]
    secs = [s["expected_seconds"] or 0.0 for s in shards]
    mean = sum(secs) / len(secs)
    print(
        "3 shards (expected s): %s  max/mean: %.3f  max/max(longest, mean): %.3f"
        % (", ".join("%.2f" % s for s in secs), max(secs) / mean, max(secs) / max(max(durations), mean))
    )


if __name__ == "__main__":
    main()
