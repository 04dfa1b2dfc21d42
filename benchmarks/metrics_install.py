"""The metrics-only install as another paper would do it: size, time, and a score in a fresh venv.

    python benchmarks/metrics_install.py                  # core install (`pip install .`)
    python benchmarks/metrics_install.py --extras judge   # core + the judge's openai

1. `python -m venv VENV` (no system site-packages), then `VENV/bin/pip install --no-cache-dir
   <this repository>` (non-editable, with pip's cache off so every wheel is downloaded), timed.
2. `du` of the whole venv before and after the install: the size the install adds, and the total.
3. In that venv: `from medsft.metrics import bleu, rouge, vocab_f1, distinct, compare`, each
   scored on two Chinese pairs, and the list of top-level modules loaded (torch, lightning,
   transformers and openai must not be among them), and `pip list`.

Install time is network-bound: it says how fast the package index answered that day.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import write_result

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from medsft.metrics import bleu, rouge, vocab_f1, distinct, compare
preds = ["患者应多喝水，注意休息。", "建议尽快到医院检查血常规。"]
refs = ["多喝水，好好休息。", "请尽快去医院查血常规。"]
scores = {
    "bleu": bleu(preds, refs).score,
    "rougeL": rouge(preds, refs)["rougeL"].score,
    "vocab_f1": vocab_f1(preds, refs).score,
    "vocab_f1_jieba": vocab_f1(preds, refs, tokenizer="jieba").score,
    "distinct2": distinct(preds, orders=2)["distinct-2"].score,
    "compare_p": compare("bleu", preds, refs, refs, n_resamples=200).p_value,
}
top = sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")})
print(json.dumps({"scores": scores, "modules": top}))
"""

HEAVY = ("torch", "lightning", "pytorch_lightning", "transformers", "openai", "peft")


def du_bytes(path: Path) -> int:
    """Disk usage of `path` in bytes, as `du -sb` counts it."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="extras to add, e.g. 'judge' (default none)")
    parser.add_argument("--source", default=str(ROOT), help="what to pip install (this repo)")
    args = parser.parse_args()

    target = f"{args.source}[{args.extras}]" if args.extras else args.source
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        venv_s = time.perf_counter() - start
        empty = du_bytes(venv)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        command = [*pip, "install", "-q", "--no-cache-dir", target]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        install_s = time.perf_counter() - start
        total = du_bytes(venv)
        site = next((venv / "lib").glob("python*/site-packages"))
        per_package = {
            p.name: du_bytes(p)
            for p in site.iterdir()
            if p.is_dir() and not p.name.endswith("-info")
        }
        biggest = dict(sorted(per_package.items(), key=lambda kv: -kv[1])[:8])
        listed = subprocess.run(
            [*pip, "list", "--format", "json"], capture_output=True, text=True, check=True
        )
        # Run the probe outside the repository so the installed copy is imported, not ./medsft.
        probe = subprocess.run(
            [str(venv / "bin" / "python"), "-c", PROBE],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp,
        )
        result = json.loads(probe.stdout.strip().splitlines()[-1])

    loaded_heavy = sorted(set(result["modules"]) & set(HEAVY))
    figures = {
        "install_command": "python -m venv VENV && VENV/bin/pip install --no-cache-dir "
        + (f'"<repo>[{args.extras}]"' if args.extras else "<repo>"),
        "install_s": round(install_s, 1),
        "venv_create_s": round(venv_s, 1),
        "empty_venv_mb": round(empty / 1e6, 1),
        "venv_after_install_mb": round(total / 1e6, 1),
        "added_by_install_mb": round((total - empty) / 1e6, 1),
        "largest_site_packages_mb": {k: round(v / 1e6, 1) for k, v in biggest.items()},
        "packages": {p["name"]: p["version"] for p in json.loads(listed.stdout)},
        "scores_in_that_venv": result["scores"],
        "heavy_modules_loaded": loaded_heavy,
    }
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    name = "metrics_install" + (f"_{args.extras.replace(',', '_')}" if args.extras else "")
    write_result(name, figures, args=vars(args))
    if loaded_heavy:
        sys.exit(f"error: the metrics import loaded {loaded_heavy}")


if __name__ == "__main__":
    main()
