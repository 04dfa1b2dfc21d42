"""The loss is a sum over supervised tokens; dividing once by their count weights tokens equally."""

import torch
import torch.nn.functional as F

from medsft.chat import IGNORE_INDEX
from medsft.loss import masked_nll


def make_batch(lengths, vocab=50, hidden=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths) + 4
    labels = torch.full((len(lengths), T), IGNORE_INDEX)
    for i, n in enumerate(lengths):
        labels[i, 3 : 3 + n] = torch.randint(0, vocab, (n,), generator=g)
    hidden_states = torch.randn(len(lengths), T, hidden, generator=g, requires_grad=True)
    head = torch.nn.Linear(hidden, vocab, bias=False)
    return labels, hidden_states, head


def reference(labels, logits):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))


def test_logits_and_hidden_paths_match_reference():
    labels, hidden, head = make_batch([5, 1, 9])
    logits = head(hidden)
    s, n = masked_nll(labels, logits=logits)
    assert n == 15
    torch.testing.assert_close(s / n, reference(labels, logits))
    s2, n2 = masked_nll(labels, hidden_states=hidden, head=head, chunk_size=4)
    assert n2 == n
    torch.testing.assert_close(s2, s)


def test_micro_batches_sum_to_the_concatenated_batch():
    torch.manual_seed(0)
    labels, hidden, head = make_batch([12, 1, 2, 30])
    full = reference(labels, head(hidden))
    parts = [
        masked_nll(labels[i : i + 2], hidden_states=hidden[i : i + 2], head=head) for i in (0, 2)
    ]
    total = sum(s for s, _ in parts) / sum(n for _, n in parts)
    torch.testing.assert_close(total, full)
    mean_of_means = sum(s / n for s, n in parts) / 2
    assert abs(mean_of_means - full) > 1e-3  # the naive average is biased toward short answers
    # Gradients agree too.
    total.backward()
    g_parts = hidden.grad.clone()
    hidden.grad = None
    full = reference(labels, head(hidden))
    full.backward()
    torch.testing.assert_close(g_parts, hidden.grad)


def test_nothing_supervised_is_zero_but_keeps_the_graph():
    labels, hidden, head = make_batch([0])
    s, n = masked_nll(labels, hidden_states=hidden, head=head)
    assert n == 0 and s.item() == 0.0
    s.backward()
    assert head.weight.grad is not None and hidden.grad is not None
