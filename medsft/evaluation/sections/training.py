"""Training curves of the run systems: final and minimum losses, training_<system>.png."""

from __future__ import annotations

from typing import Any

from medsft.evaluation.report import Evaluation, Section


def compute(run: Evaluation) -> dict[str, Any]:
    """Each run system's TensorBoard scalars, summarised and plotted to training_<name>.png."""
    from medsft.evaluation.plots import plot_training
    from medsft.evaluation.training import training_scalars, training_summary

    training = {}
    for o in run.outputs:
        if o.run_dir is None:
            continue
        scalars = training_scalars(o.run_dir)
        entry = training_summary(o.run_dir, scalars)
        if plot_training(o.name, scalars, run.out_dir / f"training_{o.name}.png"):
            entry["plot"] = f"training_{o.name}.png"
        training[o.name] = entry
    return training


def render(report: dict[str, Any]) -> list[str]:
    """Each run's last and lowest loss and perplexity, and its plot."""
    if not report.get("training"):
        return []
    lines = ["", "## Training", ""]
    for s, t in report["training"].items():
        finals = ", ".join(
            f"{tag} {v['last']:.4g} (min {v['min']:.4g})"
            for tag, v in t["scalars"].items()
            if tag.endswith(("loss", "ppl"))
        )
        lines += [f"**{s}** (`{t['run_dir']}`): {finals or 'no scalars logged'}.", ""]
        if t.get("plot"):
            lines += [f"![training curves of {s}]({t['plot']})", ""]
    return lines


SECTIONS = (Section("training", render, compute, order=120),)
