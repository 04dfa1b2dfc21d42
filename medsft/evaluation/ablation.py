"""The ablation table: every system's headline scores beside its training run's hyperparameters.

Each run system's resolved config (written by train.py into the run directory: `config.yaml`,
or after a resume that changed allowed settings the newest `config.resume-K.yaml`) is
flattened to dotted keys (`model.lora.r`, `data.augment.fraction`, ...); the table shows the keys
whose values differ between the runs (what the ablation varied) and a few that identify a run
(base model, fine-tuning method), so 4B vs 14B, augmented vs not and LoRA r 8 vs 32 come out of
one evaluate.py call as one table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the report renders without torch or Lightning
    from medsft.evaluation.systems import SystemOutput

ALWAYS = ("model.name_or_path", "model.finetune")
"""Shown even when every run has the same value."""
IGNORED = ("trainer.logger", "trainer.callbacks", "ckpt_path", "trainer.default_root_dir")
"""Run bookkeeping, not hyperparameters (the logger's version differs between every run)."""
HEADLINE = ("BLEU-4", "ROUGE-L", "vocab-F1")


def run_hparams(run_dir: Path) -> dict[str, Any] | None:
    """The run's last resolved config (medsft.training.runs.latest_config), flattened to dotted keys;
    None when it has none.

    Raises:
        InputError: the config is not YAML a mapping (named with its line), checked by
            validate_config before any system is generated.
    """
    import yaml

    from medsft.errors import InputError
    from medsft.training.runs import latest_config

    path = latest_config(run_dir)
    if path is None:
        return None
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or type(err).__name__
        raise InputError(
            f"{where}: the run's config is not valid YAML ({problem}); fix or restore it (the "
            "report's ablation table reads it)"
        ) from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: the run's config is not a mapping of settings")
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif not prefix.startswith(IGNORED):
            flat[prefix] = value

    walk("", config)
    return flat


def ablation(outputs: list[SystemOutput], report: dict[str, Any]) -> dict[str, Any] | None:
    """report.json's `ablation`: rows of (system, hyperparameters that vary, headline scores)."""
    runs = {o.name: run_hparams(o.run_dir) for o in outputs if o.run_dir is not None}
    runs = {name: h for name, h in runs.items() if h is not None}
    if not runs:
        return None
    keys = sorted(set().union(*runs.values()))
    varied = [k for k in keys if len({repr(h.get(k)) for h in runs.values()}) > 1]
    shown = [k for k in ALWAYS if k in keys and k not in varied] + varied
    rows = []
    for o in outputs:
        hp = runs.get(o.name)
        scores = {
            m: report["metrics"][o.name][m]["score"]
            for m in HEADLINE
            if m in report["metrics"][o.name]
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
    return {"keys": shown, "rows": rows}


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
    return lines


def _value(value: Any) -> str:
    return "null" if value is None else str(value).replace("|", "\\|")


def _score(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3f}"
