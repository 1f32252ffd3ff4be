"""Recipe descriptions say what a recipe is and what it targets; measured figures live in RESULTS.md only."""
import re

import pytest

from budgetnet.config import load_recipe, recipe_names

# figures a run measures: an accuracy to a decimal, a duration, a rate or a FLOP count, or the word itself
MEASURED = re.compile(r"\d+\.\d+\s?%|\b\d[\d,.]*\s?(s|seconds?|min|minutes?|hours?|img/s|images/s|[PGT]FLOPs?)\b"
                      r"|\bmeasured\b:?\s*\(|\bMeasured\b")


@pytest.mark.parametrize("name", recipe_names())
def test_a_description_quotes_figures_only_as_its_target(name):
    """A sentence with an accuracy, a duration or a rate is the recipe's target; no sentence reports a run."""
    description = load_recipe(name).description
    for sentence in re.split(r"(?<=[.;])\s+", description):
        if MEASURED.search(sentence):
            assert sentence.startswith("Target"), f"{name}: a measured figure in its description: {sentence!r}"


def test_the_check_catches_a_measured_figure():
    assert MEASURED.search("Measured (RESULTS.md): 90.55% in 1,004 s (mean).")
    assert MEASURED.search("trained at 494 img/s") and MEASURED.search("in 3,663 s of training")
    assert not MEASURED.search("10 epochs of batch 1024, lr 11.5 per 1,024 examples, 64/256/256 channels")
