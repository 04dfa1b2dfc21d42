"""The ablation table: every system's headline scores beside its training run's hyperparameters,
and the sensitivity of every metric to each numeric hyperparameter that varies.

Each run system's resolved config (written by train.py into the run directory: `config.yaml`,
or after a resume that changed allowed settings the newest `config.resume-K.yaml`) is
flattened to dotted keys (`model.lora.r`, `data.augment.fraction`, ...); the table shows the keys
whose values differ between the runs (what the ablation varied) and a few that identify a run
(base model, fine-tuning method), so 4B vs 14B, augmented vs not and LoRA r 8 vs 32 come out of
one evaluate.py call as one table.

Sensitivity: for each varied key whose values are numbers (a learning rate, a LoRA rank, an
augmentation fraction), every metric of the report (text metrics, reference perplexity, judge
win rate, MCQ accuracy) is plotted against it, with its 95% interval, one figure per key
(`sensitivity_<key>.png`, also in report.md and report.html). When other keys vary too (a grid),
each combination of their values is its own line, so two effects are never drawn as one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the report renders without torch or Lightning
    from medsft.evaluation.systems import SystemOutput

ALWAYS = ("model.name_or_path", "model.finetune")
"""Shown even when every run has the same value."""
IGNORED = ("trainer.logger", "trainer.callbacks", "ckpt_path", "trainer.default_root_dir")
"""Run bookkeeping, not hyperparameters (the logger's version differs between every run)."""


def run_hparams(run_dir: Path) -> dict[str, Any] | None:
    """The run's last resolved config (medsft.training.runs.read_run_config), flattened to dotted
    keys without run bookkeeping; None when it has none."""
    from medsft.training.runs import read_run_config

    config = read_run_config(run_dir)
    if config is None:
        return None
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif not prefix.startswith(IGNORED):
            flat[prefix] = value

    walk("", config)
    return flat


def ablation(
    outputs: list[SystemOutput], report: dict[str, Any], out_dir: Path | None = None
) -> dict[str, Any] | None:
    """report.json's `ablation`: rows of (system, hyperparameters that vary, headline scores),
    and `sensitivity` (see the module docstring), each key's figure written into `out_dir`.

    Args:
        outputs: the evaluated systems.
        report: the report so far (scores, perplexities, judge, MCQ).
        out_dir: where the sensitivity figures go; None: no figures.
    """
    runs = {o.name: run_hparams(o.run_dir) for o in outputs if o.run_dir is not None}
    runs = {name: h for name, h in runs.items() if h is not None}
    if not runs:
        return None
    keys = sorted(set().union(*runs.values()))
    varied = [k for k in keys if len({repr(h.get(k)) for h in runs.values()}) > 1]
    shown = [k for k in ALWAYS if k in keys and k not in varied] + varied
    from medsft.metrics import METRICS

    rows = []
    for o in outputs:
        hp = runs.get(o.name)
        # The metrics table says which text scores head a run (BLEU-4, ROUGE-L, vocab-F1).
        scores = {
            m: e["score"]
            for m, e in report["metrics"][o.name].items()
            if METRICS[e["metric"]].is_headline(m)
        }
        ppl = report["perplexity"].get(o.name, {}).get("test")
        if ppl:
            scores["PPL"] = ppl["score"]
        judged = report.get("judge", {}).get("results", {}).get(o.name)
        if judged and judged.get("adjusted_win_rate") is not None:
            scores["judge win rate"] = judged["adjusted_win_rate"]
        for r in (report.get("mcq") or {}).get("results", {}).values():
            if r["system"] == o.name:
                scores[f"MCQ {r['method']} %"] = r["accuracy"]["score"]
        rows.append(
            {
                "system": o.name,
                "kind": o.kind,
                "hparams": {k: hp.get(k) for k in shown} if hp else None,
                "scores": scores,
            }
        )
    sensitivity = [
        entry for key in varied if (entry := sensitivity_to(key, varied, runs, report)) is not None
    ]
    if out_dir is not None:
        from medsft.evaluation.plots import plot_sensitivity

        for entry in sensitivity:
            name = f"sensitivity_{re.sub(r'[^A-Za-z0-9_.-]+', '_', entry['key'])}.png"
            if plot_sensitivity(entry, out_dir / name):
                entry["plot"] = name
    return {"keys": shown, "rows": rows, "sensitivity": sensitivity}


def metric_entries(name: str, report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every score of system `name` in the report, as {metric: {score, low?, high?}}: the text
    metrics, `PPL (test)`, `judge win rate` and `MCQ <method> %`."""
    out = {m: e for m, e in report["metrics"].get(name, {}).items() if e.get("score") is not None}
    ppl = report["perplexity"].get(name, {}).get("test")
    if ppl:
        out["PPL (test)"] = ppl
    judged = (report.get("judge") or {}).get("results", {}).get(name)
    if judged and judged.get("adjusted_win_rate") is not None:
        interval = judged.get("interval") or {}
        out["judge win rate"] = {"score": judged["adjusted_win_rate"], **_bounds(interval)}
    for r in (report.get("mcq") or {}).get("results", {}).values():
        if r["system"] == name:
            out[f"MCQ {r['method']} %"] = r["accuracy"]
    return {m: {"score": e["score"], **_bounds(e)} for m, e in out.items()}


def _bounds(entry: dict[str, Any]) -> dict[str, float]:
    return {"low": entry["low"], "high": entry["high"]} if "low" in entry else {}


def _number(value: Any) -> int | float | None:
    """A hyperparameter's value as a number, None when it is none (bools and text are not; a
    string such as "1e-3", which YAML 1.1 reads as text, is)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def sensitivity_to(
    key: str, varied: list[str], runs: dict[str, dict[str, Any]], report: dict[str, Any]
) -> dict[str, Any] | None:
    """Every metric of each run against the run's value of `key` (None when fewer than two
    runs give it different numeric values). Runs whose value is not a number are listed under
    `left_out`; the other varied keys name each point's `group` (a line of its own)."""
    others = [k for k in varied if k != key]
    points, left_out = [], []
    for name, hp in runs.items():
        value = _number(hp.get(key))
        if value is None:
            left_out.append(name)
            continue
        points.append(
            {
                "system": name,
                "value": value,
                "group": {k: hp.get(k) for k in others},
                "scores": metric_entries(name, report),
            }
        )
    if len({p["value"] for p in points}) < 2:
        return None
    metrics = list(dict.fromkeys(m for p in points for m in p["scores"]))
    points.sort(key=lambda p: (repr(sorted(p["group"].items())), p["value"]))
    return {
        "key": key,
        "others": others,
        "metrics": metrics,
        "points": points,
        "left_out": left_out,
    }


def render_ablation(table: dict[str, Any] | None) -> list[str]:
    """report.md's ablation table."""
    if not table:
        return []
    scores = list(dict.fromkeys(s for row in table["rows"] for s in row["scores"]))
    lines = [
        "",
        "## Ablation",
        "",
        "Each run's hyperparameters from its `config.yaml` (those that differ between runs, and "
        "the base model), beside its scores; systems that are not training runs show –.",
        "",
        "| system | "
        + " | ".join(f"`{k}`" for k in table["keys"])
        + " | "
        + " | ".join(scores)
        + " |",
        "|---" * (1 + len(table["keys"]) + len(scores)) + "|",
    ]
    for row in table["rows"]:
        hp = row["hparams"]
        cells = ["–" if hp is None else _value(hp.get(k)) for k in table["keys"]]
        cells += [_score(row["scores"].get(s)) for s in scores]
        lines.append(f"| {row['system']} | " + " | ".join(cells) + " |")
    for entry in table.get("sensitivity") or []:
        lines += _render_sensitivity(entry)
    return lines


def _render_sensitivity(entry: dict[str, Any]) -> list[str]:
    """report.md's part for one key: what is plotted, and the figure."""
    key, points = entry["key"], entry["points"]
    values = ", ".join(f"{p['system']} {_value(p['value'])}" for p in points)
    lines = [
        "",
        f"### Sensitivity to `{key}`",
        "",
        f"Every metric against `{key}` ({values}), with 95% intervals where the metric has one."
        + (
            f" Other keys vary too ({', '.join(f'`{k}`' for k in entry['others'])}): each "
            "combination of their values is its own line."
            if entry["others"]
            else ""
        )
        + (
            f" Left out (no numeric `{key}`): {', '.join(entry['left_out'])}."
            if entry["left_out"]
            else ""
        ),
    ]
    if entry.get("plot"):
        lines += ["", f"![sensitivity to {key}]({entry['plot']})"]
    return lines


def _value(value: Any) -> str:
    return "null" if value is None else str(value).replace("|", "\\|")


def _score(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3f}"
