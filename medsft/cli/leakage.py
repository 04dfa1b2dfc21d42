"""Check a test set against training data for leakage (see medsft.evaluation.leakage).

    python -m medsft.cli.leakage --test_set.source data/sample/test_zh_med.json \\
        --leakage.train_set.source FreedomIntelligence/Huatuo26M-Lite --leakage.train_set.preset huatuo
    python -m medsft.cli.leakage --help
"""

from medsft.cli.errors import run
from medsft.evaluation.leakage import main

if __name__ == "__main__":
    run(main)
