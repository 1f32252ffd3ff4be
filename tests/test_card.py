"""card: the markdown model card holds the design table, parameter count, recipe, curves and robustness."""
from __future__ import annotations

import json

from budgetnet.card import model_card
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
    assert "re-encoded (JPEG)" in card and "```yaml" in card
    assert (path.parent / "card_curves.png").is_file() and "card_curves.png" in card
    from budgetnet.checkpoint import load_model

    params = load_model(run)[1].model.count_params()
    assert f"Trainable parameters: **{params:,}**" in card
