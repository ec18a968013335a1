"""Optimizers. ``minimize(loss)`` returns a train op; fetching it runs forward, backward and
an **in-place** update of every variable (chainer's habit: ``v *= momentum; v += g``).

State lives in variables named ``<optimizer>/<variable>/<slot>`` plus ``<optimizer>/step``
(updates applied so far), so the Saver checkpoints it with the model. Update rules follow
PyTorch's ``torch.optim`` so results can be compared one to one.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from engine import initializers
from engine.autodiff import Gradient
from engine.graph import GraphError, Node, Op, Variable, ordered_names, trainable_variables


class Minimize(Op):
    """The train op: applies ``optimizer``'s update with the gradients of ``loss``."""

    type_name = "Minimize"
    is_update = True
    differentiable = False

    def __init__(self, optimizer: "Optimizer", grads, params, slots, step, name=None):
        self.optimizer = optimizer
        self.n = len(params)
        self.slot_count = len(optimizer.slot_names)
        flat_slots = [s for per_param in slots for s in per_param]
        super().__init__((*grads, *params, *flat_slots, step), name)

    def infer(self, *inputs):
        return (), np.dtype(np.int64)

    def forward(self, ctx, *inputs):  # pragma: no cover - the plan calls apply instead
        raise GraphError("a train op has no value; the session applies it after the step")

    def apply(self, ctx, *arrays):
        # ``arrays`` is (grads, params, slots per param, step). The count comes from the
        # arrays rather than ``self.n``: a plan may pass parameters stored side by side in
        # one block as a single one (see ``Optimizer.elementwise``).
        k = self.slot_count
        n = (len(arrays) - 1) // (2 + k)
        grads, params = arrays[:n], arrays[n:2 * n]
        slots = arrays[2 * n:2 * n + n * k]
        step = arrays[-1]
        step += 1
        t = int(step)
        update = self.optimizer.update
        for i in range(n):
            update(ctx, i, params[i], grads[i], slots[i * k:(i + 1) * k], t)


class Optimizer:
    """Base class: subclasses set ``slot_names`` and write ``update`` (in place).

    ``elementwise``: ``update`` treats every element on its own, so applying it once to
    parameters (and gradients and slots) stored side by side in one block gives exactly
    what applying it to each does; plans then make one update call instead of one per
    parameter. A subclass whose update is not elementwise (a per-tensor norm) sets False.
    """

    slot_names: tuple[str, ...] = ()
    elementwise = True

    def __init__(self, lr: float, name: str):
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0 \
                or not math.isfinite(lr):
            raise ValueError(f"{type(self).__name__}: lr must be a positive number, got {lr!r}")
        self.lr = float(lr)
        self.name = name

    def minimize(self, loss: Node, var_list: Sequence[Variable] | None = None,
                 name: str | None = None) -> Minimize:
        """A train op that updates ``var_list`` (default: every trainable variable the loss
        depends on) to decrease ``loss``."""
        if not isinstance(loss, Node):
            raise GraphError(f"{self.name}.minimize: the loss must be a graph node, got "
                             f"{type(loss).__name__}")
        if loss.dtype.kind != "f":
            raise GraphError(f"{self.name}.minimize: the loss {loss.describe()} is not floating")
        params = trainable_variables(loss) if var_list is None else list(var_list)
        if not params:
            raise GraphError(f"{self.name}.minimize: the loss '{loss.name}' depends on no "
                             "trainable variable")
        for v in params:
            if not isinstance(v, Variable) or v.dtype.kind != "f":
                raise GraphError(f"{self.name}.minimize: can only update floating variables, "
                                 f"got {v!r}")
        # Slots are named after the variables' names in the loss's graph: unnamed variables
        # are told apart there (Variable, Variable_1, ...), and keep those names in the train
        # graph, whose order starts with the loss's.
        _, names = ordered_names([loss, *params])
        grads = [Gradient(loss, v, name=f"gradients/{names[v]}") for v in params]
        slots = [[Variable(initializers.zeros, name=f"{self.name}/{names[v]}/{slot}",
                           shape=v.shape, trainable=False) for slot in self.slot_names]
                 for v in params]
        step = Variable(np.zeros((), np.int64), name=f"{self.name}/step", trainable=False)
        return Minimize(self, grads, params, slots, step, name=name or f"{self.name}/minimize")

    def update(self, ctx, i: int, param: np.ndarray, grad: np.ndarray, slots, t: int) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Gradient descent, optionally with (Nesterov) momentum, as ``torch.optim.SGD``:
    ``v = momentum v + g``; ``p -= lr v`` (or ``p -= lr (g + momentum v)`` with Nesterov)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 name: str = "SGD"):
        super().__init__(lr, name)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov needs a momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.slot_names = ("momentum",) if momentum else ()

    def update(self, ctx, i, param, grad, slots, t):
        step = ctx.buffer(i, param.shape, param.dtype)
        if self.momentum:
            (v,) = slots
            v *= self.momentum
            v += grad
            if self.nesterov:
                np.multiply(v, self.momentum, out=step)
                step += grad
                step *= self.lr
            else:
                np.multiply(v, self.lr, out=step)
        else:
            np.multiply(grad, self.lr, out=step)
        param -= step


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as ``torch.optim.Adam``."""

    slot_names = ("m", "v")

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, name: str = "Adam"):
        super().__init__(lr, name)
        for label, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Adam: {label} must be in [0, 1), got {b!r}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def update(self, ctx, i, param, grad, slots, t):
        # PyTorch's p -= lr/c1 · m / (√v/√c2 + ε) with c = 1 - β^t, written as
        # p -= (lr·√c2/c1) · m / (√v + ε·√c2): two fewer passes over the parameters. Each
        # pass is memory-bound and the square root the dearest of them.
        m, v = slots
        b1, b2 = self.beta1, self.beta2
        tmp = ctx.buffer(("tmp", i), param.shape, param.dtype)
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - b2
        v *= b2
        v += tmp
        m *= b1
        np.multiply(grad, 1.0 - b1, out=tmp)
        m += tmp
        root_c2 = math.sqrt(1.0 - b2 ** t)
        denom = np.sqrt(v, out=tmp)
        denom += self.eps * root_c2
        step = np.divide(m, denom, out=tmp)
        step *= self.lr * root_c2 / (1.0 - b1 ** t)
        param -= step


class RMSProp(Optimizer):
    """RMSProp as ``torch.optim.RMSprop``: ``s = ρ s + (1 - ρ) g²``; ``p -= lr g / (√s + ε)``,
    with optional momentum on that step."""

    def __init__(self, lr: float = 0.01, rho: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, name: str = "RMSProp"):
        super().__init__(lr, name)
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"RMSProp: rho must be in [0, 1), got {rho!r}")
        self.rho, self.eps, self.momentum = float(rho), float(eps), float(momentum)
        self.slot_names = ("ms", "momentum") if momentum else ("ms",)

    def update(self, ctx, i, param, grad, slots, t):
        ms = slots[0]
        tmp = ctx.buffer(("tmp", i), param.shape, param.dtype)
        ms *= self.rho
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - self.rho
        ms += tmp
        denom = np.sqrt(ms, out=tmp)
        denom += self.eps
        step = np.divide(grad, denom, out=tmp)
        if self.momentum:
            buf = slots[1]
            buf *= self.momentum
            buf += step
            np.multiply(buf, self.lr, out=tmp)
        else:
            step *= self.lr
        param -= tmp
