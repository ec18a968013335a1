"""two_inputs --quick (through ``python -m service launch``): a validation loss for every
mix of branch penalties, and regularising the raw branch wins."""

import itertools

from tests.experiments.helpers import finished


def test_validation_loss_per_regularisation_setting(quick_sweep):
    result = finished(quick_sweep("two_inputs", via="launch"))
    losses = {(t.config["l2_raw"], t.config["l2_features"]): t.last_metrics["loss/val"]
              for t in result.trials}
    raw = sorted({raw for raw, _ in losses})
    features = sorted({feat for _, feat in losses})
    assert set(losses) == set(itertools.product(raw, features))
    assert raw[0] == 0 and features[0] == 0 and len(raw) > 1 and len(features) > 1
    assert result.best().config["l2_raw"] > 0
    for feat in features:   # whatever the features branch's penalty
        assert losses[raw[-1], feat] < losses[0, feat] / 2, losses
