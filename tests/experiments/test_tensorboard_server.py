"""A finished quick sweep, served by a real ``tensorboard`` on 127.0.0.1: through its HTTP
data API every trial is a run with its scalars, its graph and its hparams session."""

import pytest

from service import load
from tests.service.tb_helpers import TensorBoardServer

STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


@pytest.mark.timeout(120)
def test_every_trial_is_a_run_with_scalars_graph_and_hparams(quick_sweep):
    folder = quick_sweep("triangle")
    result = load(folder)
    trial_ids = {t.id for t in result.trials}
    with TensorBoardServer(folder) as tb:
        runs = tb.settled(lambda: tb.get_json("/data/runs"))
        assert trial_ids <= set(runs)
        tags = tb.get_json("/data/plugin/scalars/tags")
        for trial in result.trials:
            assert {"loss", "accuracy", "loss/val", "accuracy/test"} <= set(tags[trial.id])
            points = tb.scalars(trial.id, "loss/val")
            assert points[-1][0] == trial.last_step
            assert points[-1][1] == pytest.approx(trial.last_metrics["loss/val"], rel=1e-6)
            assert len({step for step, _ in points}) == len(points)      # each step once
            graph = tb.get("/data/plugin/graphs/graph", run=trial.id).decode()
            assert 'name: "hidden/MatMul"' in graph and 'input: "hidden/kernel"' in graph
        experiment = tb.settled(lambda: tb.post_json("/data/plugin/hparams/experiment",
                                                     {"experimentName": ""}))
        domains = {h["name"]: h.get("domainDiscrete") for h in experiment["hparamInfos"]}
        assert domains["activation"] == ["sigmoid", "none"] and domains["hidden"] == [3]
        metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert "loss/val" in metrics
        groups = tb.settled(lambda: tb.post_json("/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": STATUSES, "startIndex": 0,
            "sliceSize": 100})["sessionGroups"])
    sessions = {s["name"]: s["status"] for g in groups for s in g["sessions"]}
    assert sessions == {trial_id: "STATUS_SUCCESS" for trial_id in trial_ids}
