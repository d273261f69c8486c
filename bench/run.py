#!/usr/bin/env python3
"""Side-by-side benchmark: serial pytest, pytest-xdist (-n 2) and rtest (-n 2).

Runs each tool on each suite, interleaved, REPEAT times; prints medians and
ratios (never absolute targets: this machine is shared and noisy), and
rtest's coordinator peak RSS (VmHWM sampled from /proc while it runs).

    python3 bench/run.py [--repeat 5] [--suites trivial,trivial-hooked,heavy,attrs,attrs-cov]

"trivial" is a plain suite: no plugin hooks the session (hypothesis's
pytest plugin, installed for attrs, is switched off for every tool), so
rtest's controller ends at once. "trivial-hooked" is the same suite with a
conftest.py that implements pytest_runtest_logreport, so every report is
replayed in rtest's controller (as every report goes to xdist's).
"attrs-cov" is the attrs suite with pytest-cov (--cov=attr --cov=attrs):
under rtest the coverage is combined and reported by the controller, as
under xdist. Both attrs suites run with a fixed --hypothesis-seed: attrs's
property tests draw new examples every run, and with a random seed the work
itself (not the tool) changed a run's time by up to 20%.

Needs: a release build (cargo build --release), network access to PyPI for
the bench venv (pytest, pytest-xdist) and, for the "attrs" suite, the attrs
sdist and its test dependencies.
"""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench")
VENV = os.path.join(WORK, "venv")
PY = os.path.join(VENV, "bin", "python")
RTEST = os.path.join(ROOT, "target", "release", "rtest")


def sh(*cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def ensure_venv():
    if not os.path.exists(PY):
        sh(sys.executable, "-m", "venv", VENV)
    sh(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pytest", "pytest-xdist", "pytest-cov")


def gen_trivial(path, n=5000, per_file=100):
    os.makedirs(path, exist_ok=True)
    for f in range(n // per_file):
        with open(os.path.join(path, "test_t%03d.py" % f), "w") as fh:
            for i in range(per_file):
                fh.write("def test_%d():\n    assert %d == %d\n\n" % (i, i, i))


def gen_heavy(path, n=200, seed=7):
    """Sleep-based tests with a heavy-tailed (Pareto) duration distribution."""
    os.makedirs(path, exist_ok=True)
    rng = random.Random(seed)
    with open(os.path.join(path, "test_heavy.py"), "w") as fh:
        fh.write("import time\nimport pytest\n\nD = [\n")
        for _ in range(n):
            fh.write("    %.4f,\n" % min(0.005 * rng.paretovariate(1.2), 2.0))
        fh.write("]\n\n@pytest.mark.parametrize('i', range(len(D)))\ndef test_sleep(i):\n    time.sleep(D[i])\n")


def get_attrs(path):
    if os.path.exists(os.path.join(path, "tests")):
        return path
    tmp = tempfile.mkdtemp()
    sh(PY, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "attrs", "-d", tmp)
    sdist = [f for f in os.listdir(tmp) if f.endswith(".tar.gz")][0]
    with tarfile.open(os.path.join(tmp, sdist)) as tf:
        tf.extractall(tmp)
    src = os.path.join(tmp, sdist[: -len(".tar.gz")])
    shutil.copytree(src, path)
    sh(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", path, "hypothesis", "pympler")
    return path


ENV = dict(os.environ)


def timed(cmd, cwd, sample_rss=False):
    start = time.perf_counter()
    env = dict(ENV, VIRTUAL_ENV=VENV, PATH=os.path.join(VENV, "bin") + os.pathsep + ENV["PATH"])
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    peak = 0
    while proc.poll() is None:
        if sample_rss:
            try:
                with open("/proc/%d/status" % proc.pid) as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
        time.sleep(0.02)
    return time.perf_counter() - start, proc.returncode, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--suites", default="trivial,trivial-hooked,heavy,attrs,attrs-cov")
    ap.add_argument(
        "--keep-env",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE if set (by default it is removed, as on a typical "
        "developer machine: with it every process re-rewrites every test module's asserts)",
    )
    args = ap.parse_args()
    if not args.keep_env and ENV.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        print("note: PYTHONDONTWRITEBYTECODE unset for the runs (--keep-env keeps it)")
    os.makedirs(WORK, exist_ok=True)
    ensure_venv()
    if not os.path.exists(RTEST):
        sh("cargo", "build", "--release", cwd=ROOT)
    suites = {}
    extra = {
        "trivial": ["-p", "no:hypothesispytest"],
        "trivial-hooked": ["-p", "no:hypothesispytest"],
        "attrs": ["--hypothesis-seed=0"],
        "attrs-cov": ["--hypothesis-seed=0", "--cov=attr", "--cov=attrs", "--cov-report=term"],
    }
    for name in args.suites.split(","):
        path = os.path.join(WORK, name)
        if name == "trivial":
            gen_trivial(path)
        elif name == "trivial-hooked":
            gen_trivial(path)
            with open(os.path.join(path, "conftest.py"), "w") as fh:
                fh.write("def pytest_runtest_logreport(report):\n    pass\n")
        elif name == "heavy":
            gen_heavy(path)
        elif name in ("attrs", "attrs-cov"):
            path = os.path.join(get_attrs(os.path.join(WORK, "attrs")), "tests")
        suites[name] = path
    common = ["-p", "no:cacheprovider", "-q"]
    tools = {
        "pytest": [PY, "-m", "pytest"] + common,
        "xdist": [PY, "-m", "pytest", "-n", "2"] + common,
        "rtest": [RTEST, "-n", "2"] + common,
    }
    print("%-8s %-7s %9s %9s %9s  %s" % ("suite", "tool", "median_s", "min_s", "vs_xdist", "notes"))
    for name, path in suites.items():
        runs = {tool: cmd + extra.get(name, []) for tool, cmd in tools.items()}
        # One untimed run per tool, so every tool starts from warm caches.
        for tool, cmd in runs.items():
            timed(cmd, path)
        times = {t: [] for t in tools}
        rss = []
        for _ in range(args.repeat):
            for tool, cmd in runs.items():
                secs, code, peak = timed(cmd, path, sample_rss=(tool == "rtest"))
                times[tool].append(secs)
                if tool == "rtest":
                    rss.append(peak)
        xdist = statistics.median(times["xdist"])
        for tool in tools:
            med = statistics.median(times[tool])
            note = "peak RSS %.1f MB" % (max(rss) / 1024.0) if tool == "rtest" else ""
            print("%-8s %-7s %9.3f %9.3f %9.2f  %s" % (name, tool, med, min(times[tool]), med / xdist, note))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
