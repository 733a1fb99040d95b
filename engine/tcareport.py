"""`trading-engine report tca JOURNAL_PATH --config FILE --html FILE`: the TCA figures (engine/reports.py
tca_rows, the same rows as the CSV) in one self-contained HTML file with PNG plots embedded (base64):
markout curves per account, strategy and algorithm; the distribution of implementation shortfall over the
units (orders, an algorithm's parent orders); fill ratios per group.

matplotlib draws the plots (the `reports` extra): imported here only, when an HTML report is asked for, never
at engine start; its Agg backend through the object API (Figure + FigureCanvasAgg, no pyplot state, no
display). engine/riskreport.py writes inline SVG by hand for its few hundred shapes; these are many series
and a histogram with axes and legends, which matplotlib does well and PNG keeps small.
"""
from __future__ import annotations

import base64
import html
import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.reports import HORIZONS_S


def label(row_or_unit: dict, names: dict[int, str]) -> str:
    """A group's name: account, strategy (when set) and the algorithm ("direct": orders placed directly)."""
    s = f"{names.get(row_or_unit['account'], row_or_unit['account'])}"
    if row_or_unit["strategy"]:
        s += f" s{row_or_unit['strategy']}"
    return f"{s} {row_or_unit['algo'] or 'direct'}"


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf, metadata={"Software": None})
    return buf.getvalue()


def markouts_png(rows: list[dict], names) -> bytes:
    fig = Figure(figsize=(7, 3.6), dpi=100)
    ax = fig.add_subplot()
    for r in rows:
        pts = [(h, r[f"markout_{h}s_bps"]) for h in HORIZONS_S if r[f"markout_{h}s_bps"] is not None]
        if pts:
            ax.plot([h for h, _ in pts], [v for _, v in pts], marker="o", label=label(r, names))
    ax.axhline(0, color="#888", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xticks(HORIZONS_S, [f"{h} s" for h in HORIZONS_S])
    ax.set_xlabel("after the fill")
    ax.set_ylabel("markout (bps, + = moved the order's way)")
    ax.set_title("Markouts per account, strategy and algorithm")
    if ax.has_data():
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return png(fig)


def shortfall_png(units: list[dict], names) -> bytes:
    fig = Figure(figsize=(7, 3.6), dpi=100)
    ax = fig.add_subplot()
    by: dict[str, list[float]] = {}
    for u in units:
        if u["shortfall_bps"] is not None:
            by.setdefault(label(u, names), []).append(u["shortfall_bps"])
    if by:
        ax.hist(list(by.values()), bins=20, stacked=True, label=list(by))
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("implementation shortfall vs arrival mid (bps, + = cost)")
    ax.set_ylabel("orders / parents")
    ax.set_title(f"Shortfall distribution ({sum(map(len, by.values()))} units with an arrival mid)")
    fig.tight_layout()
    return png(fig)


def fill_ratios_png(rows: list[dict], names) -> bytes:
    fig = Figure(figsize=(7, 3.6), dpi=100)
    ax = fig.add_subplot()
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["fill_ratio_qty"] or 0 for r in rows], width=0.4, label="quantity filled / ordered")
    ax.bar([i + 0.2 for i in x], [r["fill_ratio_orders"] for r in rows], width=0.4, label="units with a fill / units")
    ax.set_xticks(list(x), [label(r, names) for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_title("Fill ratios")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return png(fig)


def cell(v) -> str:
    """A figure as the CSV writes it (reports.write): so the table and the CSV show the same text."""
    return "" if v is None else html.escape(str(v))


def render(rows: list[dict], units: list[dict], names: dict[int, str], title: str) -> str:
    imgs = [("Markouts", markouts_png(rows, names)), ("Implementation shortfall", shortfall_png(units, names)),
            ("Fill ratios", fill_ratios_png(rows, names))]
    head = list(rows[0]) if rows else []
    out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:12px}"
           "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>",
           "<p>Per account, strategy and algorithm (direct: orders placed directly; an algorithm's unit is its "
           "parent order, measured from its arrival over its children's fills). Basis points, weighted by "
           "executed quantity (engine/SURVEILLANCE.md \"Reports\").</p>",
           "<table id='tca'><thead><tr>" + "".join(f"<th>{html.escape(k)}</th>" for k in head) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{cell(r[k])}</td>" for k in head) + "</tr>")
    out.append("</tbody></table>")
    for name, data in imgs:
        out.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' "
                   f"src='data:image/png;base64,{base64.b64encode(data).decode()}'>")
    out.append("</body></html>\n")
    return "\n".join(out)
