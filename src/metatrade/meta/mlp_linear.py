"""The plain MLP policy linearised at fixed parameters: J u, J^T w and the second-order
term of a Hessian-vector product, written out layer by layer.

TRPO's Fisher-vector product through the inner loop (``meta.fisher``) needs, at every
conjugate-gradient iteration, products with the Jacobian J of the network's outputs and
with the Hessian of the inner loss. Autograd recomputes the elementwise derivatives of the
activations in every product and walks double-backward graphs; here the quantities that
depend only on the linearisation point (activations h, phi'(z), phi''(z), the backward
signals of the loss's own gradient) are computed once and each product is a short chain of
matrix products on them (forward-over-reverse by hand, Pearlmutter 1994):

    forward:   z_l = W_l h_{l-1} + b_l,  h_l = phi(z_l),  out = W_L h_{L-1} + b_L
    tangent:   dz_l = dW_l h_{l-1} + W_l dh_{l-1} + db_l,  dh_l = phi'(z_l) dz_l
    backward:  g_{z_l} = phi'(z_l) (W_{l+1}^T g_{z_{l+1}}),  dL/dW_l = sum_n g_{z_l} h_{l-1}^T
    Hessian:   d g_{z_l} = phi''(z_l) dz_l g_{h_l} + phi'(z_l) (dW_{l+1}^T g + W_{l+1}^T d g)
               d(dL/dW_l) = sum_n d g_{z_l} h_{l-1}^T + g_{z_l} dh_{l-1}^T

Parameters carry a task axis [T, ...]: per-task weights use batched matmuls, a broadcast
theta (stride 0 on the task axis) one matmul over all tasks' rows. The MLP opts in through
``fused_layers()`` (as the sampler's fast forward does, ``meta.sampler._mlp_forward``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]


def _tanh_derivatives(z: Tensor, h: Tensor) -> tuple[Tensor, Tensor | None]:
    p = 1 - h * h
    return p, -2 * h * p


def _relu_derivatives(z: Tensor, h: Tensor) -> tuple[Tensor, Tensor | None]:
    return (z > 0).to(z.dtype), None  # phi'' = 0 almost everywhere


ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[..., Any]]] = {
    "tanh": (torch.tanh, _tanh_derivatives),
    "relu": (torch.relu, _relu_derivatives),
}


def mlp_plan(policy: nn.Module, names: list[str]) -> tuple[list[str], str, str | None] | None:
    """(layer prefixes, activation, log-std name) when ``policy`` is the plain MLP with the
    parameters ``names`` and an activation written out here; else None."""
    plan = vars(type(policy)).get("fused_layers")
    if plan is None:
        return None
    layers, activation, log_std = plan(policy)
    expected = {f"{n}.{w}" for n in layers for w in ("weight", "bias")}
    expected |= {log_std} if log_std is not None else set()
    if activation not in ACTIVATIONS or set(names) != expected:
        return None
    return layers, activation, log_std


def _linear(x: Tensor, w: Tensor) -> Tensor:
    """x [T, N, i] @ w^T with w [o, i] (shared) or [T, o, i]."""
    if w.dim() == 2:
        return (x.reshape(-1, x.shape[-1]) @ w.t()).reshape(*x.shape[:-1], w.shape[0])
    return torch.bmm(x, w.transpose(1, 2))


def _linear_t(g: Tensor, w: Tensor) -> Tensor:
    """g [T, N, o] @ w with w [o, i] (shared) or [T, o, i]."""
    if w.dim() == 2:
        return (g.reshape(-1, g.shape[-1]) @ w).reshape(*g.shape[:-1], w.shape[1])
    return torch.bmm(g, w)


def _outer(g: Tensor, x: Tensor) -> Tensor:
    """sum_n g_n x_n^T per task: [T, o, i]."""
    return torch.bmm(g.transpose(1, 2), x)


def _weights(params: Params, name: str) -> Tensor:
    """A weight [T, ...], as one shared tensor when it is a broadcast view."""
    return _shared_or_all(params[name])


def _shared_or_all(w: Tensor) -> Tensor:
    return w[0] if w.shape[0] == 1 or w.stride(0) == 0 else w


class MLPLinearization:
    """The MLP at ``params`` [T, ...] on ``obs`` [T, ..., D] (one forward, cached)."""

    def __init__(
        self, plan: tuple[list[str], str, str | None], params: Params, obs: Tensor
    ) -> None:
        self.layers, activation, self.log_std = plan
        act, self._derivatives = ACTIVATIONS[activation]
        self.lead = obs.shape[:-1]
        num_tasks = obs.shape[0]
        self.ws = [_weights(params, f"{n}.weight") for n in self.layers]
        self.bs = [params[f"{n}.bias"].unsqueeze(1) for n in self.layers]
        x = obs.reshape(num_tasks, -1, obs.shape[-1])
        self.inputs, self.p, self.q = [x], [], []
        for w, b in zip(self.ws[:-1], self.bs[:-1], strict=True):
            z = _linear(x, w) + b
            x = act(z)
            p, q = self._derivatives(z, x)
            self.inputs.append(x)
            self.p.append(p)
            self.q.append(q)
        out = _linear(x, self.ws[-1]) + self.bs[-1]
        self.out_dim = out.shape[-1]
        if self.log_std is not None:
            log_std = params[self.log_std].unsqueeze(1).expand_as(out)
            out = torch.cat([out, log_std], dim=-1)
        self.output = out.reshape(*self.lead, out.shape[-1])
        self._g: list[Tensor] = []
        self._gh: list[Tensor] = []

    def _flat(self, t: Tensor) -> Tensor:
        return t.reshape(self.inputs[0].shape[0], -1, t.shape[-1])

    def jvp(self, tangent: Params) -> tuple[Tensor, list[Tensor]]:
        """(J u [T, ..., P] for the parameter tangent u [T, ...], the hidden dz_l)."""
        dh: Tensor | None = None
        dzs: list[Tensor] = []
        for i, (name, w) in enumerate(zip(self.layers, self.ws, strict=True)):
            dz = _linear(self.inputs[i], _shared_or_all(tangent[f"{name}.weight"]))
            dz = dz + tangent[f"{name}.bias"].unsqueeze(1)
            if dh is not None:
                dz = dz + _linear(dh, w)
            if i == len(self.ws) - 1:
                break
            dzs.append(dz)
            dh = self.p[i] * dz
        if self.log_std is not None:
            dls = tangent[self.log_std].unsqueeze(1).expand_as(dz)
            dz = torch.cat([dz, dls], dim=-1)
        return dz.reshape(*self.lead, dz.shape[-1]), dzs

    def vjp(self, cotangent: Tensor) -> Params:
        """J^T w per task [T, ...] for w [T, ..., P] on the outputs."""
        return self._backward(self._flat(cotangent), keep=False)

    def set_cotangent(self, cotangent: Tensor) -> Params:
        """Backpropagate the loss's output gradient once (kept for ``hessian``); returns
        the loss's parameter gradient per task."""
        return self._backward(self._flat(cotangent), keep=True)

    def _backward(self, cot: Tensor, *, keep: bool) -> Params:
        grads: Params = {}
        g = cot[..., : self.out_dim]
        if self.log_std is not None:
            grads[self.log_std] = cot[..., self.out_dim :].sum(1)
        gs, ghs = [g], []
        for i in range(len(self.ws) - 1, -1, -1):
            name = self.layers[i]
            grads[f"{name}.weight"] = _outer(g, self.inputs[i])
            grads[f"{name}.bias"] = g.sum(1)
            if i == 0:
                break
            gh = _linear_t(g, self.ws[i])
            g = self.p[i - 1] * gh
            gs.append(g)
            ghs.append(gh)
        if keep:
            self._g, self._gh = gs[::-1], ghs[::-1]  # layer order: g_z1 .. g_out
        return grads

    def hessian(self, tangent: Params, dzs: list[Tensor], dcot: Tensor) -> Params:
        """d/de [J(theta + e u)^T c] for the cotangent c of ``set_cotangent``, given u, its
        ``jvp`` hidden tangents and dc = (d-space Hessian of the loss) J u: with dc that is
        the loss's Hessian-vector product H u per task."""
        hv: Params = {}
        dg = self._flat(dcot)
        if self.log_std is not None:
            hv[self.log_std] = dg[..., self.out_dim :].sum(1)
        dg = dg[..., : self.out_dim]
        last = len(self.ws) - 1
        for i in range(last, -1, -1):
            name, x = self.layers[i], self.inputs[i]
            g = self._g[i]
            hw = _outer(dg, x)
            if i > 0:
                hw = hw + _outer(g, self.p[i - 1] * dzs[i - 1])
            hv[f"{name}.weight"] = hw
            hv[f"{name}.bias"] = dg.sum(1)
            if i == 0:
                break
            dw = _shared_or_all(tangent[f"{name}.weight"])
            dgh = _linear_t(g, dw) + _linear_t(dg, self.ws[i])
            q = self.q[i - 1]
            dg = self.p[i - 1] * dgh
            if q is not None:
                dg = dg + q * dzs[i - 1] * self._gh[i - 1]
        return hv
