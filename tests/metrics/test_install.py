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

import pytest

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
import re, sys
BLOCKED = set({blocked!r})
class Hide:
    # Wraps each finder so that blocked packages are not found at all, as when not installed:
    # `import x` raises ModuleNotFoundError, importlib.util.find_spec("x") returns None, and
    # importlib.metadata does not list the distributions that provide them.
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None
    def find_distributions(self, *args, **kwargs):
        find = getattr(self.finder, "find_distributions", None)
        for dist in find(*args, **kwargs) if find else ():
            top = (dist.read_text("top_level.txt") or "").split()
            name = re.sub(r"[-_.]+", "_", dist.metadata["Name"] or "").lower()
            if not (set(top) & BLOCKED or name in BLOCKED):
                yield dist
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
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
    assert check.returncode != 0 and "No module named 'torch'" in check.stderr

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


PERPLEXITY = """
import json, sys, torch
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM
from medsft.metrics import perplexity
tok = AutoTokenizer.from_pretrained({tokenizer!r})
torch.manual_seed(0)
model = Qwen3ForCausalLM(Qwen3Config(
    vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    num_attention_heads=2, num_key_value_heads=1, head_dim=16)).eval()
conversation = [{{"role": "user", "content": "头痛怎么办？"}},
                {{"role": "assistant", "content": "注意休息，多喝水。"}}]
result = perplexity(model, tok, [conversation], progress=False)
print(json.dumps({{"ppl": result.score, "modules": sorted(sys.modules)}}))
"""


@pytest.mark.slow
def test_perplexity_needs_only_the_perplexity_extra():
    """`pip install ".[perplexity]"`: torch, transformers and torchmetrics, no Lightning or peft."""
    from medsft.model.build import bundled_tokenizer_dir

    config = pyproject()
    extras = config["project"]["optional-dependencies"]
    core = {requirement_name(r) for r in config["project"]["dependencies"]}
    allowed = core_closure(core | extra_requirements("perplexity", extras)) | {"medsft"}
    outside = {
        module
        for module, dists in metadata.packages_distributions().items()
        if not {requirement_name(d) for d in dists} & allowed
    } - set(sys.stdlib_module_names)
    assert {"lightning", "peft", "openai"} <= outside and "torch" not in outside

    code = BLOCKER.format(blocked=sorted(outside)) + PERPLEXITY.format(
        tokenizer=str(bundled_tokenizer_dir())
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ppl"] > 1
    assert not {m.split(".")[0] for m in result["modules"]} & {"lightning", "peft", "openai"}
