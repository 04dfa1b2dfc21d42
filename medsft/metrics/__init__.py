"""Evaluation metrics for medical QA: text metrics with reproducible signatures, bootstrap stats.

Importing this package stays light (numpy, sacrebleu): it must not import torch, Lightning or
openai, so that researchers can score outputs without the training stack. Keep heavy imports inside
the functions that need them.

Modules: `text` (the metrics table `METRICS`, BLEU, ROUGE, vocab-F1, distinct-n, `compare`),
`scorers` (each metric's computation), `tokenizers` and `overlap` (their tokens and counts),
`stats` (bootstrap), `likelihood` (perplexity), `judge*`, `verdict`, `length_control`,
`agreement` and `endpoint` (the LLM judge).

May import: the shared top-level modules, and inside perplexity's functions medsft.model and
medsft.data (the loss and the batch collation training uses); never training, evaluation or
the command line.
"""

from medsft import lazy_exports
from medsft.metrics.agreement import (
    Agreement,
    HumanLabel,
    PositionBias,
    VerbosityBias,
    agreement,
    align_labels,
    judge_biases,
    position_bias,
    read_labels,
    verbosity_bias,
)
from medsft.metrics.length_control import (
    LengthControlled,
    SimilarLength,
    length_controlled_win_rate,
    similar_length_win_rate,
)
from medsft.metrics.stats import Interval, PairedTest, bootstrap_interval, paired_bootstrap
from medsft.metrics.text import (
    COMPARABLE,
    METRICS,
    TOKENIZERS,
    MetricResult,
    TextMetric,
    bleu,
    compare,
    distinct,
    metric_name,
    resolve_tokenizer,
    rouge,
    score_metric,
    tokenize,
    vocab_f1,
)
from medsft.metrics.verdict import parse_verdict

# torch (perplexity) and openai (the judge, at call time) load only when first used.
_EXPORTS = {
    "likelihood": ("perplexity", "perplexity_from_nll", "PerplexityResult", "TokenPerplexity"),
    "judge": ("judge_pairs", "ajudge_pairs", "JudgeResult", "JudgeSettings"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "Agreement",
    "HumanLabel",
    "PositionBias",
    "SimilarLength",
    "VerbosityBias",
    "agreement",
    "align_labels",
    "judge_biases",
    "position_bias",
    "read_labels",
    "similar_length_win_rate",
    "verbosity_bias",
    "COMPARABLE",
    "METRICS",
    "TextMetric",
    "score_metric",
    "JudgeResult",
    "JudgeSettings",
    "LengthControlled",
    "length_controlled_win_rate",
    "parse_verdict",
    "PerplexityResult",
    "TokenPerplexity",
    "ajudge_pairs",
    "judge_pairs",
    "perplexity",
    "perplexity_from_nll",
    "TOKENIZERS",
    "Interval",
    "MetricResult",
    "PairedTest",
    "bleu",
    "bootstrap_interval",
    "compare",
    "distinct",
    "metric_name",
    "paired_bootstrap",
    "resolve_tokenizer",
    "rouge",
    "tokenize",
    "vocab_f1",
]
