"""Pictures of a Report (needs the ``plot`` extra: ``pip install "fxcost[plot]"``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from ._errors import FxcostError

if TYPE_CHECKING:
    from ._report import Report


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FxcostError('plotting needs matplotlib: pip install "fxcost[plot]"') from None
    return plt


def plot_liveness(report: "Report", path: str, title: str | None = None) -> str:
    """Save a PNG of live activation memory (KiB) along the schedule with the peak marked."""
    plt = _pyplot()
    live = [n.live_bytes / 1024 for n in report.nodes]
    figure, axes = plt.subplots(figsize=(10, 4))
    axes.plot(range(len(live)), live, color="tab:blue", linewidth=1)
    peak = max(range(len(live)), key=live.__getitem__) if live else 0
    axes.axvline(peak, color="tab:red", linestyle="--", linewidth=1)
    axes.annotate(f"peak {live[peak]:.1f} KiB\nat {report.nodes[peak].name}", (peak, live[peak]),
                  textcoords="offset points", xytext=(8, -24), color="tab:red")
    axes.set_xlabel("node (schedule order)")
    axes.set_ylabel("live activations (KiB)")
    axes.set_title(title or f"{report.model}: live activation memory")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_bars(values: Mapping[str, float], path: str, ylabel: str, title: str = "", labels: list[str] | None = None) -> str:
    """Save a bar chart PNG of ``values`` (e.g. per-block peak memory in kB)."""
    plt = _pyplot()
    names = list(values)
    figure, axes = plt.subplots(figsize=(max(6, 0.5 * len(names)), 4))
    axes.bar(range(len(names)), list(values.values()), color="tab:blue")
    return _save_bar_chart(plt, figure, axes, names, path, ylabel, title, labels)


def plot_bar_series(series: Mapping[str, Mapping[str, float]], path: str, ylabel: str, title: str = "",
                    labels: list[str] | None = None, limit: tuple[float, str] | None = None) -> str:
    """Save a PNG of several bar series side by side over the same keys (e.g. per-block peak
    memory before and after a rewrite); ``limit=(value, label)`` draws a horizontal line."""
    plt = _pyplot()
    names = list(next(iter(series.values()))) if series else []
    width = 0.8 / max(1, len(series))
    figure, axes = plt.subplots(figsize=(max(6, 0.6 * len(names)), 4))
    for number, (label, values) in enumerate(series.items()):
        offsets = [i - 0.4 + width * (number + 0.5) for i in range(len(names))]
        axes.bar(offsets, [values.get(n, 0) for n in names], width, label=label)
    if limit is not None:
        axes.axhline(limit[0], color="tab:red", linestyle="--", linewidth=1, label=limit[1])
    axes.legend()
    return _save_bar_chart(plt, figure, axes, names, path, ylabel, title, labels)


def _save_bar_chart(plt, figure, axes, names: list[str], path: str, ylabel: str, title: str,
                    labels: list[str] | None) -> str:
    axes.set_xticks(range(len(names)))
    axes.set_xticklabels(labels or names, rotation=90 if len(names) > 8 and not labels else 0)
    axes.set_ylabel(ylabel)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_training_memory(report: "Report", path: str, title: str | None = None) -> str:
    """Save a PNG of live memory (MiB) along one training step, stacked by category (weights,
    gradients, optimizer state, saved activations, temporaries, inputs), the phases shaded
    and the peak marked. The report needs a training step (``training=fxcost.Training(...)``)."""
    from ._records import CATEGORIES

    step = report.training
    if step is None:
        raise FxcostError("this report has no training step: analyse with training=fxcost.Training(...)")
    plt = _pyplot()
    points = step.timeline
    x = [p.op - points[0].op for p in points] if points else []
    series = [[p.bytes[name] / 2**20 for p in points] for name in CATEGORIES]
    figure, axes = plt.subplots(figsize=(10, 4.5))
    axes.stackplot(x, series, labels=[name.replace("_", " ") for name in CATEGORIES], alpha=0.85)
    phases = [(p.phase, p.op - points[0].op) for i, p in enumerate(points) if i == 0 or points[i - 1].phase != p.phase]
    for number, (phase, start) in enumerate(phases):
        end = phases[number + 1][1] if number + 1 < len(phases) else (x[-1] if x else 0)
        if number % 2:
            axes.axvspan(start, end, color="grey", alpha=0.08)
        axes.text((start + end) / 2, 1.01, phase, transform=axes.get_xaxis_transform(), ha="center", fontsize=8)
    totals = [sum(p.bytes.values()) for p in points]
    if totals:
        peak = totals.index(step.peak_bytes) if step.peak_bytes in totals else max(range(len(totals)),
                                                                                    key=totals.__getitem__)
        axes.axvline(x[peak], color="tab:red", linestyle="--", linewidth=1)
        axes.annotate(f"peak {step.peak_bytes / 2**20:.1f} MiB ({step.peak_phase})", (x[peak], totals[peak] / 2**20),
                      textcoords="offset points", xytext=(8, -14), color="tab:red")
    axes.set_xlabel("aten ops run in the step")
    axes.set_ylabel("live memory (MiB)")
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title(title or f"{report.model}: one training step ({step.optimizer})", pad=14)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
