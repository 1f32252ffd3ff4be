"""card: the markdown model card holds the design table, parameter count, recipe, curves and robustness."""
from __future__ import annotations

import json

from budgetnet.deploy.card import model_card
from test_export import make_run


def test_card(tmp_path):
    run = make_run(tmp_path)
    rows = [{"epoch": e, "lr": 0.1, "train_loss": 2.0 / e, "train_acc": 0.2 * e, "test_loss": 2.1 / e,
             "test_acc": 0.19 * e} for e in (1, 2)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    card = model_card(run).read_text()
    assert "Not measured: run `budgetnet eval" in card
    (run / "eval.json").write_text(json.dumps({
        "accuracy": 0.4321, "loss": 1.5, "images": 100, "checkpoint_epoch": 2, "ece": 0.05,
        "corruption_accuracy": 0.3, "corruption_source": "generated", "corruption_images": 100,
        "per_corruption": {"fog": {"1": 0.4, "2": 0.3, "3": 0.3, "4": 0.2, "5": 0.1, "mean": 0.26}}}))
    path = model_card(run, tmp_path / "cards" / "card.md")
    card = path.read_text()
    assert "43.21%" in card and "30.00%" in card and "| fog | 40.0% |" in card
    assert "| stage 1 |" in card and "| stem |" in card
    assert "```yaml" in card and "description:" not in card
    assert "A basic-block residual network for cifar10 (32x32 RGB, 10 classes)" in card
    assert "Classes, in logit order: plane, car, bird, cat, deer, dog, frog, horse, ship, truck." in card
    assert "- training loss: cross-entropy\n" in card  # crop + flip: plain cross-entropy
    assert "- trained on 50,000 images of cifar10's training split; tested on 10,000 test images" in card
    assert (path.parent / "card_curves.png").is_file() and "card_curves.png" in card
    from budgetnet.training.checkpoint import load_model

    params = load_model(run)[1].model.count_params()
    assert f"Trainable parameters: **{params:,}**" in card


def test_card_follows_the_data_and_the_loss(tmp_path):
    """A CIFAR-100 run with AugMix+JSD, label smoothing and a shrunk training set written before class names were
    stored: every sentence of the card says what this run did."""
    run = make_run(tmp_path, "model.num_classes=100", "data.dataset=cifar100", "data.train_size=3000",
                   "data.val_size=500", "data.test_size=700", "label_smoothing=0.1",
                   "augment=[{name: flip}, {name: augmix, jsd: true, jsd_lambda: 6}]", classes=None)
    card = model_card(run).read_text()
    assert "for cifar100 (32x32 RGB, 100 classes)" in card and "photos of the 100 cifar100 classes" in card
    assert "CIFAR-10 classes" not in card and "re-encoded (JPEG) copy of CIFAR-10" not in card
    assert "Class names: not stored (a checkpoint of budgetnet 0.1.0); logit i is class i of cifar100." in card
    assert ("- trained on 3,000 images of cifar100's training split, 500 held out for validation; "
            "tested on 700 test images") in card
    assert ("- training loss: cross-entropy with label smoothing 0.1 on the clean view + 6 x the Jensen-Shannon "
            "consistency of the clean and two AugMix views") in card
    assert "10k" not in card and "description:" not in card  # the demo recipe's text says 10k images
