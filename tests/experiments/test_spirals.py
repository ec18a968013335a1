"""spirals --quick: the ReLU network separates the spirals; a linear model stays near chance."""

from tests.experiments.helpers import finished, last

RELU_BAR = 0.90     # quick bar (the full sweep's best ReLU network reaches >= 0.97)
LINEAR_BAR = 0.70   # logistic regression gets about 0.63 on this data


def test_relu_network_separates_the_spirals_and_a_linear_model_cannot(quick_sweep):
    result = finished(quick_sweep("spirals"))
    best = result.best()
    assert best.config["activation"] == "relu"
    assert last(result, activation="relu")["accuracy/test"] >= RELU_BAR
    assert last(result, activation="linear")["accuracy/test"] <= LINEAR_BAR
