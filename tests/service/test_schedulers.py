"""The early-stopping rules on hand-made result sequences: ASHA's rungs, cut-offs, ties,
NaN, mode max and brackets; the median stopping rule; their state round trips."""

import json
import math

import numpy as np
import pytest

from service.schedulers import (CONTINUE, AshaSpec, AsyncHyperBand, MedianSpec, MedianStopping,
                                Stop, SyncSteps)
from service.schedulers.asha import MAX_STEPS, bracket_of, rungs
from service.spec import Objective


def make_asha(mode="min", **options):
    options = {"grace_period": 10, "max_t": 100, "reduction_factor": 3, **options}
    scheduler = AsyncHyperBand(AshaSpec(**options))
    scheduler.setup(Objective("loss", mode), [])
    return scheduler


def verdict(scheduler, trial, step, value, metric="loss"):
    decision = scheduler.on_result(trial, step, {metric: value}, sync=True)
    return "stop" if isinstance(decision, Stop) else "go"


def test_rungs_up_to_and_including_max_t():
    assert rungs(100, 2000, 3, 0) == [100, 300, 900]
    assert rungs(100, 900, 3, 0) == [100, 300, 900]        # 3 ** 2 * 100 is a rung
    assert rungs(100, 900, 3, 1) == [300, 900]             # bracket 1 starts one rung up
    assert rungs(1, 10, 1.5, 0)[:4] == [1, 1.5, 2.25, 3.375] and rungs(1, 10, 1.5, 0)[-1] <= 10


def test_asha_keeps_the_top_third_at_a_rung_and_the_first_arrival_continues():
    s = make_asha()
    # rung 0 at step 10; values are losses (mode min)
    assert verdict(s, "a", 10, 0.5) == "go"                # the first arrival: nothing to beat
    assert verdict(s, "b", 10, 0.4) == "go"                # better than a
    # cut-off: 66.7th percentile of [-0.5, -0.4] = -0.4333 (higher is better): 0.45 is worse
    assert verdict(s, "c", 10, 0.45) == "stop"
    # recorded even when stopped: now [-0.5, -0.4, -0.45] -> cut-off -0.4333
    assert verdict(s, "d", 12, 0.43) == "go"               # the first report past the rung
    assert s.records[0][0] == {"a": [-0.5, None, 10], "b": [-0.4, None, 10],
                               "c": [-0.45, s.records[0][0]["c"][1], 10],
                               "d": [-0.43, None, 12]}
    assert s.verdict("c") == (10, s.records[0][0]["c"][1]) and s.verdict("d") is None
    reason = s.records[0][0]["c"][1]
    assert reason == ("asha: rung 0 (step 10): loss 0.45 not in top 1/3 (cut-off 0.433333)")


def test_asha_cutoff_is_numpys_nanpercentile_and_ties_continue():
    s = make_asha(reduction_factor=2)
    for trial, value in zip("abc", [1.0, 2.0, 3.0]):
        verdict(s, trial, 10, value)
    cutoff = np.nanpercentile([-1.0, -2.0, -3.0], 50)      # -2.0
    assert verdict(s, "tie", 10, -cutoff) == "go"          # equal to the cut-off: continues
    assert verdict(s, "worse", 10, -cutoff + 1e-9) == "stop"


def test_asha_mode_max_keeps_the_highest():
    s = make_asha(mode="max")
    verdict(s, "a", 10, 0.9)
    verdict(s, "b", 10, 0.8)
    assert verdict(s, "c", 10, 0.7) == "stop" and verdict(s, "d", 10, 0.95) == "go"
    assert "accuracy" not in s.records[0][0]["c"][1] and "cut-off" in s.records[0][0]["c"][1]


def test_asha_nan_is_never_recorded():
    s = make_asha()
    verdict(s, "a", 10, 0.5)
    assert verdict(s, "nan", 10, float("nan")) == "go" and "nan" not in s.records[0][0]
    assert verdict(s, "b", 10, 0.6) == "stop"              # the cut-off ignores nothing else


def test_asha_judges_a_trial_once_per_rung_and_replays_a_stop():
    s = make_asha()
    verdict(s, "a", 10, 0.1)
    assert verdict(s, "b", 10, 0.9) == "stop"
    assert verdict(s, "a", 11, 5.0) == "go"                # rung 0 passed: not judged again
    assert verdict(s, "b", 10, 0.0) == "stop"              # a resumed attempt: same verdict
    assert s.records[0][0]["b"][0] == -0.9                 # ...and the record is unchanged
    # the next attempt's waits: rungs not passed, a rung where it was stopped, and max_t
    assert s.sync_steps("a") == SyncSteps(steps=(30, 90, 100))
    assert s.sync_steps("b") == SyncSteps(steps=(10, 30, 90, 100))


def test_asha_a_trial_jumping_past_rungs_is_judged_at_the_highest_one_reached():
    s = make_asha()
    verdict(s, "a", 30, 0.1)
    assert "a" in s.records[0][1] and "a" not in s.records[0][0]


def test_asha_max_t_ends_the_trial_as_a_step_budget():
    s = make_asha()
    assert s.on_result("a", 100, {"loss": 9.0}, sync=True) == Stop(MAX_STEPS)
    assert s.on_result("a", 50, {"other": 1.0}, sync=False) == CONTINUE   # no metric: no rung


def test_asha_brackets_are_a_pure_function_of_the_trial_id():
    s = make_asha(brackets=3, max_t=270)
    assert [len(b) for b in s.brackets] == [4, 3, 2]        # 10..270, 30..270, 90..270
    ids = [f"{i:02d}_lr={i}" for i in range(300)]
    first = [s.bracket(t) for t in ids]
    assert first == [make_asha(brackets=3, max_t=270).bracket(t) for t in ids]
    counts = np.bincount(first, minlength=3) / len(ids)
    weights = np.exp(np.array([4, 3, 2]) - 4)
    assert np.allclose(counts, weights / weights.sum(), atol=0.07)   # Tune's softmax weights
    assert bracket_of("x", [3]) == 0
    b = s.bracket(ids[0])
    assert s.sync_steps(ids[0]).steps[0] == 10 * 3 ** b


def test_asha_state_round_trips_through_json():
    s = make_asha(brackets=2)
    for i, value in enumerate([0.3, 0.1, 0.5, 0.2]):
        verdict(s, f"t{i}", 10, value)
        verdict(s, f"t{i}", 30, value)
    assert s.dirty
    saved = json.loads(json.dumps(s.state_dict()))
    assert not s.dirty
    again = make_asha(brackets=2)
    again.load_state_dict(saved)
    assert again.records == s.records
    assert verdict(again, "new", 30, 0.4) == verdict(s, "new", 30, 0.4)


def make_median(**options):
    scheduler = MedianStopping(MedianSpec(**{"grace_period": 3, "min_samples": 2, **options}))
    scheduler.setup(Objective("loss", "min"), [])
    return scheduler


def test_median_stopping_compares_the_best_value_with_the_others_running_means():
    s = make_median()
    for step in range(6):
        assert s.on_result("a", step, {"loss": 1.0 - 0.1 * step}, sync=False) == CONTINUE
        assert s.on_result("b", step, {"loss": 2.0 - 0.1 * step}, sync=False) == CONTINUE
    # c at step 2: before the grace period
    for step in range(3):
        assert s.on_result("c", step, {"loss": 3.0}, sync=False) == CONTINUE
    # step 3: means of a and b up to step 3: 0.85, 1.85 -> median 1.35; c's best 3.0 is worse
    decision = s.on_result("c", 3, {"loss": 3.0}, sync=False)
    assert isinstance(decision, Stop) and "median 1.35" in decision.reason
    assert s.on_result("c", 4, {"loss": 0.0}, sync=False) == decision    # the same verdict


def test_median_stopping_needs_min_samples_others_at_or_past_the_step():
    s = make_median(min_samples=2)
    for step in range(10):
        s.on_result("a", step, {"loss": 1.0}, sync=False)
    for step in range(5):
        s.on_result("b", step, {"loss": 1.0}, sync=False)
    # at step 7 only a has reported at or past it: one sample, no decision
    assert s.on_result("c", 7, {"loss": 5.0}, sync=False) == CONTINUE
    # at step 4 both a and b have: the median of their means (1.0) beats 5.0
    assert isinstance(s.on_result("d", 4, {"loss": 5.0}, sync=False), Stop)
    assert s.on_result("e", 4, {"loss": float("nan")}, sync=False) == CONTINUE
    assert s.on_result("f", 4, {"loss": 1.0}, sync=False) == CONTINUE    # equal: not worse


def test_median_stopping_rebuilds_its_values_from_history_and_keeps_its_verdicts():
    history = {"a": [(s, {"loss": 1.0}) for s in range(10)],
               "b": [(s, {"loss": 1.2}) for s in range(10)], "c": []}
    s = MedianStopping(MedianSpec(grace_period=3, min_samples=2))
    s.load_state_dict({"stopped": {"z": [7, "median stopping: earlier"]}})
    s.setup(Objective("loss", "min"), list(history), history=lambda t: history[t])
    assert isinstance(s.on_result("c", 5, {"loss": 4.0}, sync=False), Stop)
    assert s.on_result("z", 0, {"loss": 0.0}, sync=False) == Stop("median stopping: earlier")
    assert set(s.state_dict()["stopped"]) == {"c", "z"}
    assert s.verdict("z") == (7, "median stopping: earlier") and s.verdict("c")[0] == 5
    assert s.verdict("a") is None


@pytest.mark.parametrize("bad, field", [
    ({"grace_period": 0, "max_t": 10}, "grace_period"),
    ({"grace_period": 10, "max_t": 5}, "max_t"),
    ({"grace_period": 1, "max_t": 5, "reduction_factor": 1}, "reduction_factor"),
    ({"grace_period": 1, "max_t": 5, "brackets": 0}, "brackets"),
    ({"grace_period": 1, "max_t": 5, "eta": 3}, "eta"),
])
def test_bad_asha_specs_name_the_field(bad, field):
    from service import Sweep, SpecError, grid
    with pytest.raises(SpecError, match=f"scheduler.*{field}"):
        Sweep(name="s", train=lambda c, t: None, space={"x": grid([1])}, metric="loss",
              scheduler={"type": "asha", **bad})


def test_a_float_reduction_factor_is_allowed():
    s = make_asha(reduction_factor=2.5, grace_period=4, max_t=100)
    assert s.brackets[0] == [4, 10, 25, 62.5]
    assert s.sync_steps("a").steps == (4, 10, 25, 63, 100)
    assert not math.isnan(s.brackets[0][-1])
