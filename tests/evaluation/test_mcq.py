"""Multiple-choice benchmarks: reading, prompts, letter extraction, and loglik scoring checked
against an independent computation with plain transformers."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch

from medsft.evaluation import EvalConfig, JudgeSettings, RuntimeSettings, ScoringSettings, evaluate
from medsft.evaluation.config import DataSpec, McqSpec, SystemSpec
from medsft.evaluation.mcq import extract_letters, load_mcq, load_mcq_set, mcq_prompt
from medsft.model.generate import GenerationSettings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "mcq_sample.csv"
DEV = ROOT / "data" / "sample" / "mcq_dev.csv"


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_sample_reads_with_subjects_options_and_answer_sets():
    items = load_mcq(McqSpec(source=str(SAMPLE)))
    assert len(items) == 12
    assert {it.subject for it in items} == {"内科", "儿科", "药理", "解剖"}
    assert [it.answer for it in items if len(it.answer) > 1] == ["ABD"]
    assert [len(it.options) for it in items].count(5) == 1  # empty E columns are dropped


def test_cmmlu_layout_takes_the_subject_from_the_file_name(tmp_path):
    header = ["", "Question", "A", "B", "C", "D", "Answer"]
    write_csv(tmp_path / "anatomy.csv", [header, ["0", "问一", "甲", "乙", "丙", "丁", "B"]])
    write_csv(tmp_path / "virology.csv", [header, ["0", "问二", "甲", "乙", "丙", "丁", "d"]])
    items = load_mcq(McqSpec(source=str(tmp_path)))
    assert [(it.subject, it.answer) for it in items] == [("anatomy", "B"), ("virology", "D")]
    named = mcq_prompt(items[0], [], {"anatomy": "解剖学"})
    assert named.startswith("以下是关于解剖学的单项选择题")
    assert mcq_prompt(items[1], [], {"anatomy": "解剖学"}).startswith("以下是关于virology的")


def test_columns_map_other_layouts_and_bad_rows_name_file_and_line(tmp_path):
    path = write_csv(
        tmp_path / "cmb.csv",
        [
            ["题目", "选项A", "选项B", "选项C", "答案", "科目"],
            ["问", "甲", "乙", "丙", "A、C", "内科"],
            ["问", "甲", "乙", "丙", "D", "外科"],
        ],
    )
    columns = {
        "question": "题目",
        "answer": "答案",
        "subject": "科目",
        "A": "选项A",
        "B": "选项B",
        "C": "选项C",
    }
    spec = McqSpec(source=str(path), columns=columns, letters="ABC", limit=1)
    assert load_mcq(spec)[0].answer == "AC"
    with pytest.raises(ValueError, match=r"cmb.csv:3: answer 'D' .* not among the options ABC"):
        load_mcq(McqSpec(source=str(path), columns=columns, letters="ABC"))


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("答案是：B", "B"),
        ("答案：A、D", "AD"),
        ("正确答案为 C。因为……", "C"),
        ("The answer is D.", "D"),
        ("B. 二甲双胍", "B"),
        ("（C）", "C"),
        ("选B", "B"),
        ("我认为应该多喝水。", None),
        ("答案是F", None),
        ("A型血的人更容易……", None),
    ],
)
def test_letters_are_extracted_from_generated_answers(answer, expected):
    assert extract_letters(answer, "ABCDE") == expected


def test_kshot_prompt_uses_dev_questions_of_the_same_subject():
    items = load_mcq(McqSpec(source=str(SAMPLE)))
    dev = load_mcq(McqSpec(source=str(SAMPLE), dev_source=str(DEV)), dev=True)
    prompt = mcq_prompt(items[4], [d for d in dev if d.subject == items[4].subject])
    assert prompt.startswith("以下是关于儿科的单项选择题")
    assert "儿童缺铁性贫血" in prompt and "答案是：A\n\n题目：" + items[4].question in prompt
    assert prompt.endswith("D. 12个月\n答案是：")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny Qwen3 saved like any model, loaded below the way users load models."""
    from medsft.model.build import load_tokenizer, random_qwen3

    path = tmp_path_factory.mktemp("tiny")
    random_qwen3("tiny", seed=3).save_pretrained(path)
    load_tokenizer("qwen3").save_pretrained(path)
    return path


def _independent_logprobs(model_dir: Path, rows: list[dict], dev: list[dict]) -> list[dict]:
    """log P(letter | prompt) per question, by hand: the CMMLU prompt rebuilt from the CSVs, each
    letter appended and scored by a full forward pass of plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def block(r: dict) -> str:
        options = [f"{c}. {r[c]}" for c in "ABCDE" if r[c]]
        return "题目：" + r["Question"] + "\n" + "\n".join(options) + "\n答案是："

    out = []
    for r in rows:
        shot = next(d for d in dev if d["subject"] == r["subject"])
        kind = "多项" if len(r["Answer"]) > 1 else "单项"
        prompt = f"以下是关于{r['subject']}的{kind}选择题，请直接给出正确答案的选项。\n\n"
        prompt += block(shot) + shot["Answer"] + "\n\n" + block(r)
        scores = {}
        for letter in (c for c in "ABCDE" if r[c]):
            ids = tokenizer(prompt + letter, add_special_tokens=False, return_tensors="pt")
            with torch.no_grad():
                logits = model(**ids).logits[0]
            scores[letter] = torch.log_softmax(logits[-2], -1)[ids.input_ids[0, -1]].item()
        out.append(scores)
    return out


def test_loglik_accuracy_agrees_with_plain_transformers(tiny_model_dir, tmp_path):
    config = EvalConfig(
        systems=[SystemSpec("tiny", str(tiny_model_dir), kind="model")],
        test_set=DataSpec(source="data/sample/test_zh_med.json", limit=1),
        mcq_set=McqSpec(source=str(SAMPLE), shots=1, dev_source=str(DEV)),
        output_dir=str(tmp_path / "eval"),
        generation=GenerationSettings(max_new_tokens=2),
        scoring=ScoringSettings(n_resamples=200, perplexity=False, examples=0),
        judge=JudgeSettings(enabled=False),
        runtime=RuntimeSettings(accelerator="cpu", progress=False),
    )
    report = evaluate(config)
    mcq = report["mcq"]
    result = mcq["results"]["tiny/loglik"]

    rows = list(csv.DictReader(SAMPLE.open(encoding="utf-8")))
    dev = list(csv.DictReader(DEV.open(encoding="utf-8")))
    by_hand = _independent_logprobs(tiny_model_dir, rows, dev)
    assert [list(r) for r in result["raw"]] == [list(h) for h in by_hand]
    diff = max(abs(r[c] - h[c]) for r, h in zip(result["raw"], by_hand, strict=True) for c in h)
    assert diff < 1e-4, diff
    predicted = [max(h, key=h.get) for h in by_hand]
    assert result["predictions"] == predicted
    correct = sum(p == r["Answer"] for p, r in zip(predicted, rows, strict=True))
    assert result["accuracy"]["score"] == pytest.approx(100 * correct / 12)
    assert result["accuracy"]["low"] <= result["accuracy"]["score"] <= result["accuracy"]["high"]
    for subject, entry in result["subjects"].items():
        mine = [
            p == r["Answer"]
            for p, r in zip(predicted, rows, strict=True)
            if r["subject"] == subject
        ]
        assert entry["n"] == len(mine) and entry["score"] == pytest.approx(
            100 * sum(mine) / len(mine)
        )
    print(
        f"\nloglik agreement: max |Δ log p| = {diff:.2e} over {sum(map(len, by_hand))} letters; "
        f"accuracy {result['accuracy']['score']:.1f}% = {correct}/12 by hand"
    )

    markdown = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "## Multiple choice" in markdown and "| 儿科 | 3 |" in markdown
    assert mcq["prompt_example"] in markdown  # the prompt format is shown
    assert (tmp_path / "eval" / "mcq.png").stat().st_size > 0
    saved = json.loads((tmp_path / "eval" / "report.json").read_text(encoding="utf-8"))
    assert saved["mcq"]["results"]["tiny/loglik"]["predictions"] == predicted


@pytest.mark.parametrize(
    "mcq, message",
    [
        (McqSpec(source=str(SAMPLE), methods=[]), "methods is empty"),
        (McqSpec(source=str(SAMPLE), shots=2), "k-shot needs mcq_set.dev_source"),
        (McqSpec(source=str(SAMPLE), letters="AAB"), "distinct capital letters"),
    ],
)
def test_mcq_config_errors_say_how_to_fix(mcq, message):
    from medsft.evaluation import validate_config

    config = EvalConfig(systems=[SystemSpec("m", "random:tiny")], mcq_set=mcq)
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def _cmmlu_prompts(data: Path, shots: int) -> list[str]:
    """CMMLU's k-shot prompts as its own `gen_prompt` / `format_example` write them (CMMLU's
    src/mp_utils.py, reimplemented from its published format): pandas-read CSVs, its Chinese
    subject names, every cell as read."""
    import pandas as pd

    names = {
        "anatomy": "解剖学",
        "clinical_knowledge": "临床知识",
        "college_medicine": "大学医学",
        "professional_medicine": "专业医学",
    }  # CMMLU's name_en2zh

    def example(df: pd.DataFrame, i: int, answer: bool = True) -> str:
        k = df.shape[1] - 2
        text = "题目：" + df.iloc[i, 0]
        for j in range(k):
            text += "\n{}. {}".format("ABCD"[j], df.iloc[i, j + 1])
        return text + "\n答案是：" + (f"{df.iloc[i, k + 1]}\n\n" if answer else "")

    prompts = []
    for subject in sorted(p.stem for p in (data / "test").glob("*.csv")):
        dev = pd.read_csv(data / "dev" / f"{subject}.csv", header=0, index_col=0)
        test = pd.read_csv(data / "test" / f"{subject}.csv", header=0, index_col=0)
        head = f"以下是关于{names[subject]}的单项选择题，请直接给出正确答案的选项。\n\n"
        head += "".join(example(dev, i) for i in range(shots))
        prompts += [head + example(test, i, answer=False) for i in range(len(test))]
    return prompts


def test_cmmlu_files_get_cmmlus_own_five_shot_prompts_byte_for_byte(shared_data):
    data = shared_data / "cmmlu_medical"
    spec = McqSpec(source=str(data / "test"), dev_source=str(data / "dev"), shots=5)
    mcq = load_mcq_set(spec)
    official = _cmmlu_prompts(data, shots=5)
    same = sum(a == b for a, b in zip(mcq.prompts, official, strict=True))
    assert (same, len(official)) == (1034, 1034)  # 4 medical subjects, 1034 questions
    assert mcq.naming == "CMMLU"
    # Not vacuous: options with spaces around them, which CMMLU keeps (`A.  由平滑肌…`, `…\u3000\n`).
    assert sum(re.search(r"\n[A-D]\. (\s|[^\n]*\s\n)", p) is not None for p in official) == 2


def test_subject_names_are_cmmlus_for_cmmlu_files_else_as_given(tmp_path):
    header = ["", "Question", "A", "B", "C", "D", "Answer"]
    write_csv(tmp_path / "genetics.csv", [header, ["0", "问", "1/16 ", "甲", "乙", "丙", "A"]])
    mcq = load_mcq_set(McqSpec(source=str(tmp_path)))
    assert mcq.prompts[0] == (
        "以下是关于遗传学的单项选择题，请直接给出正确答案的选项。\n\n题目：问\nA. 1/16 \nB. 甲\nC. 乙\nD. 丙\n答案是："
    )
    renamed = load_mcq_set(McqSpec(source=str(tmp_path), subject_names={"genetics": "医学遗传学"}))
    assert renamed.prompts[0].startswith("以下是关于医学遗传学的") and "+" in renamed.naming
    write_csv(tmp_path / "内科.csv", [header, ["0", "问", "甲", "乙", "丙", "丁", "B"]])
    mixed = load_mcq_set(McqSpec(source=str(tmp_path)))  # not all CMMLU's: names as they are
    assert mixed.naming == "as in the data"
    assert {p.split("的")[0] for p in mixed.prompts} == {"以下是关于genetics", "以下是关于内科"}


def _mcq_config(model_dir: Path, out: Path, batch_size: int = 16) -> EvalConfig:
    return EvalConfig(
        systems=[SystemSpec("tiny", str(model_dir), kind="model")],
        mcq_set=McqSpec(source=str(SAMPLE), shots=1, dev_source=str(DEV), batch_size=batch_size),
        output_dir=str(out),
        runtime=RuntimeSettings(accelerator="cpu", progress=False),
    )


def _loglik(config: EvalConfig) -> tuple[dict, list[int]]:
    """mcq_runs' loglik run as this process computes it, and the questions it scored itself."""
    import medsft.evaluation.mcq_loglik as engine
    from medsft.evaluation.mcq import mcq_runs
    from medsft.evaluation.models import ModelSource, SharedModel

    scored: list[int] = []
    compute = engine.letter_logprobs

    def counting(model, tokenizer, prompts, *args, **kwargs):
        scored.append(len(prompts))
        return compute(model, tokenizer, prompts, *args, **kwargs)

    engine.letter_logprobs = counting
    try:
        spec = config.systems[0]
        model = SharedModel(ModelSource.resolve(spec, "model"))
        mcq = load_mcq_set(config.mcq_set)
        (run,) = mcq_runs(spec, "model", model, mcq, config, Path(config.output_dir))
    finally:
        engine.letter_logprobs = compute
    return {"predictions": run.predictions, "raw": run.raw}, scored


def _mcq_rank(rank: int, world: int, init_file: str, model_dir: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # batch_size 4: each rank's 6 questions in two batches, the last batch a ragged one
        run, scored = _loglik(_mcq_config(Path(model_dir), Path(out), batch_size=4))
        (Path(out) / f"rank{rank}.json").write_text(json.dumps({**run, "scored": scored}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_share_the_loglik_questions_and_predict_as_one_process(tiny_model_dir, tmp_path):
    import torch.multiprocessing as mp

    shared = tmp_path / "two"
    mp.spawn(
        _mcq_rank,
        args=(2, str(tmp_path / "init"), str(tiny_model_dir), str(shared)),
        nprocs=2,
        join=True,
    )
    single, scored = _loglik(_mcq_config(tiny_model_dir, tmp_path / "one"))
    assert scored == [12]
    for rank in (0, 1):
        got = json.loads((shared / f"rank{rank}.json").read_text())
        assert got["scored"] == [6]  # half the questions each
        assert got["predictions"] == single["predictions"]
        for a, b in zip(got["raw"], single["raw"], strict=True):
            assert a.keys() == b.keys() and all(abs(a[c] - b[c]) < 1e-5 for c in a)
    # Rank 0 saved every question's scores: a second run, single-process, reuses them all.
    saved = [json.loads(line) for line in (shared / "generations/tiny.mcq.jsonl").open()]
    assert sorted(row["index"] for row in saved) == list(range(12))
    again, scored = _loglik(_mcq_config(tiny_model_dir, shared))
    assert scored == [] and again["predictions"] == single["predictions"]


def test_generate_method_answers_in_length_batches(tiny_model_dir, tmp_path):
    from medsft.evaluation.mcq import mcq_runs
    from medsft.evaluation.models import ModelSource, SharedModel

    config = EvalConfig(
        systems=[SystemSpec("tiny", str(tiny_model_dir), kind="model")],
        mcq_set=McqSpec(source=str(SAMPLE), methods=["generate"]),
        output_dir=str(tmp_path),
        generation=GenerationSettings(max_new_tokens=2, batch_size=5),
        runtime=RuntimeSettings(accelerator="cpu", progress=False),
    )
    spec = config.systems[0]
    model = SharedModel(ModelSource.resolve(spec, "model"))
    loaded = model.get()
    widths: list[tuple[int, int]] = []
    generate = loaded.generate

    def recording(*args, **kwargs):
        widths.append(tuple(kwargs["input_ids"].shape))
        return generate(*args, **kwargs)

    loaded.generate = recording
    mcq = load_mcq_set(config.mcq_set)
    (run,) = mcq_runs(spec, "model", model, mcq, config, tmp_path)
    assert run.method == "generate" and len(run.predictions) == 12
    assert [rows for rows, _ in widths] == [5, 5, 2]  # 12 prompts, batch_size 5
    # Longest prompts first, each batch as wide as its longest: prompts of like lengths together.
    from medsft.model.generate import encode_prompt

    chats = [[{"role": "user", "content": mcq_prompt(it, [], mcq.names)}] for it in mcq.items]
    lengths = sorted((len(encode_prompt(model.src.tokenizer, c)) for c in chats), reverse=True)
    assert [w for _, w in widths] == [lengths[0], lengths[5], lengths[10]]
