"""linear_regression --quick: the best trial's weights (from its checkpoint) are within 0.05 of
the truth; a learning rate too small for the steps given is not."""

import numpy as np
import pytest

import engine as en
from tests.experiments.helpers import finished, last, load_experiment

TOLERANCE = 0.05


# Ray's workers run with OMP_NUM_THREADS=1, this process without: the saver says so, rightly,
# but a linear model's weights do not care about the last bits.
@pytest.mark.filterwarnings("ignore::engine.checkpoint.CheckpointWarning")
def test_best_trial_finds_the_true_weights(quick_sweep):
    result = finished(quick_sweep("linear_regression"))
    true_weights = load_experiment("linear_regression").TRUE_WEIGHTS
    sess = en.Session()
    result.restore_best(sess)
    learned = sess.variables()["linear/kernel"][:, 0]
    assert np.abs(learned - true_weights).max() < TOLERANCE, (learned, true_weights)
    assert result.best().config["lr"] == 0.05


def test_a_too_small_learning_rate_is_not_there_yet(quick_sweep):
    result = finished(quick_sweep("linear_regression"))
    for optimizer in ("sgd", "adam"):
        assert last(result, optimizer=optimizer, lr=0.05)["weights/error"] < TOLERANCE
        assert last(result, optimizer=optimizer, lr=0.001)["weights/error"] > TOLERANCE
