"""The loss is a sum over supervised tokens; dividing once by their count weights tokens equally."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from medsft.chat import IGNORE_INDEX
from medsft.model.loss import masked_nll


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


@pytest.mark.parametrize(
    "dtype, train_head, bias",
    [(torch.float32, False, False), (torch.float32, True, True), (torch.bfloat16, True, False)],
)
def test_the_fused_head_gives_autograds_loss_and_gradients(dtype, train_head, bias):
    """A plain nn.Linear head takes the fused path (gradients computed chunk by chunk in the
    forward pass); wrapping the same head in a lambda takes autograd's. Both must agree, across
    chunk boundaries, for the hidden states, the (tied) weight and the bias."""
    labels, _, _ = make_batch([7, 1, 12], vocab=300, hidden=16)
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=bias).to(dtype).requires_grad_(train_head)
    hidden = torch.randn(*labels.shape, 16, dtype=dtype, requires_grad=True)
    results = []
    for fused in (True, False):
        hidden.grad, head.weight.grad = None, None
        if bias:
            head.bias.grad = None
        nll, n = masked_nll(
            labels, hidden_states=hidden, head=head if fused else (lambda x: head(x)), chunk_size=5
        )
        (0.37 * nll).backward()  # a scaled loss: backward must apply the incoming gradient
        grads = [hidden.grad] + ([head.weight.grad] if train_head else [])
        results.append(
            (nll.detach(), n, [g.clone() for g in grads + ([head.bias.grad] if bias else [])])
        )
    (fused_nll, fused_n, fused_grads), (ref_nll, ref_n, ref_grads) = results
    assert fused_n == ref_n == 20
    torch.testing.assert_close(fused_nll, ref_nll)
    # bf16: autograd's weight gradient is a bf16 matmul; the fused one accumulates in fp32.
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else {}
    for a, b in zip(fused_grads, ref_grads, strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)
    with torch.no_grad(), OpNames() as ops:  # evaluation: the loss alone, no gradient work
        nll, _ = masked_nll(labels, hidden_states=hidden, head=head, chunk_size=5)
    torch.testing.assert_close(nll, fused_nll)
    assert not {"exp_", "addmm_"} & ops.names, ops.names  # softmax - one_hot, weight gradient


class OpNames(TorchDispatchMode):
    """The names of the aten ops that ran inside it."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))
