"""The AugMix Jensen-Shannon term: its value and its gradient against a float64 computation by hand."""
import torch
import torch.nn.functional as F

from budgetnet.training.losses import jsd


def reference_jsd(*logits: torch.Tensor) -> torch.Tensor:
    """The AugMix paper's formula in float64, where no probability here underflows to 0."""
    p = [F.softmax(z.double(), 1) for z in logits]
    m = (sum(p) / len(p)).clamp(1e-7, 1.0)
    return sum((q * (q.log() - m.log())).sum(1).mean() for q in p) / len(p)


def test_jsd_value_matches_the_formula():
    torch.manual_seed(0)
    views = [torch.randn(6, 10) * 4 for _ in range(3)]
    assert torch.allclose(jsd(*views).double(), reference_jsd(*views), atol=1e-6)


def test_jsd_gradient_is_finite_when_a_probability_underflows():
    # A logit gap of 120 makes softmax give an exact 0 in fp32; torch >= 1.13's kl_div then had a NaN
    # gradient, which stopped the study's recipe (AugMix+JSD at lr 0.1) within its first steps.
    base = torch.tensor([[0.0, 120.0, 0.5], [3.0, -110.0, 0.0]])
    views = [(base + 0.3 * i).requires_grad_() for i in range(3)]
    jsd(*views).backward()
    ref = [(base + 0.3 * i).double().requires_grad_() for i in range(3)]
    reference_jsd(*ref).backward()
    for v, r in zip(views, ref):
        assert torch.isfinite(v.grad).all()
        assert torch.allclose(v.grad.double(), r.grad, atol=1e-6)


def test_jsd_of_identical_views_is_zero_with_zero_gradient():
    z = torch.tensor([[0.0, 200.0, -50.0]])
    views = [z.clone().requires_grad_() for _ in range(3)]
    loss = jsd(*views)
    loss.backward()
    assert loss.abs().item() < 1e-7
    assert all(torch.equal(v.grad, torch.zeros_like(z)) for v in views)
