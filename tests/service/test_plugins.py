"""The plug points: a scheduler's decisions reach the trials, synchronously at the steps it
names (the report waits, the trial ends exactly there) or asynchronously (with the next
poll), and are persisted in the sweep folder; the default searcher plans the grid; a
resumed attempt reads its checkpoint's data once."""

import builtins
import io
import json

import service.driver
import service.trial
from service.checkpoints import restore_point
from service.driver import run_sweep
from service.messages import Outcome, TrialState
from service.schedulers import CONTINUE, Scheduler, Stop, SyncSteps
from service.search import FINISHED, BasicSearcher
from service.spec import expand_trials
from service.sweep import load_sweep_file
from tests.service.test_trial import STEPS, make_task, make_train

SYNC_STEP, ASYNC_STEP = 7, 3


class StopOddTrials(Scheduler):
    """Stops trials of odd index: at a synchronous step (the report waits) when their seed
    is 0, asynchronously after ``ASYNC_STEP`` otherwise; remembers its decisions."""

    name = "stop-odd"

    def setup(self, objective, trial_ids, history=None):
        super().setup(objective, trial_ids, history)
        self.index = {t: int(t.split("_")[0]) for t in trial_ids}
        self.decided = getattr(self, "decided", {})

    def sync_steps(self, trial_id):
        return SyncSteps(steps=(SYNC_STEP,)) if trial_id not in self.decided else SyncSteps()

    def on_result(self, trial_id, step, metrics, *, sync):
        odd = self.index[trial_id] % 2 == 1
        seed0 = trial_id.endswith("seed=0")
        if sync:
            assert step == SYNC_STEP, step
            self.decided[trial_id] = "stop" if odd and seed0 else "continue"
            self.changed()
            return Stop(f"stop-odd: step {step}") if odd and seed0 else CONTINUE
        if odd and not seed0 and step == ASYNC_STEP:
            self.decided[trial_id] = "stop"
            self.changed()
            return Stop(f"stop-odd: step {step}, asynchronously")
        return CONTINUE

    def state(self):
        return {"decided": dict(self.decided)}

    def load_state_dict(self, state):
        self.decided = dict(state["decided"])


def test_scheduler_decisions_reach_trials_and_are_persisted(local_ray, sweep_file, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(service.driver, "make_scheduler", lambda spec: StopOddTrials())
    sweep = load_sweep_file(sweep_file("grid12"))
    result = run_sweep(sweep, storage=str(tmp_path / "logs"), out=io.StringIO())
    assert result.exit_status == 0
    saved = json.loads((result.root / "scheduler.json").read_text())["decided"]
    assert sorted(saved) == sorted(t.id for t in result.trials)     # every trial judged
    assert not list(result.root.glob("*/stdout.txt"))    # no prints, no stdout.txt
    for t in result.trials:
        rows = [json.loads(line) for line in
                (result.root / t.id / "results.jsonl").read_text().splitlines()]
        done = json.loads((result.root / t.id / "result.json").read_text())
        if t.index % 2 == 0:
            assert t.state == TrialState.TERMINATED and t.last_step == 29, t.id
            assert saved[t.id] == "continue"
        elif t.id.endswith("seed=0"):
            # synchronous: the report of step 7 waited, the trial ended exactly there, with a
            # checkpoint of that step
            assert (t.state, t.reason, t.last_step) == (TrialState.STOPPED,
                                                        "stop-odd: step 7", SYNC_STEP), t.id
            assert rows[-1]["step"] == SYNC_STEP and done["last_step"] == SYNC_STEP
            assert t.checkpoint.endswith(f"ckpt-{SYNC_STEP + 1}")
            assert [a.outcome for a in t.attempts] == [Outcome.STOPPED]
        else:
            # asynchronous: delivered with a poll, the trial stops at a later report
            assert t.state == TrialState.STOPPED and "asynchronously" in t.reason, t.id
            assert ASYNC_STEP <= t.last_step < 29 and rows[-1]["step"] == t.last_step


def test_the_default_searcher_plans_the_grid_and_then_has_nothing_more(sweep_file):
    sweep = load_sweep_file(sweep_file("grid12"))
    searcher = BasicSearcher()
    searcher.setup(sweep.spec)
    assert [t.id for t in searcher.planned()] == [t.id for t in expand_trials(sweep.spec)]
    assert searcher.suggest(0) == searcher.planned()[0].config
    assert searcher.suggest(12) is FINISHED and searcher.state_dict() == {}


def test_a_resumed_attempt_reads_its_checkpoint_once(tmp_path, monkeypatch):
    """The first attempt fails after step 12 (checkpoints after steps 4 and 9); its worker
    reported the checkpoint it wrote, with digest and stat. The driver picks the restore
    point from that report and the new attempt loads it: one full read of the data, none
    to verify it again."""
    calls = []
    first = service.trial.run_attempt(make_task(tmp_path), make_train(fail_at=12, calls=calls))
    assert first.outcome == Outcome.ERROR and first.checkpoint.global_step == 10
    task = make_task(tmp_path, attempt="a2")

    reads = []
    real_open = builtins.open

    def counting_open(file, mode="r", *args, **kwargs):
        if str(file).endswith(".npz") and "r" in mode:
            reads.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    ref = restore_point(task.sweep_dir, task.paths.checkpoints, first.checkpoint)
    assert ref == first.checkpoint
    import dataclasses
    second = service.trial.run_attempt(dataclasses.replace(task, restore=ref),
                                       make_train(calls=calls))
    monkeypatch.setattr(builtins, "open", real_open)
    assert second.outcome == Outcome.FINISHED and calls == [0, 10]
    assert reads == [str(tmp_path / "sweep" / ref.path) + ".npz"]

    # without the worker's report (a driver that died), the driver verifies it in full
    reads.clear()
    monkeypatch.setattr(builtins, "open", counting_open)
    assert restore_point(task.sweep_dir, task.paths.checkpoints, None).global_step == STEPS
    monkeypatch.setattr(builtins, "open", real_open)
    assert len(reads) == 1
