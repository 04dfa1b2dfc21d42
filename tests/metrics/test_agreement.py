"""medsft.metrics.agreement: agreement with people and between judges, position and verbosity bias,
and the judge.labels reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsft.errors import InputError
from medsft.metrics import (
    agreement,
    align_labels,
    judge_biases,
    position_bias,
    read_labels,
    verbosity_bias,
)
from medsft.metrics.judge_result import PairRecord


def test_agreement_with_and_without_ties_kappa_and_the_table() -> None:
    people = ["a", "b", "tie", "a", "a", "b"]
    judge = ["a", "b", "a", "a", "tie", "a"]
    result = agreement(people, judge, n_resamples=200)
    assert result.n == 6 and result.agreement == 0.5
    # Without ties: pairs 0, 1, 3, 5 (neither said tie); 3 of 4 agree.
    assert result.n_without_ties == 4 and result.agreement_without_ties == 0.75
    # By hand: observed 3/6; chance (3*4 + 2*1 + 1*1) / 36 = 15/36.
    assert result.kappa == pytest.approx((0.5 - 15 / 36) / (1 - 15 / 36))
    assert result.kappa_interval.low <= result.kappa <= result.kappa_interval.high
    assert result.confusion == {
        "a": {"a": 2, "b": 0, "tie": 1},
        "b": {"a": 1, "b": 1, "tie": 0},
        "tie": {"a": 1, "b": 0, "tie": 0},
    }


def test_kappa_is_cohens_definition_on_random_raters() -> None:
    rng = np.random.default_rng(0)
    first = list(rng.choice(["a", "b", "tie"], 300, p=[0.5, 0.3, 0.2]))
    second = [f if rng.random() < 0.7 else rng.choice(["a", "b", "tie"]) for f in first]
    result = agreement(first, second, confidence=False)
    # Cohen (1960): (p_o - p_e) / (1 - p_e), p_e from each rater's own shares.
    p_o = sum(f == s for f, s in zip(first, second, strict=True)) / 300
    p_e = sum(first.count(v) * second.count(v) for v in ("a", "b", "tie")) / 300**2
    assert result.kappa == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-12)
    assert result.kappa_interval is None


def test_perfect_and_degenerate_agreement() -> None:
    same = agreement(["a", "b", "tie"] * 5, ["a", "b", "tie"] * 5, n_resamples=100)
    assert same.agreement == same.agreement_without_ties == same.kappa == 1.0
    # Both raters always say "a": nothing to tell from chance, no kappa.
    constant = agreement(["a"] * 4, ["a"] * 4)
    assert constant.agreement == 1.0 and constant.kappa is None and constant.kappa_interval is None
    ties = agreement(["tie", "a"], ["tie", "tie"])
    assert ties.n_without_ties == 0 and ties.agreement_without_ties is None


def test_agreement_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length: 2, 1"):
        agreement(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no pairs"):
        agreement([], [])
    with pytest.raises(ValueError, match=r"second holds \['better'\]; verdicts are"):
        agreement(["a"], ["better"])


def test_position_bias_counts_first_position_choices() -> None:
    # A judge that always picks the answer it is shown first.
    first = position_bias(["better"] * 10, ["better"] * 10, n_resamples=100)
    assert first.first_position_share == 1.0 and first.both_orders_first == 10
    assert first.n_decisive == 20 and first.both_orders_second == 0
    # A consistent judge: A better in both orders (better first, worse when B is first).
    consistent = position_bias(
        ["better", "worse", "equal", None], ["worse", "better", "equal", "better"]
    )
    assert consistent.n_pairs == 3 and consistent.n_decisive == 4
    assert consistent.first_position_share == 0.5 and consistent.both_orders_first == 0
    assert position_bias(["equal"], ["equal"]).first_position_share is None
    with pytest.raises(ValueError, match="expected 'better', 'worse' or 'equal'"):
        position_bias(["win"], ["loss"])


def test_verbosity_bias_of_a_judge_that_prefers_longer_answers() -> None:
    rng = np.random.default_rng(0)
    len_a, len_b = rng.integers(50, 500, 200), rng.integers(50, 500, 200)
    longer = verbosity_bias((len_a > len_b).astype(float) + 0.5 * (len_a == len_b), len_a, len_b)
    assert longer.longer_win_rate == 1.0 and longer.slope > 2
    assert longer.slope_interval.low > 1
    by_bin = {(b.low, b.high): b for b in longer.bins}
    assert by_bin[(-1.0, -0.5)].win_rate == 0.0 and by_bin[(0.5, 1.0)].win_rate == 1.0
    assert sum(b.n for b in longer.bins) == 200
    blind = verbosity_bias(rng.choice([0.0, 0.5, 1.0], 200), len_a, len_b)
    assert abs(blind.longer_win_rate - 0.5) < 0.1
    assert blind.slope_interval.low < 0 < blind.slope_interval.high
    with pytest.raises(ValueError, match="differ in length"):
        verbosity_bias([1], [1, 2], [1])


def _record(i: int, ab: str, ba: str, outcome: str, a: str, b: str) -> PairRecord:
    return PairRecord(i, f"q{i}", a, b, outcome, ab != ba, ab, ba, None, None, None, None)


def test_judge_biases_from_a_runs_records() -> None:
    records = [
        _record(0, "better", "better", "tie", "长" * 100, "短"),  # first position both times
        _record(1, "better", "worse", "win", "长" * 100, "短"),
        _record(2, "worse", "better", "loss", "短", "长" * 100),
        _record(3, "better", "worse", "error", "x", "y"),
    ]
    records[3] = PairRecord(3, "q3", "x", "y", "error", None, None, None, None, None, None, None)
    biases = judge_biases(records, n_resamples=50)
    assert biases["position"]["n_pairs"] == 3 and biases["position"]["both_orders_first"] == 1
    assert biases["position"]["first_position_share"] == pytest.approx(4 / 6)
    verbosity = biases["verbosity"]
    assert verbosity["n_unequal"] == 3 and verbosity["longer_win_rate"] == pytest.approx(2.5 / 3)
    json.dumps(biases, allow_nan=False)


LABELS = [
    {"question": "什么是  高血压？", "system_a": "tuned", "system_b": "gpt", "verdict": "a"},
    {"question": "如何预防感冒？", "system_a": "gpt", "system_b": "tuned", "verdict": "A>B"},
    {"id": "q3", "system_a": "tuned", "system_b": "gpt", "verdict": "tie", "annotator": "r1"},
    {"id": "q3", "system_a": "tuned", "system_b": "gpt", "verdict": "b", "annotator": "r2"},
    {"question": "没有评测过的问题", "system_a": "tuned", "system_b": "gpt", "verdict": "b"},
    {"question": "什么是高血压？", "system_a": "base", "system_b": "gpt", "verdict": "b"},
]


def _write(tmp_path, rows: list, name: str = "judge.labels") -> str:
    path = tmp_path / name
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows)
        + "\n",
        encoding="utf-8",
    )
    return str(path)


def test_read_labels_and_align_them_with_a_judging_run(tmp_path) -> None:
    labels = read_labels(_write(tmp_path, [LABELS[0], "", *LABELS[1:]]))
    assert [label.verdict for label in labels] == ["a", "a", "tie", "b", "b", "b"]
    assert labels[0].question == "什么是 高血压？" and labels[0].where.endswith("judge.labels:1")
    assert labels[2].annotator == "r1" and labels[1].where.endswith(":3")
    questions = ["什么是 高血压？", "如何预防感冒？", "第三个问题"]
    judge = ["a", "a", "b"]
    human, judged, unmatched = align_labels(
        labels, "tuned", "gpt", questions, judge, ids=["q1", "q2", "q3"]
    )
    # The second label was written for (gpt, tuned): gpt better is "b" from tuned's side.
    assert human == ["a", "b", "tie", "b"] and judged == ["a", "a", "b", "b"]
    assert [u.question for u in unmatched] == ["没有评测过的问题"]
    result = agreement(human, judged, confidence=False)
    assert result.n == 4 and result.agreement == 0.5


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", r"judge.labels .*judge.labels:1: not JSON"),
        ("[1, 2]", r":1: expected an object, got list"),
        (
            {"system_a": "x", "system_b": "y", "verdict": "a"},
            r":1: field 'question' \(or 'id'\) is missing",
        ),
        (
            {"question": "q", "system_b": "y", "verdict": "a"},
            r":1: field 'system_a' \(a system name\) is missing",
        ),
        ({"question": "q", "system_a": "x", "system_b": "x", "verdict": "a"}, r"both 'x'"),
        (
            {"question": "q", "system_a": "x", "system_b": "y", "verdict": "better"},
            r"field 'verdict' is 'better'; write 'a'",
        ),
        ({"question": "q", "system_a": "x", "system_b": "y"}, r"field 'verdict' is None"),
    ],
)
def test_a_bad_labels_line_is_one_error_naming_line_and_field(tmp_path, row, message) -> None:
    with pytest.raises(InputError, match=message):
        read_labels(_write(tmp_path, [row]))


def test_labels_file_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(InputError, match="no file"):
        read_labels(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="holds no verdicts"):
        read_labels(_write(tmp_path, [""]))
    twice = [LABELS[0], {**LABELS[0], "system_a": "gpt", "system_b": "tuned", "verdict": "b"}]
    with pytest.raises(InputError, match=r":2: the same question, pair and annotator as .*:1"):
        read_labels(_write(tmp_path, twice))
    # Given the evaluation's systems, a name that is not one of them is the line's problem.
    path = _write(tmp_path, LABELS)
    assert len(read_labels(path, ["base", "tuned", "gpt"])) == len(LABELS)
    with pytest.raises(InputError, match=r":6: field 'system_a' is 'base', not a system of this"):
        read_labels(path, ["tuned", "gpt"])
