"""The metrics-only install: `medsft.metrics` scores with nothing but the core dependencies.

Another paper installs `pip install .` (pyproject's core `dependencies`, no extras) and imports
`from medsft.metrics import bleu, rouge, vocab_f1, distinct, compare`. These tests run that
import and the scores in a fresh interpreter where the training stack cannot be imported, and
check that every third-party module the metrics load is one the core install brings.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata

from tests.conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

PREDS = ["患者应多喝水，注意休息。", "建议尽快到医院检查血常规。", "The patient should rest."]
REFS = ["多喝水，好好休息。", "请尽快去医院查血常规。", "Rest and drink water."]
OTHER = ["多喝热水。", "去医院。", "Drink water."]

SCORE = f"""
import json, sys
from medsft.metrics import bleu, compare, distinct, rouge, vocab_f1
preds, refs, other = {PREDS!r}, {REFS!r}, {OTHER!r}
scores = {{
    "bleu": bleu(preds, refs, confidence=True, n_resamples=50).score,
    "rougeL": rouge(preds, refs)["rougeL"].score,
    "vocab_f1": vocab_f1(preds, refs).score,
    "vocab_f1_jieba": vocab_f1(preds, refs, tokenizer="jieba").score,
    "distinct2": distinct(preds, orders=2)["distinct-2"].score,
    "compare_delta": compare("rougeL", preds, other, refs, n_resamples=50).delta,
}}
print(json.dumps({{"scores": scores, "modules": sorted(sys.modules)}}))
"""

BLOCKER = """
import importlib.abc, sys
BLOCKED = set({blocked!r})
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: not part of the metrics-only install")
        return None
sys.meta_path.insert(0, Blocker())
"""

ALWAYS_BLOCKED = ("torch", "lightning", "pytorch_lightning", "transformers", "openai", "peft")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_name(requirement: str) -> str:
    """`jsonargparse[signatures]>=4.32` -> `jsonargparse` (normalised as PyPI compares names)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_requirements(extra: str, extras: dict[str, list[str]]) -> set[str]:
    """Distribution names an extra brings, following `medsft[other]` references."""
    names: set[str] = set()
    for requirement in extras[extra]:
        nested = re.fullmatch(r"medsft\[([^\]]+)\]", requirement.replace(" ", ""))
        if nested:
            for other in nested.group(1).split(","):
                names |= extra_requirements(other, extras)
        else:
            names.add(requirement_name(requirement))
    return names


def modules_of(distributions: set[str]) -> set[str]:
    """Top-level import names of the installed distributions among `distributions`."""
    found = set()
    for module, dists in metadata.packages_distributions().items():
        if any(requirement_name(d) in distributions for d in dists):
            found.add(module)
    return found


def run_probe(blocked: set[str]) -> dict:
    code = (BLOCKER.format(blocked=sorted(blocked)) if blocked else "") + SCORE
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_metrics_score_with_the_training_stack_unimportable():
    config = pyproject()
    core = {requirement_name(r) for r in config["project"]["dependencies"]}
    extras = config["project"]["optional-dependencies"]
    heavy = extra_requirements("train", extras) - core
    blocked = set(ALWAYS_BLOCKED) | modules_of(heavy)
    assert {"torch", "lightning", "openai"} <= blocked

    # The blocker works: the stack is installed here, yet cannot be imported under it.
    check = subprocess.run(
        [sys.executable, "-c", BLOCKER.format(blocked=sorted(blocked)) + "import torch"],
        capture_output=True,
        text=True,
    )
    assert check.returncode != 0 and "blocked" in check.stderr

    light = run_probe(blocked)
    normal = run_probe(set())
    assert light["scores"] == normal["scores"]
    assert 0 < light["scores"]["bleu"] < 100
    assert light["scores"]["vocab_f1_jieba"] != light["scores"]["vocab_f1"]
    assert not {m.split(".")[0] for m in light["modules"]} & blocked


def core_closure(core: set[str]) -> set[str]:
    """The core dependencies and, recursively, what they require (markers and extras ignored)."""
    seen: set[str] = set()
    todo = list(core)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [requirement_name(r) for r in requires if "extra ==" not in r]
    return seen


def test_metrics_score_with_only_the_core_dependencies_importable():
    config = pyproject()
    core = {requirement_name(r) for r in config["project"]["dependencies"]}
    allowed = core_closure(core) | {"medsft"}
    outside = {
        module
        for module, dists in metadata.packages_distributions().items()
        if not {requirement_name(d) for d in dists} & allowed
    } - set(sys.stdlib_module_names)
    assert {"torch", "matplotlib"} <= outside and not {"numpy", "sacrebleu", "jieba"} & outside

    # Optional imports of the core packages (tabulate's wcwidth) fail as in a fresh venv.
    light = run_probe(outside)
    assert light["scores"] == run_probe(set())["scores"]
    loaded = {m.split(".")[0] for m in light["modules"]}
    assert {"numpy", "sacrebleu", "jieba"} <= loaded
