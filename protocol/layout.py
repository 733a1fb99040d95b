"""Fixed-layout binary records: the one description every codec is derived from.

A Layout is an ordered list of (name, type) with explicit sizes; offsets are the
running sum, so there is no implicit padding. Every field is naturally aligned
(each offset is a multiple of the field's size; bN byte arrays align to 1) and the total is a multiple of 8,
so the packed C struct and the naturally aligned one coincide. Little-endian.

From a Layout come: a numpy dtype (``layout.dtype``), a Cython ``packed struct``
(``layout.cython_struct()``, written into generated ``.pxd`` files by
``python -m protocol.gen``) and a byte table for SPEC.md (``layout.table()``).
"""
from __future__ import annotations

import numpy as np

# type name -> (numpy type, C type, size in bytes)
TYPES = {
    "u8": ("<u1", "uint8_t", 1),
    "u16": ("<u2", "uint16_t", 2),
    "u32": ("<u4", "uint32_t", 4),
    "u64": ("<u8", "uint64_t", 8),
    "i32": ("<i4", "int32_t", 4),
    "i64": ("<i8", "int64_t", 8),
}


def _type(ftype: str):
    """(numpy type, C declaration format, size) of a field type: u8..u64, i32, i64, or bN (N raw bytes)."""
    if ftype in TYPES:
        np_t, c_t, size = TYPES[ftype]
        return np_t, c_t + " {}", size
    if ftype.startswith("b") and ftype[1:].isdigit():
        n = int(ftype[1:])
        return f"V{n}", "uint8_t {}[%d]" % n, n
    raise ValueError(f"unknown field type {ftype}")


class Layout:
    def __init__(self, name: str, fields: list[tuple[str, str, str]], doc: str = ""):
        """fields: (name, type, one-line meaning). Names starting with '_' are padding."""
        self.name = name
        self.doc = doc
        self.fields = fields
        self.offsets: dict[str, int] = {}
        off = 0
        for fname, ftype, _ in fields:
            size = _type(ftype)[2]
            align = size if ftype in TYPES else 1
            if off % align:
                raise ValueError(f"{name}.{fname}: offset {off} not aligned to {size}")
            self.offsets[fname] = off
            off += size
        if off % 8:
            raise ValueError(f"{name}: size {off} is not a multiple of 8")
        self.size = off
        self.dtype = np.dtype([(f, _type(t)[0]) for f, t, _ in fields])
        assert self.dtype.itemsize == self.size

    def cython_struct(self, struct_name: str | None = None) -> str:
        lines = [f"cdef packed struct {struct_name or self.name}:"]
        for fname, ftype, meaning in self.fields:
            off = self.offsets[fname]
            _, decl, size = _type(ftype)
            lines.append(f"    {decl.format(fname)}  # @{off} {size}B {meaning}".rstrip())
        return "\n".join(lines)

    def table(self) -> str:
        rows = ["| offset | size | type | field | meaning |", "|---:|---:|---|---|---|"]
        for fname, ftype, meaning in self.fields:
            rows.append(f"| {self.offsets[fname]} | {_type(ftype)[2]} | {ftype} | {fname} | {meaning} |")
        return "\n".join(rows)
