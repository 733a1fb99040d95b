"""The build and the layouts: generated code current, C structs equal their dtypes,
every C-returning cdef states its exception contract, performance hints fail the build."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from engine import core
from protocol.records import COMMAND, EVENT

ROOT = Path(__file__).resolve().parents[1]


def test_generated_cdefs_when_checked_then_current():
    r = subprocess.run([sys.executable, "-m", "protocol.gen", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_struct_sizes_when_compiled_then_equal_dtypes():
    assert core.SIZEOF_COMMAND == COMMAND.size == COMMAND.dtype.itemsize == 96
    assert core.SIZEOF_EVENT == EVENT.size == EVENT.dtype.itemsize == 128
    assert core.SIZEOF_ORDER == core.ORDER_DTYPE.itemsize == 128
    assert core.SIZEOF_LEVEL == core.LEVEL_DTYPE.itemsize == 64
    assert core.SIZEOF_ID_ENTRY == core.ID_ENTRY_DTYPE.itemsize == 8
    assert core.SIZEOF_SYMBOL == core.SYMBOL_DTYPE.itemsize == 64
    assert core.SIZEOF_LADDER == core.LADDER_DTYPE.itemsize == 16
    assert core.SIZEOF_LADDER_ENTRY == core.LADDER_ENTRY_DTYPE.itemsize == 16


def test_per_symbol_arrays_when_allocated_then_records_start_cache_lines():
    # a 64-byte record 16 bytes past a line (where malloc puts numpy's big arrays) spans two lines
    e = core.Engine(max_orders=1 << 16, max_symbols=1000)
    e.add_symbol(1)
    e.add_account(1)
    e.new_order(1, 1, 1, 1, 100, price=10)          # the ladder pool's first segment
    for arr in (e.levels_arr, e.ladders_arr, e.sym_arr, *e.ladder_segments):
        assert arr.ctypes.data % 64 == 0


def test_order_dtype_when_compared_then_offsets_match_struct_comments():
    # core.pxd writes each field's offset as "@N"; the dtype must agree.
    text = (ROOT / "engine" / "core.pxd").read_text()
    for struct, dtype in (("Order", core.ORDER_DTYPE), ("Level", core.LEVEL_DTYPE), ("Symbol", core.SYMBOL_DTYPE),
                          ("Ladder", core.LADDER_DTYPE), ("LadderEntry", core.LADDER_ENTRY_DTYPE)):
        block = text.split(f"cdef packed struct {struct}:")[1].split("\n\n")[0]
        for name, off in re.findall(r"^\s+\w+ (\w+)\s+# @(\d+)", block, re.M):
            assert dtype.fields[name][1] == int(off), f"{struct}.{name}"


def _c_returning_cdefs(text):
    # cdef [inline] <type> name(args) [qualifiers]: at the end of a header line
    pattern = re.compile(r"^\s*cdef\s+(?:inline\s+)?([\w\*]+(?:\s*\*)?)\s+(\w+)\(([^)]*)\)([^:\n]*):?\s*$", re.M)
    for m in pattern.finditer(text):
        ctype, name, _, tail = m.groups()
        if ctype in ("class", "object", "dict", "list", "tuple", "str", "bytes", "enum", "struct", "packed"):
            continue
        yield name, tail


def test_cdef_functions_when_linted_then_declare_exception_contract():
    offenders = []
    for path in [*ROOT.glob("engine/**/*.pyx"), *ROOT.glob("engine/**/*.pxd"), *ROOT.glob("protocol/*.pyx")]:
        for name, tail in _c_returning_cdefs(path.read_text()):
            if "noexcept" not in tail and "except" not in tail:
                offenders.append(f"{path.name}:{name}")
    assert not offenders, f"cdef functions without an exception contract: {offenders}"


def test_performance_hint_when_building_then_build_fails(tmp_path):
    # a cdef void without a contract is implicitly `except *`: Cython only hints.
    (tmp_path / "bad.pyx").write_text("cdef void f(int x) nogil:\n    pass\n\ncdef void g() nogil:\n    f(1)\n")
    setup = (ROOT / "setup.py").read_text().replace(
        '"engine.core": (["engine/core.pyx"], True),', '"bad": (["bad.pyx"], True),')
    setup = re.sub(r'\n    "engine\.[\w.]+": \(\[[^\]]*\], \w+\),', "", setup)
    (tmp_path / "setup.py").write_text(setup)
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "performance hints are errors" in r.stderr
