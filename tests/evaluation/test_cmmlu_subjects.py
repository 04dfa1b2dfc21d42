"""medsft.evaluation.cmmlu_subjects: every CMMLU subject and the Chinese name of its prompt."""

from __future__ import annotations

from medsft.evaluation.cmmlu_subjects import CMMLU_SUBJECTS


def test_sixty_seven_subjects_each_with_a_chinese_name():
    assert len(CMMLU_SUBJECTS) == 67
    assert CMMLU_SUBJECTS["clinical_knowledge"] == "临床知识"
    assert all(
        name.isidentifier() and zh and zh.isprintable() for name, zh in CMMLU_SUBJECTS.items()
    )


def test_the_medical_files_of_the_real_benchmark_are_all_named(shared_data):
    files = {p.stem for p in (shared_data / "cmmlu_medical" / "test").glob("*.csv")}
    assert files and files <= set(CMMLU_SUBJECTS)
