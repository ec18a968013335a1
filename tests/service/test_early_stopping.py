"""Early stopping in a real sweep: ASHA's losers end exactly at their rung (last report,
last TensorBoard point, result.json and a checkpoint of that step all agree), survivors run
to max_t and end TERMINATED, the rung records are persisted; options change from the
command line."""

import io
import json

import numpy as np

from service.driver import run_sweep
from service.messages import TrialState
from service.sweep import load_sweep_file
from tests.service.tb_helpers import written_points


def expected_verdicts(qualities, rungs, rf):
    """Tune's rule replayed by hand for trials arriving one at a time in index order:
    ``{index: rung step it stopped at, or None}``."""
    recorded = {rung: [] for rung in rungs}
    stopped = {}
    for index, quality in enumerate(qualities):
        stopped[index] = None
        for rung in rungs:
            earlier = recorded[rung]
            cut = np.nanpercentile(earlier, (1 - 1 / rf) * 100) if earlier else None
            recorded[rung].append(-quality)
            if cut is not None and -quality < cut:
                stopped[index] = rung
                break
    return stopped


def test_asha_stops_the_losers_exactly_at_their_rung(local_ray, sweep_file, tmp_path):
    sweep = load_sweep_file(sweep_file("ranked"))
    qualities = [t.config["quality"] for t in sweep.trials()]
    expected = expected_verdicts(qualities, [10, 30], 3)
    assert expected[1] == 10 and expected[2] is None        # the rule is not vacuous here
    assert sum(v is not None for v in expected.values()) >= 4

    result = run_sweep(sweep, storage=str(tmp_path / "logs"), out=io.StringIO())
    assert result.exit_status == 0
    saved = json.loads((result.root / "scheduler.json").read_text())
    rungs = saved["brackets"][0]
    assert [r["step"] for r in rungs] == [10, 30, 90]
    for t in result.trials:
        run = result.root / t.id
        rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
        done = json.loads((run / "result.json").read_text())
        points = written_points(run)["loss"]
        rung = expected[t.index]
        if rung is None:        # a survivor: on to max_t, where it ends as a step budget
            assert (t.state, t.reason, t.last_step) == (TrialState.TERMINATED, None, 90), t.id
        else:
            assert t.state == TrialState.STOPPED, t.id
            assert t.reason.startswith(f"asha: rung {[10, 30].index(rung)} (step {rung}): "
                                       f"loss {t.config['quality']:g} not in top 1/3"), t.reason
            assert t.last_step == rung and done["state"] == "STOPPED"
            assert done["reason"] == t.reason
            assert t.checkpoint.endswith(f"ckpt-{rung + 1}")   # the rung step is checkpointed
        assert rows[-1]["step"] == t.last_step == done["last_step"] == points[-1][0], t.id
        assert [s for s, _ in points] == list(range(t.last_step + 1))
        # every value recorded at a rung the trial reached, with its verdict
        for r in rungs[:2]:
            if t.last_step >= r["step"]:
                value, reason, judged = r["records"][t.id]
                assert judged == r["step"]          # a report at every step: at the rung
                assert value == -t.config["quality"]
                assert (reason is None) == (rung != r["step"])


def test_scheduler_options_change_from_the_command_line(sweep_file, tmp_path):
    import subprocess
    import sys

    from service.sweep import load_sweep_file

    path = sweep_file("ranked")
    changed = load_sweep_file(path).replace(**{"scheduler.grace_period": 20})
    assert changed.spec.scheduler.grace_period == 20
    done = subprocess.run([sys.executable, "-m", "service", "launch", str(path), "--storage",
                           str(tmp_path / "logs"), "--set", "scheduler.reduction_factor=1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "scheduler.reduction_factor" in done.stderr, done.stderr
    assert not (tmp_path / "logs").exists()                    # nothing written


def test_median_stopping_in_a_real_sweep(local_ray, sweep_file, tmp_path):
    from service import median_stopping

    sweep = load_sweep_file(sweep_file("ranked")).replace(
        scheduler=median_stopping(grace_period=5, min_samples=2))
    result = run_sweep(sweep, storage=str(tmp_path / "logs"), out=io.StringIO())
    assert result.exit_status == 0
    by_quality = {t.config["quality"]: t for t in result.trials}
    # one at a time: trials 0 and 1 have fewer than two others to compare with; trial 2
    # (0.1) beats the median of 0.5 and 0.9; trial 3 (0.7) is worse than the median (0.5) of
    # 0.5, 0.9 and 0.1 from step 5 on
    for quality in (0.5, 0.9, 0.1):
        assert by_quality[quality].state == TrialState.TERMINATED, quality
    stopped = by_quality[0.7]
    assert stopped.state == TrialState.STOPPED
    assert stopped.reason.startswith("median stopping: step 5: best loss 0.7 worse than the "
                                     "median 0.5 of 3 other trials' running means")
    assert 5 <= stopped.last_step < 99          # delivered with a poll: a few steps later
    saved = json.loads((result.root / "scheduler.json").read_text())
    assert saved["stopped"][stopped.id] == [5, stopped.reason]
