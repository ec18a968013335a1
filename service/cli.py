"""The ``gradsweep`` command (also ``python -m service``).

Exit status: 0 every trial TERMINATED or STOPPED; 1 some ended in ERROR (named); 2 usage or
input refused (bad spec, changed spec, not a sweep folder, lock held); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

from service.cluster import ClusterError
from service.results import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, load
from service.spec import SpecError
from service.sweep import load_sweep_file
from service.storage import StorageError, check_storage, read_json


class UsageError(Exception):
    """Input refused before anything ran: exit status 2."""


def _parse_set(items: list[str]) -> dict:
    changes = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected key=value, e.g. --set max_failures=1")
        try:
            changes[key] = json.loads(raw)
        except json.JSONDecodeError:
            changes[key] = raw
    return changes


def _run(sweep, **options) -> int:
    from service.driver import run_sweep
    return run_sweep(sweep, **options).exit_status   # the trials in ERROR are named by it


def cmd_launch(args) -> int:
    sweep = load_sweep_file(args.file)
    changes = _parse_set(args.set)
    if args.storage is not None:
        changes["storage"] = args.storage
    if changes:
        sweep = sweep.replace(**changes)
    check_storage(sweep.spec.storage)
    return _run(sweep, storage=sweep.spec.storage, address=args.address or None,
                max_concurrent=args.max_concurrent, restart=args.restart)


def _sweep_folder(path: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{path!r} is not a folder")
    if not (folder / "sweep.json").is_file():
        raise UsageError(f"{path!r} is not a sweep folder (no sweep.json)")
    return folder


def cmd_resume(args) -> int:
    folder = _sweep_folder(args.dir)
    record = read_json(folder / "sweep.json", "sweep record")
    source = record.get("source_file") if isinstance(record, dict) else None
    if not source:
        raise UsageError(f"{str(folder / 'sweep.json')!r} does not name its sweep file")
    if not Path(source).is_file():
        raise UsageError(f"the sweep file {source!r} recorded in {str(folder / 'sweep.json')!r} "
                         "no longer exists; restore it at that path to resume")
    sweep = load_sweep_file(source)
    if sweep.name != folder.name:
        raise UsageError(f"the sweep file {source!r} now defines sweep {sweep.name!r}, but the "
                         f"folder is {folder.name!r}")
    return _run(sweep, storage=str(folder.parent), address=args.address or None,
                max_concurrent=args.max_concurrent, resume=True,
                retry_errored=args.retry_errored)


def cmd_status(args) -> int:
    result = load(_sweep_folder(args.dir))
    counts = ", ".join(f"{v} {k}" for k, v in result.counts().items() if v)
    print(f"sweep {result.name}: {len(result.trials)} trials ({counts or 'none started'})")
    print(result.table())
    return EXIT_OK


def cmd_best(args) -> int:
    result = load(_sweep_folder(args.dir))
    best = result.best(args.scope)
    if best is None:
        if args.json:
            print("null")
        else:
            print(f"sweep {result.name}: no trial has reported {result.metric!r} yet")
        return EXIT_OK
    if args.json:
        print(json.dumps(best.to_dict()))
    else:
        print(f"best trial {best.trial}: {best.metric} = {best.value:.6g} at step {best.step} "
              f"({best.mode}, scope {args.scope})")
        print(f"config: {json.dumps(best.config)}")
        print(f"checkpoint: {best.checkpoint}")
    return EXIT_OK


BEST_RUNS = 10    # the runs a link selects: TensorBoard enables at most 40 runs by default


def best_runs_links(logdir: Path, url: str, count: int = BEST_RUNS) -> list[str]:
    """For each sweep in ``logdir`` (the folder itself or its sub-folders), a line with a
    link to TensorBoard's scalars whose run filter selects its best ``count`` trials by the
    sweep's metric (the best always included)."""
    folders = [logdir] if (logdir / "sweep.json").is_file() else \
        sorted(p for p in logdir.iterdir() if (p / "sweep.json").is_file())
    lines = []
    for folder in folders:
        try:
            result = load(folder)
        except StorageError:
            continue
        best = [t for t in result.ranked() if result.trial_value(t, "last")[0] is not None]
        if not best:
            continue
        best = best[:count]
        prefix = "" if folder == logdir else f"{folder.name}/"
        runs = "|".join(re.escape(prefix + t.id) for t in best)
        link = f"{url}#scalars&regexInput={urllib.parse.quote(f'^({runs})$', safe='')}"
        lines.append(f"  sweep {result.name}: its best {len(best)} of {len(result.trials)} "
                     f"trials by {result.metric} ({result.mode}):\n    {link}")
    return lines


def cmd_tensorboard(args) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        raise UsageError(f"{args.dir!r} is not a folder")
    exe = shutil.which("tensorboard", path=str(Path(sys.executable).parent)) or \
        shutil.which("tensorboard")
    command = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    command += ["--logdir", str(folder), "--host", args.host, "--port", str(args.port)]
    url = f"http://{args.host}:{args.port}/"
    print(f"TensorBoard at {url} (Ctrl-C to stop)", flush=True)
    links = best_runs_links(folder, url)
    if links:
        print("\n".join(["Open a sweep's best trials (TensorBoard shows runs by default only "
                         "when at most 40 match its run filter):", *links,
                         "  Clear the run filter (the regex box above the runs) to see every "
                         "trial."]), flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradsweep", description="Hyperparameter sweeps of numpy networks on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("launch", help="run a sweep file (resumes it if it ran before)")
    p.add_argument("file", help="the sweep file, e.g. experiments/triangle.py")
    p.add_argument("--storage", help="where sweeps are written (default: the spec's, logs)")
    p.add_argument("--address", help="a Ray cluster to join (default: an embedded local Ray; "
                                     "RAY_ADDRESS is honoured)")
    p.add_argument("--max-concurrent", type=_positive_int, help="trials at once")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change a spec option, e.g. --set stop.max_steps=100")
    p.add_argument("--restart", action="store_true",
                   help="start over when the spec changed (the old folder is kept aside)")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("resume", help="resume the sweep in a folder")
    p.add_argument("dir", help="the sweep's folder, e.g. logs/triangle")
    p.add_argument("--address")
    p.add_argument("--max-concurrent", type=_positive_int)
    p.add_argument("--retry-errored", action="store_true", help="run ERROR trials again")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("status", help="the trials table of a sweep folder")
    p.add_argument("dir")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("best", help="the best trial of a sweep folder")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.add_argument("--scope", choices=("last", "all"), default="last",
                   help="a trial's last reported value (default) or its best one")
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("tensorboard", help="serve TensorBoard on 127.0.0.1")
    p.add_argument("dir", nargs="?", default="logs")
    p.add_argument("--port", type=_positive_int, default=6006)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_tensorboard)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, SpecError, StorageError, ClusterError) as err:
        print(f"gradsweep: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gradsweep: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
