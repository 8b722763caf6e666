"""The fastest OpenBLAS core type for OneFlow's CPU matmul on this machine, measured once, cached.

OneFlow 0.9.0's liboneflow links a DYNAMIC_ARCH OpenBLAS statically whose CPU detection predates
recent CPUs: on an AVX-512 EPYC it picks the SSE "Prescott"/"Barcelona" kernels, 2-3x slower than
its AVX2 ones. It reads OPENBLAS_CORETYPE once, when liboneflow loads (at `import oneflow`), so the
variable must be in the environment before that: tools/train.sh and tools/test.sh export it, every
launched rank and data-loader worker inherits it, and set-up writes a `.pth` file into the project's
venv so that a plain `.venv/bin/python` gets it too. An OPENBLAS_CORETYPE already set always wins.

    python tools/openblas_coretype.py              # prints the choice (measures on first use)
    python tools/openblas_coretype.py --measure    # measures again and prints the table
    python tools/openblas_coretype.py --install-pth  # this python applies it at start-up
    eval "$(python tools/openblas_coretype.py --export)"  # this shell exports it (as train.sh)

Only core types whose instructions the CPU has (its /proc/cpuinfo flags) are tried; each runs in its
own process, interleaved over rounds, scored by the geometric mean of a square 1024^3 matmul and a
ViT-Ti-shaped one (MLP fc1 of 16 images). The core the library really selected is read back from
OpenBLAS itself (`gotoblas_corename`): a name this build maps to another kernel is not a candidate.
"""

import argparse
import ctypes
import glob
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

# core type -> /proc/cpuinfo flags its kernels need (OpenBLAS kernel/x86_64/KERNEL.<core>,
# dynamic.c)
CANDIDATES = {
    "SkylakeX": ("avx512f", "avx512dq", "avx512bw", "avx512vl", "avx2", "fma"),
    "Cooperlake": ("avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_bf16", "avx2", "fma"),
    "Haswell": ("avx2", "fma", "avx"),
    "Zen": ("avx2", "fma", "avx"),
    "Sandybridge": ("avx",),
    "Excavator": ("avx2", "fma", "fma4", "xop"),
    "Steamroller": ("avx", "fma", "fma4", "xop"),
    "Piledriver": ("avx", "fma", "fma4", "xop"),
    "Bulldozer": ("avx", "fma4", "xop"),
    "Nehalem": ("ssse3", "sse4_1", "sse4_2"),
    "Dunnington": ("ssse3", "sse4_1"),
    "Penryn": ("ssse3", "sse4_1"),
    "Core2": ("ssse3",),
    "Barcelona": ("pni", "sse4a"),
    "Prescott": ("pni",),
}
# (m, k, n): square, and ViT-Ti fc1 at 16 x 197 tokens
SHAPES = (
    (1024, 1024, 1024),
    (3152, 192, 768),
)
CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo=CPUINFO):
    with open(cpuinfo) as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def runnable(flags):
    """The candidate core types whose instructions this CPU has, in CANDIDATES' order."""
    return [core for core, need in CANDIDATES.items() if flags.issuperset(need)]


def core_in_use(library="liboneflow"):
    """The core type the OpenBLAS in `library` (OneFlow's, or "openblas": numpy's) selected in this
    process; the library must be loaded (`import oneflow` / `import numpy`)."""
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if library in line.split("/")[-1] and ".so" in line}
    if not libs:
        return None
    name = ctypes.CDLL(libs.pop()).gotoblas_corename
    name.restype = ctypes.c_char_p
    return name().decode()


def _probe():
    """Child process: report the selected core and the best GFLOP/s of each shape."""
    import oneflow as flow

    out = {"core": core_in_use(), "gflops": []}
    for m, k, n in SHAPES:
        a, b = flow.randn(m, k), flow.randn(k, n)
        flow.matmul(a, b).numpy()
        best, t_end = float("inf"), time.perf_counter() + 0.25
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            flow.matmul(a, b).numpy()
            best = min(best, time.perf_counter() - t0)
        out["gflops"].append(2 * m * k * n / best / 1e9)
    print(json.dumps(out))


def _run_probe(core):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update(
        GLOG_minloglevel="3",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        LIBAI_VIT_OPENBLAS_PTH="0",
    )
    if core is not None:
        env["OPENBLAS_CORETYPE"] = core
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--probe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(candidates, rounds=2, log=sys.stderr):
    """{core: score}, the best over interleaved rounds; 'default': what the library picks itself."""
    best, table = {}, {}
    for _ in range(rounds):
        for core in [None] + list(candidates):
            res = _run_probe(core)
            if res is None or (core is not None and res["core"] != core):
                continue  # the library lacks it, or maps the name onto another kernel
            label = core or "default (%s)" % res["core"]
            score = math.exp(sum(map(math.log, res["gflops"])) / len(res["gflops"]))
            if score > best.get(label, 0.0):
                best[label], table[label] = score, res["gflops"]
    for label in sorted(best, key=best.get, reverse=True):
        print(
            "[openblas] %-22s %6.1f GFLOP/s  (1024^3 %.1f, ViT fc1 %.1f)"
            % (label, best[label], *table[label]),
            file=log,
        )
    return best


def _liboneflow():
    spec = importlib.util.find_spec("oneflow")
    if spec is None or not spec.origin:
        return ""
    site = os.path.dirname(os.path.dirname(spec.origin))
    libs = sorted(glob.glob(os.path.join(site, "oneflow.libs", "liboneflow*.so")))
    return libs[0] if libs else os.path.dirname(spec.origin)


def machine_key():
    """What the choice depends on: the CPU and the library build."""
    with open(CPUINFO) as f:
        model = next((line for line in f if line.startswith("model name")), "")
    lib = _liboneflow()
    size = os.path.getsize(lib) if os.path.isfile(lib) else 0
    text = "\n".join(
        [model.strip(), " ".join(sorted(cpu_flags())), os.path.basename(lib), str(size)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "libai_vit", "openblas_coretype.json")


def choose(remeasure=False):
    """The cached choice for this machine, measuring (and caching) it when there is none."""
    path, key = cache_path(), machine_key()
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    if not remeasure and key in cache:
        return cache[key]["core"]
    only = os.environ.get("LIBAI_VIT_OPENBLAS_CANDIDATES")  # tests narrow the search to stay fast
    candidates = runnable(cpu_flags())
    if only:
        candidates = [c for c in candidates if c in only.split()]
    print(
        "[openblas] measuring the core types this CPU can run: %s" % " ".join(candidates),
        file=sys.stderr,
    )
    scores = measure(candidates)
    named = {k: v for k, v in scores.items() if k in CANDIDATES}
    if not named:
        return ""  # nothing measurable: leave OpenBLAS to its own detection
    core = max(named, key=named.get)
    cache[key] = {"core": core, "gflops": {k: round(v, 1) for k, v in scores.items()}}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(cache, f, indent=1)
        os.replace(path + ".tmp", path)
    except OSError as e:
        print(
            "[openblas] could not cache the choice in %s (%s): it will be measured again"
            % (path, e),
            file=sys.stderr,
        )
    print("[openblas] chose %s" % core, file=sys.stderr)
    return core


PTH_NAME = "libai_vit_openblas.pth"


def pth_line(core):
    """A .pth line run at every interpreter start: sets the core type unless the user set one (or
    LIBAI_VIT_OPENBLAS_PTH=0), and only when the CPU has its instructions (a venv copied to an older
    CPU must not crash). It records what it set in LIBAI_VIT_OPENBLAS_PTH, so the value is told from
    a user's."""
    need = " ".join(CANDIDATES[core])
    return (
        "import os; 'OPENBLAS_CORETYPE' in os.environ or os.environ.get('LIBAI_VIT_OPENBLAS_PTH') "
        "== '0' or not os.path.exists('/proc/cpuinfo') or set(%r.split()) <= set(next((l for l in "
        "open('/proc/cpuinfo') if l.startswith('flags')), ':').split(':')[1].split()) and "
        "os.environ.update(OPENBLAS_CORETYPE=%r, "
        "LIBAI_VIT_OPENBLAS_PTH=%r)\n" % (need, core, core)
    )


def users_coretype():
    """OPENBLAS_CORETYPE when the user set it (not this project's .pth)."""
    value = os.environ.get("OPENBLAS_CORETYPE")
    return None if value is None or value == os.environ.get("LIBAI_VIT_OPENBLAS_PTH") else value


def install_pth(core, site=None):
    """Writes (or empties, when there is no choice) the .pth file in `site` (default: this python's
    site-packages)."""
    import sysconfig

    site = site or sysconfig.get_paths()["purelib"]
    path = os.path.join(site, PTH_NAME)
    line = pth_line(core) if core else ""
    try:
        with open(path) as f:
            if f.read() == line:
                return path
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(line)
    return path


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--measure", action="store_true", help="measure again (and cache the new choice)"
    )
    p.add_argument(
        "--install-pth",
        action="store_true",
        help="write %s into this python's site-packages: a plain python then applies it" % PTH_NAME,
    )
    p.add_argument(
        "--export",
        action="store_true",
        help="print a shell `export OPENBLAS_CORETYPE=...` (nothing when already set) and log the "
        "choice",
    )
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        return _probe()
    user = users_coretype()
    if args.export and user:
        print("[openblas] core type %s (your OPENBLAS_CORETYPE)" % user, file=sys.stderr)
        return
    core = choose(remeasure=args.measure)
    if args.export:
        if core:
            print(
                "[openblas] core type %s (the fastest measured on this machine; OPENBLAS_CORETYPE "
                "overrides)" % core,
                file=sys.stderr,
            )
            print("export OPENBLAS_CORETYPE=%s" % core)
        return
    if args.install_pth:
        print("[openblas] %s -> %s" % (install_pth(core), core or "(none)"), file=sys.stderr)
    print(core)


if __name__ == "__main__":
    main()
