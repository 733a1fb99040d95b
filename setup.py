"""Build of trading-engine's Cython extensions.

- Release flags: -O3, no -march=native (wheels move between machines);
  TE_NATIVE=1 opts in to -march=native for a build on the host it runs on.
- TE_DEBUG=1 turns the unsafe directives back on (bounds, wraparound,
  initialization checks) and builds with -O0 -g, for tests under a debugger.
- TE_SANITIZE=1 builds with AddressSanitizer and UBSan (run with
  LD_PRELOAD=$(gcc -print-file-name=libasan.so)).
- A Cython "performance hint" (for instance a cdef function whose exception
  contract forces a check after every call) fails the build: such lines look
  white in `cython -a` and still cost 10-20x per call.
"""
import os
import sys

import numpy as np
from setuptools import Extension, setup

DEBUG = os.environ.get("TE_DEBUG") == "1"
SANITIZE = os.environ.get("TE_SANITIZE") == "1"
NATIVE = os.environ.get("TE_NATIVE") == "1"

# The unsafe directives, scoped to the hot modules. Each module states in a
# comment the invariant that makes them safe.
HOT_DIRECTIVES = {
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    # Python's floor division and modulo (a negative numerator rounds down): the risk and matching
    # arithmetic is written and tested for it (ceilings as -((-a) // b)); C division would truncate.
    "cdivision": False,
    "nonecheck": False,
}
BASE_DIRECTIVES = {"language_level": 3, "embedsignature": True}

# module name -> (sources, hot?)
MODULES = {
    "engine.risk": (["engine/risk.pyx"], True),
    "engine.core": (["engine/core.pyx"], True),
    "engine.gateway": (["engine/gateway.pyx"], True),
    "engine.marketdata": (["engine/marketdata.pyx"], True),
    "engine.algos": (["engine/algos.pyx"], True),
    "engine.routing.decide": (["engine/routing/decide.pyx"], True),
    "engine.surveil_core": (["engine/surveil_core.pyx"], True),
}
# Per-module compile flags. engine.algos: no fused multiply-add contraction, so its floating-point
# schedule (Almgren-Chriss, + - * / sqrt only) is bit-identical on every IEEE-754 machine (ALGOS.md).
MODULE_CFLAGS = {"engine.algos": ["-ffp-contract=off"]}
# engine.surveil_core keeps its maps and windows in C++ standard containers (unordered_map, map, deque).
MODULE_LANGUAGE = {"engine.surveil_core": "c++"}

HINTS: list[str] = []


def _fail_on_performance_hints():
    """Record every performance hint Cython emits, so the build can fail on them."""
    from Cython.Compiler import Errors, ExprNodes, PyrexTypes, Symtab

    original = Errors.performance_hint

    def hint(position, message, env):
        warning = original(position, message, env)
        if warning is not None:
            HINTS.append(f"{position[0].get_description()}:{position[1]}: {message}")
        return warning

    for module in (Errors, ExprNodes, PyrexTypes, Symtab):
        module.performance_hint = hint


def extensions():
    from Cython.Build import cythonize

    cflags = ["-O0", "-g"] if DEBUG else ["-O3"]
    ldflags = []
    if NATIVE:
        cflags.append("-march=native")
    if SANITIZE:
        cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
        ldflags += ["-fsanitize=address,undefined"]
    exts = []
    for name, (sources, hot) in MODULES.items():
        directives = dict(BASE_DIRECTIVES)
        if hot:
            directives.update(HOT_DIRECTIVES)
        ext = Extension(
            name,
            sources,
            include_dirs=[np.get_include(), "."],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("TE_DEBUG", int(DEBUG))],
            extra_compile_args=cflags + MODULE_CFLAGS.get(name, []),
            extra_link_args=ldflags,
            language=MODULE_LANGUAGE.get(name, "c"),
        )
        exts.append((ext, directives))
    _fail_on_performance_hints()
    # one cythonize per module: cythonize applies only its compiler_directives argument (an Extension's
    # cython_directives attribute is read by nothing, so the hot modules were built with bounds checks)
    built = [b for ext, directives in exts
             for b in cythonize([ext], include_path=["."], compiler_directives=directives,
                                annotate=os.environ.get("TE_ANNOTATE") == "1", nthreads=0)]
    if HINTS:
        sys.stderr.write("Cython performance hints are errors in this project:\n  " + "\n  ".join(HINTS) + "\n")
        raise SystemExit(1)
    return built


setup(ext_modules=extensions())
