"""triangle --quick: three sigmoid units carve the triangle; without a non-linearity the
network is a linear classifier, no better than logistic regression on the same points."""

from sklearn.linear_model import LogisticRegression

from tests.experiments.helpers import finished, last, load_experiment

SIGMOID_BAR = 0.95   # quick bar (the full sweep's best trial reaches >= 0.98)


def test_three_sigmoid_units_carve_the_triangle_and_a_linear_map_cannot(quick_sweep):
    result = finished(quick_sweep("triangle"))
    triangle = load_experiment("triangle")
    train_x, train_y = triangle.triangle_data(1000, seed=0)
    test_x, test_y = triangle.triangle_data(1000, seed=2)
    logistic = LogisticRegression().fit(train_x, train_y.ravel()).score(test_x, test_y.ravel())
    assert logistic < 0.85   # no line separates a triangle from the rest of the square
    best = result.best()
    assert best.config["activation"] == "sigmoid" and best.step == triangle.STEPS - 1
    assert last(result, activation="sigmoid")["accuracy/test"] >= SIGMOID_BAR
    assert last(result, activation="none")["accuracy/test"] <= logistic + 0.01
