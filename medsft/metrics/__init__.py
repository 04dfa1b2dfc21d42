"""Evaluation metrics for medical QA: text metrics with reproducible signatures, bootstrap stats.

Importing this package stays light (numpy, sacrebleu): it must not import torch, Lightning or
openai, so that researchers can score outputs without the training stack. Keep heavy imports inside
the functions that need them.
"""

from medsft.metrics.stats import Interval, PairedTest, bootstrap_interval, paired_bootstrap
from medsft.metrics.text import (
    COMPARABLE,
    TOKENIZERS,
    MetricResult,
    bleu,
    compare,
    distinct,
    rouge,
    tokenize,
    vocab_f1,
)

# --- Lead: add `perplexity` and the judge exports below (lazily, without importing torch or
# --- openai at package import) and extend __all__.

__all__ = [
    "COMPARABLE",
    "TOKENIZERS",
    "Interval",
    "MetricResult",
    "PairedTest",
    "bleu",
    "bootstrap_interval",
    "compare",
    "distinct",
    "paired_bootstrap",
    "rouge",
    "tokenize",
    "vocab_f1",
]
