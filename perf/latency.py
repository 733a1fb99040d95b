"""Latency summaries (HdrHistogram percentiles up to p99.99 and max) and latency-by-percentile plots."""
from __future__ import annotations

import sys

import numpy as np

PERCENTILES = (50, 90, 99, 99.9, 99.99)
PLOT_PERCENTILES = (50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999)


def histogram(lat_ns):
    """An HdrHistogram (3 significant digits, 1 ns .. 100 s) of the samples (ns)."""
    from hdrh.histogram import HdrHistogram
    h = HdrHistogram(1, 100_000_000_000, 3)
    for v in np.clip(np.asarray(lat_ns, dtype=np.int64), 1, None).tolist():
        h.record_value(v)
    return h


def summary_us(lat_ns):
    """{"50": us, ..., "99.99": us, "max": us, "min": us, "count": n} from the HdrHistogram of the samples."""
    h = histogram(lat_ns)
    out = {str(p): h.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    out["max"] = h.get_max_value() / 1000
    out["min"] = h.get_min_value() / 1000
    out["count"] = h.get_total_count()
    return out


def plot(series, title, path, unit="us"):
    """One line per named sample array (ns): value at each percentile, log scale.
    Silently skipped (with a note) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; pip install '.[perf]')", file=sys.stderr)
        return None
    qs = np.array(PLOT_PERCENTILES)
    x = -np.log10(1 - qs / 100)
    scale = {"ns": 1, "us": 1e3, "ms": 1e6}[unit]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, lat in series.items():
        if len(lat):
            h = histogram(lat)
            ax.plot(x, [h.get_value_at_percentile(q) / scale for q in qs], marker="o", label=name)
    ax.set_xticks(x, [f"p{q:g}" for q in qs], rotation=45)
    ax.set_ylabel(unit)
    ax.set_yscale("log")
    ax.set_title(f"Latency by percentile: {title}")
    ax.grid(True, which="both", alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
