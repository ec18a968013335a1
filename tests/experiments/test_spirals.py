"""spirals --quick: the ReLU network separates the spirals; a network without a non-linearity
is a linear classifier, no better than logistic regression on the same points."""

from sklearn.linear_model import LogisticRegression

from tests.experiments.helpers import finished, last, load_experiment

RELU_BAR = 0.90   # quick bar (the full sweep's best ReLU network reaches >= 0.97)


def test_relu_network_separates_the_spirals_and_a_linear_model_cannot(quick_sweep):
    result = finished(quick_sweep("spirals"))
    data = load_experiment("spirals").load_splits()
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    logistic = LogisticRegression().fit(train_x, train_y.ravel()).score(test_x, test_y.ravel())
    assert logistic < 0.7   # the data set is what it claims: no line separates the spirals
    assert result.best().config["activation"] == "relu"
    assert last(result, activation="relu")["accuracy/test"] >= RELU_BAR
    assert last(result, activation="linear")["accuracy/test"] <= logistic + 0.02
