"""`python -m medsft.cli.augment`: LLM-paraphrased question copies written to a training file, or
(`--audit N`) N training questions beside their synonym-swapped copies, each swap marked.

    python -m medsft.cli.augment --data.source data/sample/huatuo_sample.jsonl \\
        --data.preset huatuo --paraphrase.base_url http://127.0.0.1:8000/v1 \\
        --paraphrase.model Qwen3-32B --augment.fraction 0.3 --out data/huatuo_para.jsonl
    python train.py --config configs/lora.yaml --data.source data/huatuo_para.jsonl \\
        --data.preset messages

    python -m medsft.cli.augment --data.source data/sample/huatuo_sample.jsonl \\
        --augment.fraction 1 --audit 20

Takes train.py's --data.* options (or --config with a data: section) for what to read.
Paraphrasing ends with one line of counts: copies asked, kept, dropped as different (or without a
clear verdict) and failed. Copies whose requests failed after the retries are left out of the
file, and the command exits 1 saying so: rerun it to ask for those only (the rest is cached).
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, TextIO

from medsft.chat import Message
from medsft.data.augment import (
    AugmentSettings,
    cilin,
    mark_swaps,
    medical_lexicon,
    protected_spans,
    question_swaps,
    term_pieces,
)
from medsft.data.paraphrase import ParaphraseSettings, paraphrase_file
from medsft.errors import UserError

log = logging.getLogger(__name__)


def conversations(
    data: Any, counts: Counter[str] | None = None
) -> Iterator[tuple[str, list[Message], bool]]:
    """(split key, messages, trainable) for each row of `data` (an SFTDataModule) in source order:
    trainable is False for the hashed validation share (data.val_fraction, as training splits).
    Invalid rows raise, or with data.skip_invalid are skipped and counted in `counts`."""
    from medsft.data import in_validation, iter_conversations

    def skipped(err: Exception) -> None:
        if counts is not None:
            counts["invalid rows skipped"] += 1

    for c in iter_conversations(data.data_source("train"), skipped=skipped):
        val = data.val_source is None and in_validation(c.key, data.val_fraction)
        yield c.key, c.messages, not val


def audit(
    data: Any,
    settings: AugmentSettings,
    n: int,
    *,
    rows: int | None = None,
    skip: int = 0,
    out: TextIO | None = None,
) -> Counter[str]:
    """Print the first `n` training questions that `settings` gives a synonym-swapped copy, each
    swap shown in place as 【old→new】, then the counts; `rows` audits only that many rows, after
    the first `skip` (a sample apart from one already read).
    Every swap is checked again against the medical lexicon, more broadly than the rules look:
    `medical words swapped` counts swaps whose old or new word holds a CMeKG term or lies anywhere
    inside a short one (实质 inside 肝实质损害), `swaps next to a medical term` those touching a term or
    a piece of one in the sentence. Returns the counts."""
    out = out or sys.stdout
    lexicon = medical_lexicon()
    cilin()  # load now: the first question is not slower than the rest
    counts: Counter[str] = Counter()
    for i, (key, messages, trainable) in enumerate(conversations(data, counts)):
        if i < skip:
            continue
        if rows is not None and counts["rows read"] >= rows:
            break
        counts["rows read"] += 1
        if not trainable:
            counts["validation rows (never augmented)"] += 1
            continue
        made = question_swaps(messages, key, settings)
        if made is None:
            continue
        counts["copies"] += 1
        for message, swaps in zip(messages, made[1], strict=True):
            counts["swaps"] += len(swaps)
            counts["medical words swapped"] += sum(
                _medical(s.old, lexicon) or _medical(s.new, lexicon) for s in swaps
            )
            if swaps:
                covered = protected_spans(message["content"], lexicon)
                counts["swaps next to a medical term"] += sum(
                    (s.start > 0 and covered[s.start - 1])
                    or (s.start + len(s.old) < len(covered) and covered[s.start + len(s.old)])
                    for s in swaps
                )
            if swaps and counts["copies"] <= n:
                print(f"#{counts['copies']} {key[:40]!r}: {len(swaps)} swap(s)", file=out)
                print(f"  - {message['content']}", file=out)
                print(f"  + {mark_swaps(message['content'], swaps)}", file=out)
    print("audit: " + ", ".join(f"{v} {k}" for k, v in counts.items()), file=out)
    return counts


AUDIT_TERM_CHARS = 5
"""The audit counts a word inside a CMeKG term of up to this many characters as medical (肝实质损害
is 5); longer entries are often phrases (阈值应当较低 holds 应当)."""


@lru_cache(maxsize=1)
def _short_terms(lexicon: frozenset[str]) -> frozenset[str]:
    return frozenset(t for t in lexicon if len(t) <= AUDIT_TERM_CHARS)


def _medical(word: str, lexicon: frozenset[str]) -> bool:
    """Whether `word` holds a CMeKG term, or lies anywhere inside a short one."""
    holds = any(word[i:j] in lexicon for i in range(len(word)) for j in range(i + 2, len(word) + 1))
    return holds or word in term_pieces(_short_terms(lexicon), len(word))


def main(argv: list[str] | None = None) -> dict[str, int]:
    """Write a training file with LLM-paraphrased question copies (--out), or print an audit of
    the synonym swaps (--audit N). See the module docstring. Returns the counts (`Paraphrased`
    or the audit's); copies whose requests failed make it raise after the file is written."""
    from medsft.cli.parsing import tool_parser
    from medsft.data import SFTDataModule

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # A line per HTTP request would bury the progress bar and the closing counts.
    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    parser = tool_parser("python -m medsft.cli.augment", __doc__)
    parser.add_class_arguments(SFTDataModule, "data", skip={"augment"})
    parser.add_class_arguments(ParaphraseSettings, "paraphrase")
    parser.add_class_arguments(AugmentSettings, "augment")
    parser.add_argument("--out", help="the JSONL file to write (paraphrasing)")
    parser.add_argument(
        "--audit",
        type=int,
        help="print N questions with their synonym swaps marked, not paraphrase",
    )
    parser.add_argument("--audit_rows", type=int, help="audit only N rows of the source")
    parser.add_argument("--audit_skip", type=int, default=0, help="audit from row N on (0 = first)")
    parser.add_argument("--progress", type=bool, default=True)
    cfg = parser.parse_args(argv)
    if (cfg.audit is None) == (cfg.out is None):
        parser.error("give --out FILE to paraphrase, or --audit N to read synonym swaps")
    if cfg.audit is not None and min(cfg.audit, cfg.audit_rows or 0, cfg.audit_skip) < 0:
        parser.error("--audit, --audit_rows and --audit_skip take a count >= 0")
    cfg = parser.instantiate(cfg)
    if cfg.audit is not None:
        return dict(
            audit(cfg.data, cfg.augment, cfg.audit, rows=cfg.audit_rows, skip=cfg.audit_skip)
        )
    done = paraphrase_file(
        conversations(cfg.data), cfg.paraphrase, cfg.augment, cfg.out, progress=cfg.progress
    )
    log.info(
        "%s; train on it with --data.preset messages and the same data.val_fraction",
        done.summary(),
    )
    if done.failed:
        raise UserError(
            f"{done.failed} of {done.asked} paraphrased copies were not made: their requests "
            f"failed after the retries (first: {done.failures[0]}); {cfg.out} holds the rest; "
            "rerun the same command to ask for those only"
        )
    return done.counts()


if __name__ == "__main__":
    from medsft.cli.errors import run

    run(main)
