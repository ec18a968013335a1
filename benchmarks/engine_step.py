"""Time one training step of the engine against PyTorch eager, plain numpy and the matmul floor.

One step = forward + backward + optimizer update on a fixed float32 batch of 128 rows:

- ``engine``: built with the public API (``layers.mlp``, the fused losses,
  ``optim.SGD/Adam(...).minimize``), run with ``Session.run([train, loss], feed)``;
- ``torch``: PyTorch eager (``nn.Sequential``, ``BCEWithLogitsLoss``/``CrossEntropyLoss``,
  ``torch.optim``), same initial weights, same data, same number of threads;
- ``numpy``: a straightforward hand-written numpy step (fresh temporaries every step);
- ``floor``: the step's matrix multiplies alone, into preallocated outputs.

for three networks (2-16-1 sigmoid + log-loss, 64-128-128-10 and 784-256-256-10 ReLU + softmax
cross-entropy), SGD and Adam, at 1 and 2 BLAS threads (threadpoolctl, ``torch.set_num_threads``).

Implementations are timed in alternating blocks, repeated; the figure is the median time per
step over the blocks. After a block, OpenBLAS's and PyTorch's worker threads keep spinning
for a while and slow whatever runs next on a 2-core machine, so every block is preceded by a
pause (``--pause``). ``--check-alone`` also times each implementation in its own process,
without alternation, to show that the alternating figures are not skewed. At 2 threads the
same step can differ by up to 40% from one minute to the next (engine and floor alike, a
state of the shared machine), so ``--processes N`` repeats the alternating measurement in N
fresh processes, one after the other, and reports the median of each figure and of each
ratio, a ratio being taken within one process.

    python benchmarks/engine_step.py                 # full table (a few minutes)
    python benchmarks/engine_step.py --json          # machine-readable
    python benchmarks/engine_step.py --check-alone   # plus each library in its own process
    python benchmarks/engine_step.py --processes 5   # plus medians over 5 fresh processes

PyTorch comes from the ``bench`` extra (``torch==2.13.0``); without it the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import engine as en

try:
    import torch
except ImportError:  # the bench extra is not installed: time the rest
    torch = None

BATCH = 128
NETWORKS = {
    # name: (layer sizes, hidden activation, loss)
    "2-16-1": ((2, 16, 1), "sigmoid", "sigmoid"),
    "64-128-128-10": ((64, 128, 128, 10), "relu", "softmax"),
    "784-256-256-10": ((784, 256, 256, 10), "relu", "softmax"),
}
OPTIMIZERS = {"sgd": {"lr": 0.01}, "adam": {"lr": 0.001}}
ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
IMPLEMENTATIONS = ("engine", "torch", "numpy", "floor")
# Targets of the speed issue: engine / torch per network, engine / floor on the large one.
TARGET_VS_TORCH = {"2-16-1": 0.4, "64-128-128-10": 0.7, "784-256-256-10": 0.9}
TARGET_VS_FLOOR = {"784-256-256-10": 1.15}


# ----------------------------------------------------------------- problem data

def make_data(network: str, seed: int = 0):
    """A fixed batch: inputs ``(128, in)`` float32 and labels (float ``(128, 1)`` for the
    log-loss, int64 class ids ``(128,)`` for the softmax)."""
    sizes, _, loss = NETWORKS[network]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, sizes[0])).astype(np.float32)
    if loss == "sigmoid":
        y = (rng.random((BATCH, 1)) < 0.5).astype(np.float32)
    else:
        y = rng.integers(0, sizes[-1], BATCH).astype(np.int64)
    return x, y


# ----------------------------------------------------------------- the engine

def build_engine(network: str, optimizer: str, x_data, y_data):
    """The engine's step built with the public API; returns (step, initial variables)."""
    sizes, activation, loss_kind = NETWORKS[network]
    x = en.placeholder((None, sizes[0]), name="x")
    if loss_kind == "sigmoid":
        y = en.placeholder((None, 1), name="y")
    else:
        y = en.placeholder((None,), dtype=np.int64, name="y")
    logits = en.layers.mlp(x, sizes[1:], activation=activation, name="mlp")
    if loss_kind == "sigmoid":
        loss = en.losses.sigmoid_cross_entropy(logits, y)
    else:
        loss = en.losses.softmax_cross_entropy(logits, y)
    if optimizer == "sgd":
        train = en.optim.SGD(**OPTIMIZERS["sgd"]).minimize(loss)
    else:
        train = en.optim.Adam(**OPTIMIZERS["adam"], **ADAM).minimize(loss)
    sess = en.Session(seed=0)
    sess.attach(train)
    values = sess.variables()
    weights = [(values[f"mlp/layer_{i}/kernel"], values[f"mlp/layer_{i}/bias"])
               for i in range(len(sizes) - 1)]
    fetches, feed = [train, loss], {x: x_data, y: y_data}
    run = sess.run

    def step():
        run(fetches, feed)
    return step, weights


# ----------------------------------------------------------------- PyTorch eager

def build_torch(network: str, optimizer: str, x_data, y_data, weights):
    _, activation, loss_kind = NETWORKS[network]
    layers = []
    for i, (kernel, bias) in enumerate(weights):
        linear = torch.nn.Linear(kernel.shape[0], kernel.shape[1])
        with torch.no_grad():  # the engine's initial values: same init scale, same start
            linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
            linear.bias.copy_(torch.from_numpy(bias))
        layers.append(linear)
        if i < len(weights) - 1:
            layers.append(torch.nn.Sigmoid() if activation == "sigmoid" else torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    criterion = (torch.nn.BCEWithLogitsLoss() if loss_kind == "sigmoid"
                 else torch.nn.CrossEntropyLoss())
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), **OPTIMIZERS["sgd"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=OPTIMIZERS["adam"]["lr"],
                               betas=(ADAM["beta1"], ADAM["beta2"]), eps=ADAM["eps"])
    x, y = torch.from_numpy(x_data), torch.from_numpy(y_data)

    def step():
        opt.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
    return step


# ----------------------------------------------------------------- hand-written numpy

def build_numpy(network: str, optimizer: str, x, y, weights):
    """The straightforward numpy step: expressions with fresh temporaries, float32 throughout."""
    sizes, activation, loss_kind = NETWORKS[network]
    params = [p.copy() for layer in weights for p in layer]
    n = x.shape[0]
    if loss_kind == "softmax":
        onehot = np.zeros((n, sizes[-1]), np.float32)
        onehot[np.arange(n), y] = 1
    lr = OPTIMIZERS[optimizer]["lr"]
    b1, b2, eps = ADAM["beta1"], ADAM["beta2"], ADAM["eps"]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    t = [0]

    def update(grads):
        if optimizer == "sgd":
            for p, g in zip(params, grads):
                p -= lr * g
            return
        t[0] += 1
        c1, c2 = 1 - b1 ** t[0], 1 - b2 ** t[0]
        for p, g, (m, v) in zip(params, grads, moments):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (lr / c1) * m / (np.sqrt(v) / np.sqrt(c2) + eps)

    def step():
        acts = [x]
        for i in range(0, len(params), 2):
            z = acts[-1] @ params[i] + params[i + 1]
            if i + 2 < len(params):
                z = 1 / (1 + np.exp(-z)) if activation == "sigmoid" else np.maximum(z, 0)
            acts.append(z)
        logits = acts.pop()
        if loss_kind == "sigmoid":
            p = 1 / (1 + np.exp(-logits))
            loss = np.mean(np.logaddexp(0, logits) - logits * y)
            delta = (p - y) / n
        else:
            shifted = logits - logits.max(axis=1, keepdims=True)
            e = np.exp(shifted)
            p = e / e.sum(axis=1, keepdims=True)
            loss = -np.mean(np.log(p[np.arange(n), y]))
            delta = (p - onehot) / n
        grads = [None] * len(params)
        for i in reversed(range(0, len(params), 2)):
            a = acts[i // 2]
            grads[i], grads[i + 1] = a.T @ delta, delta.sum(axis=0)
            if i:
                da = delta @ params[i].T
                delta = da * a * (1 - a) if activation == "sigmoid" else da * (a > 0)
        update(grads)
        return loss
    return step


# ----------------------------------------------------------------- the matmul floor

def build_floor(network: str, x, weights):
    """Only the step's matrix multiplies: forward ``a @ W``, backward ``aᵀ δ`` for every
    layer and ``δ Wᵀ`` for all but the first, into preallocated outputs."""
    kernels = [k.copy() for k, _ in weights]
    rng = np.random.default_rng(1)
    acts = [x] + [np.empty((x.shape[0], k.shape[1]), np.float32) for k in kernels]
    # Realistic magnitudes (no NaN or denormals) for the backward operands.
    deltas = [rng.standard_normal(a.shape).astype(np.float32) * 0.01 for a in acts]
    dkernels = [np.empty_like(k) for k in kernels]

    def step():
        for i, k in enumerate(kernels):
            np.matmul(acts[i], k, out=acts[i + 1])
        for i in reversed(range(len(kernels))):
            np.matmul(acts[i].T, deltas[i + 1], out=dkernels[i])
            if i:
                np.matmul(deltas[i + 1], kernels[i].T, out=deltas[i])
    return step


def build_all(network: str, optimizer: str, names) -> dict[str, Callable[[], None]]:
    x, y = make_data(network)
    engine_step, weights = build_engine(network, optimizer, x, y)
    steps = {"engine": engine_step}
    if "torch" in names and torch is not None:
        steps["torch"] = build_torch(network, optimizer, x, y, weights)
    if "numpy" in names:
        steps["numpy"] = build_numpy(network, optimizer, x, y, weights)
    if "floor" in names:
        steps["floor"] = build_floor(network, x, weights)
    return {k: v for k, v in steps.items() if k in names}


# ----------------------------------------------------------------- timing

def time_block(step: Callable[[], None], n: int) -> float:
    """Seconds per step over ``n`` consecutive steps."""
    clock = time.perf_counter
    start = clock()
    for _ in range(n):
        step()
    return (clock() - start) / n


def set_threads(threads: int) -> None:
    """BLAS (and OpenMP) threads for numpy and the engine, and PyTorch's threads."""
    threadpool_limits(limits=threads)
    if torch is not None:
        torch.set_num_threads(threads)


def measure(configs: list[tuple[int, dict]], repeats: int, block_seconds: float,
            pause: float) -> list[dict]:
    """Median seconds per step of every implementation of every (threads, steps) config.

    Blocks alternate across implementations *and* configurations: each repeat runs one
    block of everything (both orders rotate from one repeat to the next), so a burst of
    outside load lands on a few blocks of every figure rather than on all blocks of one.
    """
    counts = []
    for threads, steps in configs:  # warm up, and size each block to ~block_seconds
        set_threads(threads)
        counts.append({})
        for name, step in steps.items():
            time_block(step, 20)
            counts[-1][name] = max(5, int(block_seconds / time_block(step, 20)))
    samples = [{name: [] for name in steps} for _, steps in configs]
    order = list(range(len(configs)))
    for r in range(repeats):
        for c in order[r % len(order):] + order[:r % len(order)]:
            threads, steps = configs[c]
            set_threads(threads)
            names = list(steps)
            for name in names[r % len(names):] + names[:r % len(names)]:
                time.sleep(pause)  # let the previous block's spinning threads go to sleep
                samples[c][name].append(time_block(steps[name], counts[c][name]))
        if r == 0:
            print(f"  {repeats} rounds of {sum(len(s) for _, s in configs)} blocks; "
                  "round 1 done", file=sys.stderr, flush=True)
    return [{name: statistics.median(v) for name, v in per.items()} for per in samples]


def blas_description() -> str:
    parts = []
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            parts.append(f"{info.get('internal_api')} {info.get('version')} "
                         f"({info.get('architecture', '?')} kernel, "
                         f"{info.get('threading_layer', '?')} threads, "
                         f"{os.path.basename(info.get('filepath', '?'))})")
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def run_configs(args, names) -> list[dict]:
    keys = [(threads, network, optimizer) for threads in args.threads
            for network in args.networks for optimizer in args.optimizers]
    configs = []
    for threads, network, optimizer in keys:
        set_threads(threads)
        configs.append((threads, build_all(network, optimizer, names)))
    rows = []
    for (threads, network, optimizer), medians in zip(
            keys, measure(configs, args.repeats, args.block, args.pause)):
        row = {"network": network, "optimizer": optimizer, "threads": threads}
        row.update({f"{k}_us": v * 1e6 for k, v in medians.items()})
        rows.append(row)
    return rows


def add_ratios(row: dict) -> dict:
    engine = row.get("engine_us")
    if engine is not None and row.get("torch_us"):
        row["engine_over_torch"] = engine / row["torch_us"]
        row["target_vs_torch"] = TARGET_VS_TORCH[row["network"]]
    if engine is not None and row.get("floor_us"):
        row["engine_over_floor"] = engine / row["floor_us"]
        row["target_vs_floor"] = TARGET_VS_FLOOR.get(row["network"])
    return row


def rows_of_fresh_process(args, *options: str, pause: float) -> list[dict]:
    """The table rows of this script run again in a new process, with the same networks,
    optimizers, threads, repeats and block length, and ``options``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--json", "--repeats", str(args.repeats),
           "--block", str(args.block), "--pause", str(pause),
           "--threads", *map(str, args.threads), "--networks", *args.networks,
           "--optimizers", *args.optimizers, *options]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["rows"]


def alone(args) -> list[dict]:
    """Each implementation timed in its own process, without alternation or pauses."""
    merged: dict[tuple, dict] = {}
    for name in args.implementations:
        if name == "torch" and torch is None:
            continue
        for row in rows_of_fresh_process(args, "--only", name, pause=0):
            key = (row["network"], row["optimizer"], row["threads"])
            merged.setdefault(key, {"network": key[0], "optimizer": key[1],
                                    "threads": key[2]})[f"{name}_us"] = row[f"{name}_us"]
    return [add_ratios(r) for r in merged.values()]


def across_processes(args, count: int) -> list[dict]:
    """The alternating measurement run in ``count`` fresh processes, one after the other;
    per configuration, the median over processes of each implementation's time and of each
    ratio (a ratio is taken within one process, whose blocks alternate within seconds: at 2
    threads the same step differs by up to 40% from one minute to the next)."""
    per_key: dict[tuple, list[dict]] = {}
    for _ in range(count):
        for row in rows_of_fresh_process(args, "--implementations", *args.implementations,
                                         pause=args.pause):
            per_key.setdefault((row["network"], row["optimizer"], row["threads"]), []).append(row)
    merged = []
    for (network, optimizer, threads), rows in per_key.items():
        row = {"network": network, "optimizer": optimizer, "threads": threads,
               "processes": len(rows)}
        for key in rows[0]:
            values = [r[key] for r in rows if isinstance(r.get(key), float)]
            if key.endswith(("_us", "_over_torch", "_over_floor")) and values:
                row[key] = statistics.median(values)
                row[key + "_range"] = [min(values), max(values)]
            elif key.startswith("target_"):
                row[key] = rows[0][key]
        merged.append(row)
    return merged


def floor_margins(rows: list[dict]) -> list[dict]:
    """Per network with a floor target and thread count: what Adam's update costs beyond
    SGD's (engine Adam - engine SGD, same run) against what the target leaves above the
    matrix multiplies for all the rest of a step (target x floor - floor)."""
    by_key = {(r["network"], r["threads"], r["optimizer"]): r for r in rows}
    margins = []
    for (network, threads, optimizer), adam in by_key.items():
        sgd = by_key.get((network, threads, "sgd"))
        target = TARGET_VS_FLOOR.get(network)
        if optimizer != "adam" or sgd is None or target is None or not all(
                r.get(k) for r in (adam, sgd) for k in ("engine_us", "floor_us")):
            continue
        floor = (adam["floor_us"] + sgd["floor_us"]) / 2
        margins.append({"network": network, "threads": threads,
                        "adam_minus_sgd_us": adam["engine_us"] - sgd["engine_us"],
                        "allowed_above_floor_us": (target - 1) * floor})
    return margins


def format_margins(margins: list[dict]) -> str:
    return "\n".join(
        f"- {m['network']}, {m['threads']} thread(s): Adam's update costs "
        f"{m['adam_minus_sgd_us']:,.1f} µs more than SGD's; the floor target leaves "
        f"{m['allowed_above_floor_us']:,.1f} µs above the matrix multiplies for all the rest"
        for m in margins)


def format_table(rows: list[dict]) -> str:
    def us(v):
        return "-" if v is None else f"{v:,.1f}"

    def ratio(row, key, target_key):
        v = row.get(key)
        if v is None:
            return "-"
        target = row.get(target_key)
        mark = "" if target is None else (" ok" if v <= target else f" >{target}")
        return f"{v:.2f}{mark}"

    head = ("| network | optimizer | threads | engine µs | PyTorch µs | numpy µs | floor µs "
            "| engine ÷ PyTorch | engine ÷ floor |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['network']} | {r['optimizer']} | {r['threads']} | "
                     f"{us(r.get('engine_us'))} | {us(r.get('torch_us'))} | "
                     f"{us(r.get('numpy_us'))} | {us(r.get('floor_us'))} | "
                     f"{ratio(r, 'engine_over_torch', 'target_vs_torch')} | "
                     f"{ratio(r, 'engine_over_floor', 'target_vs_floor')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS),
                        choices=list(OPTIMIZERS))
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS),
                        choices=IMPLEMENTATIONS)
    parser.add_argument("--only", choices=IMPLEMENTATIONS,
                        help="time one implementation alone (used by --check-alone)")
    parser.add_argument("--repeats", type=int, default=11, help="blocks per implementation")
    parser.add_argument("--block", type=float, default=0.04, help="seconds per block")
    parser.add_argument("--pause", type=float, default=0.3,
                        help="seconds of pause before each block (spinning threads)")
    parser.add_argument("--check-alone", action="store_true",
                        help="also time each implementation in its own process")
    parser.add_argument("--processes", type=int, default=0, metavar="N",
                        help="also run the alternating measurement in N fresh processes and "
                             "give medians over them (ratios taken within each process)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    names = [args.only] if args.only else list(args.implementations)
    torch_note = (f"PyTorch {torch.__version__}" if torch is not None else
                  "PyTorch not installed (pip install -e '.[bench]'): PyTorch column skipped")
    load_before = os.getloadavg()[0]
    rows = [add_ratios(r) for r in run_configs(args, names)]
    report = {"blas": blas_description(), "numpy": np.__version__,
              "torch": None if torch is None else torch.__version__, "batch": BATCH,
              "repeats": args.repeats, "pause_s": args.pause,
              # Other processes on the machine skew every figure, PyTorch's most.
              "load_average_1min": [load_before, os.getloadavg()[0]], "rows": rows}
    report["adam_margins"] = floor_margins(rows)
    if args.check_alone and not args.only:
        report["alone_rows"] = alone(args)
    if args.processes and not args.only:
        report["process_rows"] = across_processes(args, args.processes)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"BLAS: {report['blas']}; numpy {np.__version__}; {torch_note}")
    print(f"float32, batch {BATCH}, medians of {args.repeats} alternating blocks of "
          f"~{args.block * 1e3:.0f} ms, {args.pause} s pause before each block; load average "
          f"{report['load_average_1min'][0]:.2f} before, {report['load_average_1min'][1]:.2f} "
          f"after (other processes skew the figures)\n")
    print(format_table(rows))
    if report["adam_margins"]:
        print("\nAdam against the floor target (same run):\n")
        print(format_margins(report["adam_margins"]))
    if "alone_rows" in report:
        print("\nEach implementation alone in its own process (no alternation, no pauses):\n")
        print(format_table(report["alone_rows"]))
    if "process_rows" in report:
        print(f"\nMedians over {args.processes} fresh processes, each timing alternating blocks "
              "(a ratio is taken within one process, then the median over processes):\n")
        print(format_table(report["process_rows"]))
        print("\nRange of engine ÷ floor over the processes: " + "; ".join(
            f"{r['network']} {r['optimizer']} {r['threads']} thread(s) "
            f"{r['engine_over_floor_range'][0]:.2f}-{r['engine_over_floor_range'][1]:.2f}"
            for r in report["process_rows"] if "engine_over_floor_range" in r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
