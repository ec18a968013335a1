"""The fast path's correctness: what makes sweeps cheap must not change what they record.

Speeds themselves are measured in benchmarks/sweep_vs_tune.py, never asserted here.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_a_worker_starts_without_importing_torch_and_torch_still_imports_after():
    # tensorboardX imports torch (about a second) unless kept from it; a user's train that
    # imports torch must still get the real one.
    code = ("import sys, service.worker, service.driver\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "import tensorboardX.writer, torch\n"
            "assert torch.zeros(2).sum().item() == 0.0\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def run_python(code: str, fake_torch_in=None) -> None:
    """Run ``code`` in a fresh interpreter, with a stand-in torch package (quick to import)
    made in folder ``fake_torch_in`` when given, and check it succeeds."""
    env = dict(os.environ)
    if fake_torch_in is not None:
        (fake_torch_in / "torch").mkdir()
        (fake_torch_in / "torch" / "__init__.py").write_text("class Tensor:\n    pass\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake_torch_in),
                                                          env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr


def test_a_torch_imported_before_the_service_is_the_one_tensorboardx_uses(tmp_path):
    run_python("import torch, service.events, tensorboardX.writer\n"
               "assert tensorboardX.writer.numpy_compatible is torch.Tensor\n", tmp_path)


def test_without_torch_the_service_imports_and_torch_stays_missing():
    run_python(textwrap.dedent("""
        import sys

        class NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    raise ModuleNotFoundError("No module named 'torch'", name="torch")

        sys.meta_path.insert(0, NotInstalled())
        import numpy, service.events, tensorboardX.writer
        assert tensorboardX.writer.numpy_compatible is numpy.ndarray
        try:
            import torch
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError("torch imported")
        """))


def test_torch_imported_by_another_thread_while_the_service_imports_works(tmp_path):
    # The service keeps torch from its own import of tensorboardX only: another thread that
    # imports torch meanwhile (as tensorboardX's modules load) gets it.
    run_python(textwrap.dedent("""
        import importlib.machinery, sys, threading
        outcome = []

        def import_torch():
            try:
                import torch
                outcome.append(torch.Tensor.__name__)
            except ImportError as err:
                outcome.append(repr(err))

        class MeanwhileImportTorch:
            # Runs import_torch in a thread as tensorboardX.writer starts to load (not in
            # find_spec itself, which runs under the global import lock).
            def find_spec(self, name, path=None, target=None):
                if name != "tensorboardX.writer":
                    return None
                spec = importlib.machinery.PathFinder.find_spec(name, path)
                load = spec.loader.exec_module

                def exec_module(module):
                    thread = threading.Thread(target=import_torch)
                    thread.start()
                    thread.join()
                    load(module)
                spec.loader.exec_module = exec_module
                return spec

        sys.meta_path.insert(0, MeanwhileImportTorch())
        import service.events
        assert outcome == ["Tensor"], outcome
        assert "torch" in sys.modules
        """), tmp_path)


# ----------------------------------------------------------------- live items

def test_live_items_drained_while_appended_come_out_once_each_in_order():
    from service.worker import LiveItems

    live, total, drained = LiveItems(), 20000, []
    producer = threading.Thread(target=lambda: [live.append(i) for i in range(total)])
    producer.start()
    while producer.is_alive():
        live.wait(0.01)
        drained += live.drain()
    producer.join()
    drained += live.drain()
    assert drained == list(range(total))


def test_a_waiting_poll_wakes_on_an_item_or_on_wake_not_at_its_timeout():
    from service.worker import LiveItems

    live = LiveItems()
    for poke in (lambda: live.append("report"), live.wake):
        timer = threading.Timer(0.05, poke)
        start = time.monotonic()
        timer.start()
        live.wait(30)
        assert time.monotonic() - start < 10
        timer.join()
        live.drain()
    live.append("queued")
    start = time.monotonic()
    live.wait(30)      # an item already queued: no wait at all
    assert time.monotonic() - start < 10 and live.drain() == ["queued"]


# ----------------------------------------------------------------- streaming through the driver

REPORTS = 3000


def chatty_train(config, trial):
    """Many reports in quick bursts: the driver must see each once, in order, while live."""
    for step in range(REPORTS):
        trial.report(step, loss=float(REPORTS - step), seed=float(config["seed"]))
        if step % 50 == 49:
            time.sleep(0.01)


def test_streamed_reports_reach_the_driver_once_each_in_order_and_in_batches(
        local_ray, tmp_path, monkeypatch):
    import io

    from ray import cloudpickle

    from service import Sweep, grid
    from service.driver import Controller, run_sweep
    from service.messages import Report
    from service.storage import SweepState

    folds = []    # (trial id, streamed while running?, [steps])
    original = Controller.fold

    def fold(self, run, items):
        steps = [item.step for item in items if isinstance(item, Report)]
        if steps:
            running = any(r is run for r in self.running.values())
            folds.append((run.record.id, running, steps))
        return original(self, run, items)

    monkeypatch.setattr(Controller, "fold", fold)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        sweep = Sweep(name="chatty", train=chatty_train, space={"seed": grid([0, 1])},
                      metric="loss", mode="min", max_concurrent=2)
        result = run_sweep(sweep, storage=str(tmp_path), out=io.StringIO())
        status = result.exit_status
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert status == 0
    for trial in result.trials:
        mine = [f for f in folds if f[0] == trial.id]
        assert [s for f in mine for s in f[2]] == list(range(REPORTS)), trial.id
        live = [f for f in mine if f[1]]
        # reports streamed while the trial ran, several to a Ray call
        assert len(live) >= 2 and sum(len(f[2]) for f in live) > len(live), trial.id
        assert trial.last_step == REPORTS - 1 and trial.best_metrics["step"] == REPORTS - 1
    saved = SweepState.load(tmp_path / "chatty" / "state.json").by_id()
    assert {t.last_step for t in saved.values()} == {REPORTS - 1}


# ----------------------------------------------------------------- fsyncs only for new data

def test_a_sync_with_nothing_new_written_costs_no_fsync_and_one_with_something_does(
        tmp_path, monkeypatch):
    import os

    from service.events import RunWriter

    writer = RunWriter(tmp_path)
    writer.scalars(0, {"loss": 1.0})
    synced, real_fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino),
                                                 real_fsync(fd)))
    writer.sync()
    file = writer.path.stat().st_ino
    assert synced.count(file) == 1
    writer.sync()
    writer.close()
    assert synced.count(file) == 1        # nothing written since: nothing to make durable
    with RunWriter(tmp_path) as again:
        again.sync()
        again.scalars(1, {"loss": 0.5})
        again.sync()
    assert synced.count(again.path.stat().st_ino) == 2


# ----------------------------------------------------------------- a Ray started here

def test_a_one_node_ray_this_process_started_counts_as_embedded(local_ray):
    # Its node shares this machine's files: no per-sweep storage check task is needed.
    from service import cluster

    with cluster.connect("local") as info:
        assert (info.embedded, info.owned) == (True, False)
