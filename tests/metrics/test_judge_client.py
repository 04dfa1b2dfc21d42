"""medsft.metrics.judge_client: what the client keeps out of sight (its calls are tested through
judge_pairs against the loopback server in test_judge.py)."""

from __future__ import annotations

from medsft.cache import JsonlStore
from medsft.metrics.judge_client import JudgeClient

SECRET = "sk-test-DO-NOT-LEAK-8f3a2c91d4"


def test_the_key_is_in_no_repr_and_redacted_from_text() -> None:
    judge = JudgeClient(
        client=object(),
        model="m",
        params={},
        cache=JsonlStore(None),
        semaphore=None,
        max_retries=0,
        label_retries=0,
        follow_up="",
        endpoint=None,
        secret=SECRET,
    )  # type: ignore[arg-type]
    assert SECRET not in repr(judge) and "m" in repr(judge)
    assert judge.redact(f"bad key {SECRET}!") == "bad key ***!"
