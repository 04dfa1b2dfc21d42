"""metrics.png (scores, perplexity, judge, length per system), training_<run>.png and
sensitivity_<key>.png (every metric against one hyperparameter across runs)."""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Any

from medsft.evaluation.scoring import has_references
from medsft.evaluation.training import Scalars

log = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(
    ax: Any, x: Any, entries: list[dict[str, Any] | None], width: float, **style: Any
) -> None:
    """Bars of `score`, with the 95% interval drawn on every bar that has one."""
    import numpy as np

    scores = np.array([e["score"] if e else np.nan for e in entries], dtype=float)
    ax.bar(x, np.nan_to_num(scores), width, **style)
    ci = [i for i, e in enumerate(entries) if e and "low" in e]
    if ci:
        low = np.array([entries[i]["low"] for i in ci])
        high = np.array([entries[i]["high"] for i in ci])
        # Distinct-n-like intervals can lie beside the estimate; matplotlib refuses negative bars.
        err = np.maximum([scores[ci] - low, high - scores[ci]], 0.0)
        ax.errorbar(
            np.asarray(x)[ci],
            scores[ci],
            yerr=err,
            fmt="none",
            ecolor="black",
            capsize=3,
            linewidth=1,
        )


def _grouped(
    ax: Any, report: dict[str, Any], names: list[str], title: str, legend: bool = True
) -> None:
    import numpy as np

    systems = [s["name"] for s in report["systems"]]
    x = np.arange(len(names))
    width = 0.8 / len(systems)
    for k, system in enumerate(systems):
        entries = [report["metrics"][system].get(n) for n in names]
        _bars(ax, x + (k - (len(systems) - 1) / 2) * width, entries, width, label=system)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(fontsize="small")


def _metric_groups(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The text metrics of the report: (those against the references, those of diversity), as
    medsft.metrics.METRICS says."""
    metrics = report["metrics"][report["systems"][0]["name"]]
    overlap = [n for n, entry in metrics.items() if has_references(entry)]
    return overlap, [n for n in metrics if n not in overlap]


def _panels(report: dict[str, Any]) -> list[tuple[str, float]]:
    """(panel, width) of each panel metrics.png shows."""
    systems = [s["name"] for s in report["systems"]]
    overlap, diversity = _metric_groups(report)
    panels = [("overlap", max(len(overlap), 3))]
    if diversity:
        panels.append(("diversity", max(len(diversity), 1.5)))
    n_ppl = sum("test" in report["perplexity"].get(s, {}) for s in systems)
    if n_ppl:
        panels.append(("ppl", max(n_ppl, 1.5)))
    if report["judge"].get("results"):
        panels.append(("judge", max(len(report["judge"]["results"]), 1.5)))
    panels.append(("length", max(len(systems), 1.5)))
    return panels


def plot_metrics(report: dict[str, Any], path: Path) -> None:
    """metrics.png: see `metrics_figure`."""
    plt = _pyplot()
    fig = metrics_figure(report)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def metrics_figure(report: dict[str, Any]) -> Any:
    """One panel per kind of score, every bar with its 95% bootstrap interval where it has one."""
    plt = _pyplot()
    panels = _panels(report)
    widths = [w for _, w in panels]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(2 + 0.9 * sum(widths), 4.8),
        squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )
    overlap, diversity = _metric_groups(report)
    for ax, (panel, _) in zip(axes[0], panels, strict=True):
        if panel == "overlap":
            _grouped(ax, report, overlap, "Overlap with the references")
            ax.set_ylabel("score (0-100), 95% bootstrap CI")
        elif panel == "diversity":
            _grouped(ax, report, diversity, "Diversity (no CI)", legend=False)
        elif panel == "ppl":
            _ppl_panel(ax, report)
        elif panel == "judge":
            _judge_panel(ax, report)
        else:
            _length_panel(ax, report)
    fig.tight_layout()
    return fig


def _ppl_panel(ax: Any, report: dict[str, Any]) -> None:
    import numpy as np

    # Points, not bars: on a log axis a bar's height depends on where the axis happens to start.
    systems = [
        s["name"] for s in report["systems"] if "test" in report["perplexity"].get(s["name"], {})
    ]
    entries = [report["perplexity"][s]["test"] for s in systems]
    scores = np.array([e["score"] for e in entries])
    err = None
    if all("low" in e for e in entries):
        err = np.maximum(
            [scores - [e["low"] for e in entries], [e["high"] for e in entries] - scores], 0
        )
    ax.errorbar(range(len(systems)), scores, yerr=err, fmt="o", color="tab:gray", capsize=3)
    ax.set_xticks(range(len(systems)), systems, rotation=30)
    ax.set_xlim(-0.6, len(systems) - 0.4)
    ax.set_yscale("log")
    ax.set_title("Reference PPL (lower = better)", fontsize=10)


def _judge_panel(ax: Any, report: dict[str, Any]) -> None:
    results = report["judge"]["results"]
    entries = []
    for r in results.values():
        rate, interval = r["adjusted_win_rate"], r["interval"]
        entry = None if rate is None else {"score": rate}
        if entry and interval:
            entry.update(low=interval["low"], high=interval["high"])
        entries.append(entry)
    _bars(ax, list(results), entries, 0.8, color="tab:green")
    for i, entry in enumerate(entries):
        # Written out: a rate of 0 has no visible bar, and a system with no judged pair has none.
        text = "n/a" if entry is None else f"{entry['score']:.2f}"
        ax.text(
            i, 0.02 if entry is None else entry["score"] + 0.02, text, ha="center", fontsize="small"
        )
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
    ax.set_ylim(0, 1)
    ax.set_title(f"Adj. win rate vs {report['judge']['baseline']}", fontsize=10)
    ax.tick_params(axis="x", rotation=30)


def _length_panel(ax: Any, report: dict[str, Any]) -> None:
    lengths = report["length"]
    systems = [s for s in lengths if s != "reference"]
    ax.bar(systems, [lengths[s]["mean_chars"] for s in systems], color="tab:purple")
    ax.axhline(
        lengths["reference"]["mean_chars"],
        color="black",
        linewidth=0.8,
        linestyle="--",
        label="references",
    )
    ax.set_title("Mean answer length (chars)", fontsize=10)
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", rotation=30)


def plot_training(name: str, scalars: Scalars, path: Path) -> bool:
    """Loss and perplexity curves of one training run; False (no file) when none was logged."""
    losses = [t for t in scalars if t.endswith("loss")]
    ppl = [t for t in scalars if t.endswith("ppl")]
    panels = [p for p in (losses, ppl) if p]
    if not panels:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, tags in zip(axes[0], panels, strict=True):
        for tag in tags:
            steps, values = zip(*scalars[tag], strict=True)
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=tag)
        ax.set_xlabel("step")
        ax.set_ylabel("perplexity" if tags is ppl else "loss (nats/token)")
        if tags is ppl:
            ax.set_yscale("log")
        ax.legend()
    fig.suptitle(f"Training curves: {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_mcq(mcq: dict[str, Any], path: Path) -> bool:
    """mcq.png: accuracy of every (system, method), overall and per subject, with 95% intervals."""
    results = mcq["results"]
    if not results:
        return False
    import numpy as np

    plt = _pyplot()
    groups = ["all", *mcq["subjects"]]
    fig, ax = plt.subplots(figsize=(2.5 + 0.45 * len(groups) * max(len(results), 2), 4.5))
    x = np.arange(len(groups))
    width = 0.8 / len(results)
    for k, (name, r) in enumerate(results.items()):
        entries = [r["accuracy"], *(r["subjects"][s] for s in mcq["subjects"])]
        _bars(ax, x + (k - (len(results) - 1) / 2) * width, entries, width, label=name)
    ax.axhline(mcq["chance"], color="black", linewidth=0.8, linestyle="--", label="chance")
    ax.set_xticks(
        x,
        [f"{g}\n(n={mcq['n'] if g == 'all' else mcq['subjects'][g]})" for g in groups],
        rotation=30,
        ha="right",
    )
    ax.set_ylabel("accuracy (%), 95% bootstrap CI")
    ax.set_ylim(0, 100)
    ax.set_title(f"Multiple choice: {mcq['source']}", fontsize=10)
    ax.legend(fontsize="small")
    save_cjk(fig, path)
    return True


def plot_sensitivity(entry: dict[str, Any], path: Path) -> bool:
    """One figure: every metric against one hyperparameter (medsft.evaluation.ablation's
    `sensitivity` entry), a panel per metric, each run a point with its 95% interval; runs that
    differ in other keys too are separate lines. A log axis when the values span 10x or more
    (learning rates). False (no file) when there is no metric to plot."""
    import math

    import numpy as np

    metrics, points, key = entry["metrics"], entry["points"], entry["key"]
    if not metrics:
        return False
    plt = _pyplot()
    columns = min(4, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.6 * columns, 2.9 * rows + 0.6), squeeze=False
    )
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in p["group"].items())
        groups.setdefault(label, []).append(p)
    values = sorted({float(p["value"]) for p in points})
    log_x = values[0] > 0 and values[-1] / values[0] >= 10
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for label, group in groups.items():
            shown = [p for p in group if metric in p["scores"]]
            if not shown:
                continue
            x = np.array([float(p["value"]) for p in shown])
            y = np.array([p["scores"][metric]["score"] for p in shown], dtype=float)
            err = None
            if all("low" in p["scores"][metric] for p in shown):
                low = np.array([p["scores"][metric]["low"] for p in shown])
                high = np.array([p["scores"][metric]["high"] for p in shown])
                err = np.maximum([y - low, high - y], 0.0)
            ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3, markersize=4, label=label or None)
        if log_x:
            ax.set_xscale("log")
        ax.set_xticks(values, [f"{v:g}" for v in values], rotation=30)
        ax.minorticks_off()
        lower = metric.startswith("PPL")
        ax.set_title(metric + (" (lower = better)" if lower else ""), fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    first = axes.flat[0]
    for p in points:  # which run each point is, once
        score = p["scores"].get(metrics[0])
        if score is not None:
            first.annotate(
                p["system"],
                (float(p["value"]), score["score"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    if len(groups) > 1:
        first.legend(fontsize="x-small")
    fig.suptitle(
        f"Sensitivity to {key} (95% bootstrap intervals)"
        + (f"; lines: {', '.join(entry['others'])}" if entry["others"] else ""),
        fontsize=10,
    )
    fig.supxlabel(key, fontsize=9)
    save_cjk(fig, path)
    return True


CJK_FONTS = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Noto Sans CJK JP",
)
"""Installed fonts tried first, in order."""
_CJK_TEXT = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]")


@functools.cache
def cjk_font() -> str | None:
    """The family matplotlib sets Chinese in: an installed CJK font (`CJK_FONTS`), else Noto Sans
    CJK from the `noto-cjk-sans-otc` package (`pip install medsft[cjk]`; a file in the package,
    nothing downloaded), registered with matplotlib; None when neither is there."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    found = next((f for f in CJK_FONTS if f in installed), None)
    if found is not None:
        return found
    try:
        from noto_cjk_sans_otc import FONT_PATH
    except ImportError:
        return None
    font_manager.fontManager.addfont(str(FONT_PATH))
    return font_manager.FontProperties(fname=str(FONT_PATH)).get_name()


def save_cjk(fig: Any, path: Path) -> None:
    """Save a figure whose labels may be Chinese (subjects, departments) in a CJK font (see
    `cjk_font`); without one, says so in one warning (the labels would show as boxes)."""
    plt = _pyplot()
    texts = fig.findobj(lambda o: hasattr(o, "get_text") and hasattr(o, "set_fontfamily"))
    if any(_CJK_TEXT.search(t.get_text()) for t in texts):
        cjk = cjk_font()
        if cjk is None:
            log.warning(
                "%s: no CJK font found, so its Chinese labels show as empty boxes; install one: "
                "pip install 'medsft[cjk]' (Noto Sans CJK), or fonts-noto-cjk from your system",
                path.name,
            )
        else:
            for text in texts:
                text.set_fontfamily([cjk, "DejaVu Sans"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
