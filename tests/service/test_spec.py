"""Sweep specs: validation names the field, expansion is a pure function of the spec."""

import json

import pytest

from service.spec import (SpecError, choice, grid, loguniform,
                          randint, spec_differences, sweep_record, uniform)
from service.sweep import Sweep, load_sweep_file


def train(config, trial):
    pass


def make(**overrides):
    kw = dict(name="tri", train=train, space={"lr": grid([0.01, 0.1]), "hidden": grid([3, 8])},
              metric="loss")
    kw.update(overrides)
    return Sweep(**kw)


def test_grid_product_ids_are_readable_unique_and_sorted():
    trials = make(space={"lr": grid([0.01, 0.1, 1.0]), "hidden": grid([3, 8]),
                         "act": grid(["relu", "tanh"])}).trials()
    ids = [t.id for t in trials]
    assert len(trials) == 12 and len(set(ids)) == 12 and ids == sorted(ids)
    assert ids[0] == "00_lr=0.01,hidden=3,act=relu"
    assert all("/" not in i for i in ids)
    assert {(t.config["lr"], t.config["hidden"], t.config["act"]) for t in trials} == {
        (lr, h, a) for lr in (0.01, 0.1, 1.0) for h in (3, 8) for a in ("relu", "tanh")}


def test_sampled_trials_are_a_pure_function_of_the_spec():
    space = {"lr": loguniform(1e-4, 1e-1), "units": randint(4, 9), "opt": choice(["sgd", "adam"]),
             "wd": uniform(0.0, 0.5), "seed": grid([0, 1])}
    a = make(space=space, num_samples=3, seed=7).trials()
    b = make(space=space, num_samples=3, seed=7).trials()
    c = make(space=space, num_samples=3, seed=8).trials()
    assert [t.config for t in a] == [t.config for t in b] and [t.id for t in a] == [t.id for t in b]
    assert [t.config for t in a] != [t.config for t in c]
    assert len(a) == 6
    assert repr(make(space=space, num_samples=3)).startswith("<Sweep 'tri': 6 trials")
    for t in a:
        assert 1e-4 <= t.config["lr"] < 1e-1 and 4 <= t.config["units"] < 9
        assert t.config["opt"] in ("sgd", "adam") and 0 <= t.config["wd"] < 0.5
    # sampled floats are rounded for display only
    assert "lr=" in a[0].id and repr(a[0].config["lr"]) not in a[0].id


def test_long_ids_are_shortened_with_a_hash_and_stay_unique():
    space = {f"a_very_long_hyperparameter_name_{i}": grid([f"value-{i}-" + "x" * 30, "y"])
             for i in range(4)}
    ids = [t.id for t in make(space=space).trials()]
    assert len(set(ids)) == len(ids) and all(len(i) <= 120 for i in ids)


def test_unsafe_characters_are_replaced():
    (t,) = make(space={"path": grid(["a/b c"])}).trials()
    assert t.id == "0_path=a_b_c"


@pytest.mark.parametrize("overrides, field", [
    (dict(space={"lr": uniform(5, 1)}), "space.lr"),
    (dict(space={"lr": grid([])}), "space.lr.values"),
    (dict(space={"lr": loguniform(0, 1)}), "space.lr"),
    (dict(space={"lr": [0.1, 0.2]}), "space.lr"),
    (dict(space={}), "space"),
    (dict(max_failures=-1), "max_failures"),
    (dict(mode="avg"), "mode"),
    (dict(name="a/b"), "name"),
    (dict(name=".."), "name"),
    (dict(name="a\x00b"), "name"),
    (dict(foo=1), "foo: unknown option"),
    (dict(stop={"max_step": 3}), "stop.max_step: unknown option"),
    (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(metric=""), "metric"),
    (dict(on_nan="ignore"), "on_nan"),
    (dict(train=lambda config: None), "train"),
    (dict(train="train"), "train"),
])
def test_bad_specs_name_the_field(overrides, field):
    with pytest.raises(SpecError) as err:
        make(**overrides)
    assert str(err.value).startswith(field), str(err.value)
    assert "\n" not in str(err.value)


def test_hash_ignores_run_options_and_notices_spec_changes():
    base = make()
    assert base.spec_hash() == make(max_concurrent=4, storage="elsewhere").spec_hash()
    changed = make(space={"lr": grid([0.01, 0.5]), "hidden": grid([3, 8])})
    assert changed.spec_hash() != base.spec_hash()
    diffs = spec_differences(base.spec_dict(), changed.spec_dict())
    assert diffs == ['space.lr.values: [0.01, 0.1] -> [0.01, 0.5]']
    assert make().replace(**{"stop.max_steps": 5}).spec.stop.max_steps == 5
    with pytest.raises(SpecError, match="max_failures"):
        make().replace(max_failures=-2)


def test_sweep_file_loads_from_anywhere_and_records_its_path(tmp_path):
    f = tmp_path / "my sweep.py"
    f.write_text("from service import Sweep, grid\n"
                 "def train(config, trial):\n    return config['x']\n"
                 "sweep = Sweep(name='s', train=train, space={'x': grid([1, 2])}, metric='m')\n"
                 "if __name__ == '__main__':\n    raise SystemExit('must not run')\n")
    sweep = load_sweep_file(f)
    assert sweep.source_file == str(f.resolve()) and sweep.train_name == "train"
    assert sweep.train({"x": 2}, None) == 2
    record = sweep_record(sweep.spec, sweep.source_file, sweep.train_name)
    assert json.loads(json.dumps(record))["spec_hash"] == sweep.spec_hash()


@pytest.mark.parametrize("text, message", [
    ("def broken(:\n", "syntax error"),
    ("x = 1\n", "defines no Sweep"),
    ("from service import Sweep, grid\ndef train(c, t): pass\n"
     "a = Sweep(name='a', train=train, space={'x': grid([1])}, metric='m')\n"
     "b = Sweep(name='b', train=train, space={'x': grid([1])}, metric='m')\n", "more than one"),
    ("from service import Sweep, grid\ndef train(c, t): pass\n"
     "a = Sweep(name='a', train=train, space={'x': grid([1])}, metric='m', bogus=3)\n",
     "bogus: unknown option"),
    ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
])
def test_bad_sweep_files_are_refused_with_the_file_named(tmp_path, text, message):
    f = tmp_path / "bad.py"
    f.write_text(text)
    with pytest.raises(SpecError) as err:
        load_sweep_file(f)
    assert str(f) in str(err.value) and message in str(err.value)


def test_missing_sweep_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_sweep_file(tmp_path / "nope.py")
