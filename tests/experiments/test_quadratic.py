"""quadratic --quick: gradient descent on x², its logged curve against x0 (1 - 2 lr)^step."""

import numpy as np

from tests.experiments.helpers import finished, load_experiment
from tests.service.tb_helpers import scalar_points


def test_logged_curve_is_x0_times_one_minus_two_lr_to_the_step(quick_sweep):
    folder = quick_sweep("quadratic")
    result = finished(folder)
    experiment = load_experiment("quadratic")
    rates = sorted(t.config["lr"] for t in result.trials)
    assert rates[0] < 0.5 < rates[-1] and rates[-1] > 1.0   # slow, fast and diverging
    for trial in result.trials:
        points = scalar_points(folder / trial.id)["x"]       # as TensorBoard reads the run
        steps = np.array([step for step, _ in points])
        logged = np.array([value for _, value in points])
        np.testing.assert_array_equal(steps, np.arange(experiment.STEPS))
        expected = experiment.X0 * (1 - 2 * trial.config["lr"]) ** steps
        np.testing.assert_allclose(logged, expected, rtol=1e-5, atol=1e-30,
                                   err_msg=f"trial {trial.id}")


def test_lr_one_half_wins_and_lr_above_one_diverges(quick_sweep):
    result = finished(quick_sweep("quadratic"))
    assert result.best().config["lr"] == 0.5 and result.best().value == 0.0
    diverged = max(result.trials, key=lambda t: t.config["lr"])
    assert diverged.last_metrics["loss"] > load_experiment("quadratic").X0 ** 2
