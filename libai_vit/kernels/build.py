"""Build the kernel libraries against the installed oneflow wheel (tools/setup.sh runs this once
per machine; a second run with the same sources and oneflow returns at once).

    python libai_vit/kernels/build.py [--out DIR] [--force]

One library per family in FAMILIES, in DIR (default: .kernels/ at the repository's root,
git-ignored): csrc/<family>.cpp (the OneFlow glue) + dispatch.cpp + math.cpp compiled once per
instruction set. What building against the wheel takes: its include folder also holds an old
glibc's headers, so only its library folders go on the include path (through a folder of links);
its glog lacks log_severity.h (csrc/glog/ has one); -DWITH_CUDA headers include cuda_fp16.h,
taken from the nvidia-cuda-runtime-cu11 wheel (downloaded by pip into DIR/cache); glog is not
exported by liboneflow, so the wheel's static libglog.a is linked in. Any failure prints one line
and exits 1: libai_vit then runs on OneFlow's own kernels (LIBAI_VIT_KERNELS_BUILD_LOG=1 also
prints the compiler's output).
"""

import argparse
import glob
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(ROOT, ".kernels")
FAMILIES = ("gelu", "softmax", "layer_norm")
# instruction set -> compiler flags; dispatch.cpp picks the widest the CPU runs
ISAS = {"avx512": ["-mavx512f", "-mavx2", "-mfma"], "avx2": ["-mavx2", "-mfma"], "generic": []}
# the wheel's include folders that hold libraries (its root also holds libc headers)
WHEEL_INCLUDES = ("oneflow", "absl", "google", "eigen3", "cutlass", "flatbuffers", "llvm", "llvm-c")
CUDA_HEADERS = "nvidia-cuda-runtime-cu11==11.7.99"
FLAGS = ["-std=c++17", "-O3", "-fPIC", "-Wall", "-Wno-maybe-uninitialized"]
# as oneflow.sysconfig.get_compile_flags() says, for the wheel's ABI
ONEFLOW_FLAGS = ["-DWITH_CUDA", "-D_GLIBCXX_USE_CXX11_ABI=0", "-DHALF_ENABLE_CPP11_USER_LITERALS=0"]
STAMP = ".libai_vit_stamp"


class BuildError(Exception):
    pass


def source_digest():
    """What the libraries depend on: the sources, this file, the installed oneflow's version."""
    h = hashlib.sha256(importlib.metadata.version("oneflow").encode())
    files = sorted(glob.glob(os.path.join(CSRC, "**", "*"), recursive=True))
    for path in files + [os.path.abspath(__file__)]:
        if os.path.isfile(path):
            h.update(os.path.relpath(path, HERE).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if "error" in ln]
        if os.environ.get("LIBAI_VIT_KERNELS_BUILD_LOG"):
            print(proc.stderr[-3000:], file=sys.stderr)
        raise BuildError(f"{os.path.basename(cmd[0])} failed: {(lines or ['?'])[0].strip()}")


def compiler():
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx or not shutil.which(cxx):
        raise BuildError("no C++ compiler (g++ or $CXX) found")
    return cxx


def cuda_headers(cache):
    """The include folder of the nvidia-cuda-runtime wheel, downloaded once into `cache`."""
    include = os.path.join(cache, "cuda_runtime_include")
    if os.path.isfile(os.path.join(include, "cuda_fp16.h")):
        return include
    os.makedirs(cache, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
         "--no-deps", "--only-binary=:all:", "-d", cache, CUDA_HEADERS],
        capture_output=True, text=True,
    )  # fmt: skip
    wheels = glob.glob(os.path.join(cache, "nvidia_cuda_runtime_cu11-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise BuildError(f"pip could not download {CUDA_HEADERS} (for cuda_fp16.h)")
    tmp = tempfile.mkdtemp(dir=cache)
    with zipfile.ZipFile(wheels[0]) as z:
        for name in z.namelist():
            if "/include/" in name:
                z.extract(name, tmp)
    os.replace(os.path.join(tmp, "nvidia", "cuda_runtime", "include"), include)
    shutil.rmtree(tmp)
    return include


def build(out, force=False):
    digest = source_digest()
    stamp = os.path.join(out, STAMP)
    if not force and os.path.isfile(stamp) and open(stamp).read().strip() == digest:
        if all(os.path.isfile(os.path.join(out, f"{f}.so")) for f in FAMILIES):
            return False
    cxx = compiler()
    # the wheel to build against, found without importing it (that takes seconds)
    site = os.path.dirname(os.path.dirname(importlib.util.find_spec("oneflow").origin))
    wheel_include = os.path.join(site, "oneflow", "include")
    libs = os.path.join(site, "oneflow.libs")
    libglog = os.path.join(wheel_include, "glog-build", "libglog.a")
    shared = [
        glob.glob(os.path.join(libs, pattern))
        for pattern in ("liboneflow-*.so", "libof_protoobj-*.so")
    ]
    if not all(shared) or not os.path.isfile(libglog):
        raise BuildError(f"the oneflow wheel at {site} lacks liboneflow, libof_protoobj or libglog")
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="build-", dir=out)
    try:
        links = os.path.join(work, "include")
        os.makedirs(links)
        for name in WHEEL_INCLUDES + ("half.hpp",):
            os.symlink(os.path.join(wheel_include, name), os.path.join(links, name))
        includes = [
            f"-I{CSRC}",  # first: its glog/log_severity.h
            f"-I{links}",
            f"-I{os.path.join(wheel_include, 'glog-build')}",
            f"-I{cuda_headers(os.path.join(out, 'cache'))}",
        ]
        jobs = []  # (source, object, flags)
        for isa, isa_flags in ISAS.items():
            jobs.append(("math.cpp", f"math_{isa}.o", [f"-DLVK_ISA={isa}", *isa_flags]))
        jobs.append(("dispatch.cpp", "dispatch.o", []))
        for family in FAMILIES:
            jobs.append((f"{family}.cpp", f"{family}.o", [*ONEFLOW_FLAGS, *includes]))

        def compile_one(job):
            source, obj, extra = job
            run([cxx, *FLAGS, *extra, "-c", os.path.join(CSRC, source), "-o", f"{work}/{obj}"])

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(compile_one, jobs))
        common = [os.path.join(work, f"math_{isa}.o") for isa in ISAS]
        common.append(os.path.join(work, "dispatch.o"))
        for family in FAMILIES:
            target = os.path.join(work, f"{family}.so")
            run([cxx, "-shared", "-o", target, os.path.join(work, f"{family}.o"), *common,
                 *(p[0] for p in shared), libglog, f"-Wl,-rpath,{libs}",
                 "-Wl,-Bsymbolic"])  # fmt: skip
        for family in FAMILIES:
            os.replace(os.path.join(work, f"{family}.so"), os.path.join(out, f"{family}.so"))
        with open(stamp, "w") as f:
            f.write(digest + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the libraries go")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args()
    try:
        built = build(args.out, args.force)
    except BuildError as e:
        print(f"[kernels] not built ({e}): libai_vit uses OneFlow's own kernels", file=sys.stderr)
        sys.exit(1)
    if built:
        print(f"[kernels] built {', '.join(FAMILIES)} into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
