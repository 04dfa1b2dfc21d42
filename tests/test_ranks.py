"""medsft.ranks: rank and world size outside and inside a trainer, and the all-ranks vote."""

from types import SimpleNamespace

import torch

from medsft.ranks import all_ranks, is_global_zero, process_group_rank, trainer_rank


def test_a_single_process_is_rank_zero_of_one():
    assert process_group_rank() == (0, 1)
    assert trainer_rank(None) == (0, 1)
    assert is_global_zero()


def test_trainer_rank_reads_the_trainer():
    assert trainer_rank(SimpleNamespace(global_rank=2, world_size=4)) == (2, 4)


def test_all_ranks_holds_only_when_every_rank_votes_yes():
    class ThreeRanks:
        """A strategy whose reduce sums this rank's flag with the other two ranks' votes."""

        root_device = torch.device("cpu")

        def __init__(self, others):
            self.others = others

        def reduce(self, tensor, reduce_op):
            assert reduce_op == "sum"
            return tensor + sum(self.others)

    assert all_ranks(True, ThreeRanks([1.0, 1.0]), 3)
    assert not all_ranks(True, ThreeRanks([1.0, 0.0]), 3)
    assert not all_ranks(False, ThreeRanks([1.0, 1.0]), 3)
