"""digits --quick: validation accuracy every epoch, test accuracy at the end, >= 90%."""

import json

from tests.experiments.helpers import finished

QUICK_BAR = 0.90   # the full sweep's best trial reaches >= 0.97


def test_best_trial_reads_digits_at_the_quick_bar(quick_sweep):
    folder = quick_sweep("digits")
    result = finished(folder)
    best = result.best()
    assert best.metric == "accuracy/val"
    [trial] = [t for t in result.trials if t.id == best.trial]
    assert trial.last_metrics["accuracy/test"] >= QUICK_BAR
    for t in result.trials:
        lines = [json.loads(line) for line in (folder / t.id / "results.jsonl").open()]
        with_val = [line["step"] for line in lines if "accuracy/val" in line["metrics"]]
        with_test = [line["step"] for line in lines if "accuracy/test" in line["metrics"]]
        assert len(with_val) > 1, t.id          # during training, not only at the end
        assert with_test == [t.last_step], t.id  # once, at the last step
