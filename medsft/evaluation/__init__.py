"""Generate, score and compare systems on a test set, and write a report (see evaluate.py).

A *system* is a base model (hub id, local directory or `random:` preset), a training run (its
adapter or full model; `logs/demo/latest` or a glob picks the newest run), a merged export, a
file of ready answers, or an OpenAI-compatible chat endpoint (a GPT baseline, a model served by
vLLM or SGLang). Model systems answer the test questions through medsft.model.generate (each model
loaded once for its answers, perplexities and MCQ), endpoint systems through the endpoint; every system is scored against the references with medsft.metrics (bootstrap
intervals, paired tests, answer length), model systems get the perplexity of the references, and
an LLM judge compares each system with the baseline system in both answer orders.

One job per module, in the order `evaluate()` (run.py) uses them:

- config: the config dataclasses, `validate_config`, `judge_status`
- lock: one evaluation at a time per output_dir
- testset: `load_examples` (duplicate questions: `test_set.duplicates`)
- systems: `SystemOutput`, weight fingerprints; answers: answer-file systems;
  models: model systems (generation and perplexity, cached); perplexity: shared across ranks;
  endpoints: endpoint systems (cached answers from a chat endpoint)
- scoring: text metrics, paired tests, think blocks, length, slices (`test_set.slice_column`)
- mcq: multiple-choice benchmarks (`mcq_set`): letter log-likelihood or generated letters,
  accuracy per subject
- leakage: the test set's overlap with training data (`leakage`; `python -m medsft.cli.leakage`)
- judging: the judge against the baseline
- training: TensorBoard curves of runs; ablation: runs' hyperparameters beside their scores,
  and every metric against each numeric hyperparameter that varies
- plots: metrics.png, mcq.png, training_<run>.png, sensitivity_<key>.png
- report: report.md from the registered sections: each a module of sections/ (a new section is
  one module there, computed and rendered in its `order`); html: report.html (the report and a
  case browser, self-contained)

May import: the shared top-level modules, medsft.model, medsft.data, medsft.metrics and
medsft.training (a run folder's resolved config); never the command line (medsft.cli).

Everything slow is cached in the output directory (medsft.cache), so scoring and judging rerun
for free: `generations/<system>.jsonl` (answers of model systems), `generations/<system>.ppl.jsonl`
(perplexities) and `judge_cache.jsonl` (judge replies), and for `mcq_set` `generations/<system>.mcq.jsonl` (letter
log-probabilities) and `mcq/generations/` (generated answers). Outputs: `report.json`,
`report.md`, `report.html`, `metrics.png`, `mcq.png`, `training_<system>.png`, `judge_<system>.json` and
`config.yaml`.
"""

from medsft import lazy_exports

# Loaded when first used, so that `medsft.evaluation.scoring` and `.report` (scoring a file of
# answers, rendering a report) import neither torch nor Lightning.
_EXPORTS = {
    "config": (
        "DataSpec",
        "EvalConfig",
        "JudgeSettings",
        "RuntimeSettings",
        "ScoringSettings",
        "SystemSpec",
        "infer_kind",
        "judge_status",
        "resolve_run_dir",
        "validate_config",
    ),
    "models": ("is_global_zero",),
    "run": ("evaluate",),
    "testset": ("Example", "load_examples"),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
