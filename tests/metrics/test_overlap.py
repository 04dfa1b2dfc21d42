"""medsft.metrics.overlap: the bit-parallel LCS behind ROUGE-L."""

from __future__ import annotations

import random

from medsft.metrics.overlap import lcs_length


def test_bit_parallel_lcs_matches_dynamic_programme():
    def lcs_dp(a, b):
        row = [0] * (len(b) + 1)
        for x in a:
            prev_diag, row[0] = 0, 0
            for j, y in enumerate(b, 1):
                prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
        return row[-1]

    rng = random.Random(0)
    for _ in range(2000):
        alphabet = "abcd"[: rng.randint(1, 4)]
        a = rng.choices(alphabet, k=rng.randint(0, 70))
        b = rng.choices(alphabet, k=rng.randint(0, 70))
        assert lcs_length(a, b) == lcs_dp(a, b), (a, b)
