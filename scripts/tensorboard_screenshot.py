"""Screenshots of a real TensorBoard showing a finished sweep: the Scalars, HParams and Graphs
tabs, saved as PNG files (for the documentation; run by hand, not in CI).

Starts ``tensorboard`` on a free port of 127.0.0.1 over the sweep's folder, waits until it
serves every trial as a run, then photographs each tab with headless Chromium (Debian's
``chromium`` package: ``apt-get install -y chromium``) using a fresh, throw-away profile and
no background networking. TensorBoard's whole process group is stopped at the end.

    python scripts/tensorboard_screenshot.py logs/spirals --runs relu --tags /val
    python scripts/tensorboard_screenshot.py logs/two_inputs --tabs graphs

writes ``docs/tensorboard_<tab>.png`` (``--out`` to change the folder). ``--runs`` and
``--tags`` are regular expressions filling the Scalars tab's run and tag filters; the Graphs
tab shows the first trial's graph.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from tensorboard_server import TensorBoardServer   # beside this script

TABS = ("timeseries", "scalars", "hparams", "graphs")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--hide-scrollbars")


def wait_for_runs(server: TensorBoardServer, expected: set[str],
                  timeout: float = 60.0) -> None:
    """Until the server has loaded every expected run (it loads in the background)."""
    deadline = time.monotonic() + timeout
    while not expected <= set(server.get_json("/data/runs")):
        if time.monotonic() > deadline:
            missing = sorted(expected - set(server.get_json("/data/runs")))
            raise RuntimeError(f"tensorboard did not load runs {missing} in {timeout} s")
        time.sleep(0.5)


def tab_url(base: str, tab: str, runs: str | None, tags: str | None) -> str:
    """The tab's address; the Scalars filters live in the URL's fragment."""
    fragment = [tab]
    if tab == "scalars":
        for key, value in (("regexInput", runs), ("tagFilter", tags)):
            if value:
                fragment.append(f"{key}={urllib.parse.quote(value, safe='')}")
    return f"{base}/#{'&'.join(fragment)}"


def screenshot(chromium: str, url: str, path: Path, size: tuple[int, int],
               wait_ms: int) -> None:
    """Load ``url`` in headless Chromium with a fresh profile and save a PNG of the window."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}",
                   f"--screenshot={path}", url]
        if path.exists():
            path.unlink()
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120)
    if proc.returncode != 0 or not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot of {url} (exit status "
                           f"{proc.returncode}):\n{proc.stderr[-2000:]}")


def trial_runs(sweep: Path) -> set[str]:
    """The sweep's trials: its sub-folders holding event files."""
    return {p.name for p in sweep.iterdir()
            if p.is_dir() and any("tfevents" in f.name for f in p.iterdir())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="a finished sweep's folder, e.g. logs/spirals")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the PNGs go")
    parser.add_argument("--tabs", nargs="+", choices=TABS, default=list(TABS))
    parser.add_argument("--runs", help="Scalars tab: show only runs matching this regex")
    parser.add_argument("--tags", help="Scalars tab: show only tags matching this regex")
    parser.add_argument("--size", default="1600x1000", help="window size, WIDTHxHEIGHT")
    parser.add_argument("--wait-ms", type=int, default=20000,
                        help="virtual time the page gets to load before the picture")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args(argv)

    if not (args.sweep / "sweep.json").is_file():
        parser.error(f"{args.sweep} is not a sweep folder (no sweep.json)")
    if not shutil.which(args.chromium):
        parser.error(f"no Chromium at {args.chromium!r}: apt-get install -y chromium")
    width, _, height = args.size.partition("x")
    size = (int(width), int(height))
    expected = trial_runs(args.sweep)
    if not expected:
        parser.error(f"{args.sweep} has no trial with event files yet")
    args.out.mkdir(parents=True, exist_ok=True)

    with TensorBoardServer(args.sweep, start_timeout=60.0) as server:
        wait_for_runs(server, expected)
        print(f"TensorBoard at {server.url} serves {len(expected)} trials of {args.sweep}")
        for tab in args.tabs:
            path = args.out / f"tensorboard_{tab}.png"
            screenshot(args.chromium, tab_url(server.url, tab, args.runs, args.tags),
                       path.resolve(), size, args.wait_ms)
            print(f"{tab}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
