import numpy as np
import pytest
import torch
from PIL import Image

from budgetnet.evaluation.calibration import expected_calibration_error, reliability_diagram


def two_class(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary probabilities whose top class 0 has the given confidence; labels right where `correct`."""
    probs = np.stack([confidence, 1 - confidence], axis=1)
    return probs, np.where(correct, 0, 1)


def test_perfectly_calibrated_predictions_have_near_zero_ece():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, size=200_000)
    probs, labels = two_class(confidence, rng.random(len(confidence)) < confidence)
    assert expected_calibration_error(probs, labels) < 0.01


def test_overconfident_model_matches_hand_computed_ece():
    # 10 predictions at 0.95 (bin (14/15, 1]) with 6 right, 10 at 0.75 (bin (0.733, 0.8]) with 5 right:
    # ECE = 0.5 * |0.6 - 0.95| + 0.5 * |0.5 - 0.75| = 0.3
    confidence = np.array([0.95] * 10 + [0.75] * 10)
    correct = np.array([True] * 6 + [False] * 4 + [True] * 5 + [False] * 5)
    probs, labels = two_class(confidence, correct)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.3)
    # one bin pools both groups: |0.55 - 0.85| = 0.3 as well
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx(0.3)


def test_ece_accepts_tensors_and_softmax_outputs():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.5]])
    probs, labels = logits.softmax(1), torch.tensor([0, 1, 1])
    conf = probs.max(1).values.numpy().astype(np.float64)
    # every prediction in its own 15-bin: ECE = mean |correct - confidence|
    expected = np.mean(np.abs(np.array([1, 1, 0]) - conf))
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    assert expected_calibration_error(probs.numpy(), labels.numpy()) == pytest.approx(expected)


@pytest.mark.parametrize("probs, labels, bins", [
    (np.ones((3, 2)) / 2, np.zeros(2), 15),    # label count differs
    (np.ones(3), np.zeros(3), 15),             # not [N, K]
    (np.ones((0, 2)), np.zeros(0), 15),        # empty
    (np.ones((3, 2)) / 2, np.zeros(3), 0),     # no bins
])
def test_bad_inputs_raise(probs, labels, bins):
    with pytest.raises(ValueError):
        expected_calibration_error(probs, labels, bins=bins)


def test_reliability_diagram_writes_png(tmp_path):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2000, 10)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.where(rng.random(2000) < 0.7, probs.argmax(1), rng.integers(0, 10, 2000))
    out = reliability_diagram(probs, labels, tmp_path / "plots" / "reliability.png", title="synthetic")
    assert out == tmp_path / "plots" / "reliability.png"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300
