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

import numpy as np
import torch
from torch import Tensor, nn

Params = dict[str, Tensor]


def fast_tanh(z: Tensor) -> Tensor:
    """tanh outside autograd: on the CPU numpy's vectorised tanh (within an ulp of torch's)
    is 5-7x faster than torch 2.13's here (0.7 vs 3.3 ms for 40 000 x 64 floats), and the
    sampler and the linearisations evaluate it on tens of millions of values an iteration."""
    if z.device.type != "cpu" or z.requires_grad or not z.is_contiguous():
        return torch.tanh(z)
    out = torch.empty_like(z)
    np.tanh(z.numpy(), out=out.numpy())
    return out


def _tanh_derivatives(z: Tensor, h: Tensor) -> tuple[Tensor, Tensor | None]:
    p = 1 - h * h
    return p, -2 * h * p


def _relu_derivatives(z: Tensor, h: Tensor) -> tuple[Tensor, Tensor | None]:
    return (z > 0).to(z.dtype), None  # phi'' = 0 almost everywhere


ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[..., Any]]] = {
    "tanh": (fast_tanh, _tanh_derivatives),
    "relu": (torch.relu, _relu_derivatives),
}


MOMENT_INPUTS = 8
"""inputs below this many dimensions (2D navigation: 2) use ``_FirstLayerMoments``"""


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


def _affine(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """x [T, N, i] @ w^T + b with w [o, i] or [T, o, i] and b [T, o], the bias added by the
    matrix product itself when both are shared or both per task (one pass over the rows)."""
    shared_b = _shared_or_all(b)
    if w.dim() == 2 and shared_b.dim() == 1:
        flat = torch.addmm(shared_b, x.reshape(-1, x.shape[-1]), w.t())
        return flat.reshape(*x.shape[:-1], w.shape[0])
    if w.dim() == 3 and shared_b.dim() == 2:
        return torch.baddbmm(shared_b.unsqueeze(1), x, w.transpose(1, 2))
    return _linear(x, w) + b.unsqueeze(1)


def _accumulate(acc: Tensor, x: Tensor, w: Tensor, *, transpose: bool = True) -> Tensor:
    """acc += x @ w^T (or x @ w) in place, acc contiguous [T, N, o]; returns acc."""
    wt = w.t() if transpose and w.dim() == 2 else w.transpose(1, 2) if transpose else w
    if w.dim() == 2:
        acc.view(-1, acc.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), wt)
    else:
        acc.baddbmm_(x, wt)
    return acc


def _outer(g: Tensor, x: Tensor) -> Tensor:
    """sum_n g_n x_n^T per task: [T, o, i] (with few inputs i, as (x^T g)^T: 3x faster)."""
    if x.shape[-1] < g.shape[-1]:
        return torch.bmm(x.transpose(1, 2), g).transpose(1, 2)
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
        self._k: list[Tensor | None] = []
        self._moments: _FirstLayerMoments | None = None

    def _flat(self, t: Tensor) -> Tensor:
        return t.reshape(self.inputs[0].shape[0], -1, t.shape[-1])

    def jvp(self, tangent: Params) -> tuple[Tensor, list[Tensor]]:
        """(J u [T, ..., P] for the parameter tangent u [T, ...], the hidden dh_l)."""
        dh: Tensor | None = None
        dhs: list[Tensor] = []
        self._dzs: list[Tensor] = []
        for i, (name, w) in enumerate(zip(self.layers, self.ws, strict=True)):
            dw = _shared_or_all(tangent[f"{name}.weight"])
            dz = _affine(self.inputs[i], dw, tangent[f"{name}.bias"])
            if dh is not None:
                _accumulate(dz, dh, w)
            if i == len(self.ws) - 1:
                break
            self._dzs.append(dz)
            dh = self.p[i] * dz
            dhs.append(dh)
        if self.log_std is not None:
            dls = tangent[self.log_std].unsqueeze(1).expand_as(dz)
            dz = torch.cat([dz, dls], dim=-1)
        return dz.reshape(*self.lead, dz.shape[-1]), dhs

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
            g = self.p[i - 1] * gh if keep else gh.mul_(self.p[i - 1])
            gs.append(g)
            ghs.append(gh)
        if keep:
            self._g, ghs = gs[::-1], ghs[::-1]  # layer order: g_z0 .. g_out; g_h0 ..
            self._k = [None if q is None else q * h for q, h in zip(self.q, ghs, strict=True)]
            x = self.inputs[0]
            if len(self.ws) > 1 and x.shape[-1] < MOMENT_INPUTS:
                self._moments = _FirstLayerMoments(x, self._g[1], self.p[0], self._k[0])
        return grads

    def hessian(self, tangent: Params, dhs: list[Tensor], dcot: Tensor) -> Params:
        """d/de [J(theta + e u)^T c] for the cotangent c of ``set_cotangent``, right after
        ``jvp(u)`` (its hidden tangents dh_l), given dc = (d-space Hessian of the loss) J u:
        with that dc it is the loss's Hessian-vector product H u per task."""
        hv: Params = {}
        dg = self._flat(dcot)
        if self.log_std is not None:
            hv[self.log_std] = dg[..., self.out_dim :].sum(1)
        dg = dg[..., : self.out_dim]
        for i in range(len(self.ws) - 1, -1, -1):
            name, x = self.layers[i], self.inputs[i]
            hv[f"{name}.bias"] = dg.sum(1)
            if i == 1 and self._moments is not None:
                first = f"{self.layers[0]}.weight"
                u = torch.cat([tangent[first], tangent[f"{self.layers[0]}.bias"].unsqueeze(-1)], -1)
                dw = tangent[f"{name}.weight"]
                hw, h0 = self._moments.terms(u, dw if dw.dim() == 3 else dw.unsqueeze(0))
                hv[f"{name}.weight"] = _outer(dg, x) + hw
                h0 = h0 + _outer(_linear_t(dg, self.ws[1]).mul_(self.p[0]), self._moments.x)
                hv[first], hv[f"{self.layers[0]}.bias"] = h0[..., :-1], h0[..., -1]
                break
            hw = _outer(dg, x)
            hv[f"{name}.weight"] = hw if i == 0 else hw + _outer(self._g[i], dhs[i - 1])
            if i == 0:
                break
            dw = _shared_or_all(tangent[f"{name}.weight"])
            dg = _accumulate(_linear_t(self._g[i], dw), dg, self.ws[i], transpose=False)
            dg.mul_(self.p[i - 1])
            k = self._k[i - 1]
            if k is not None:
                dg.addcmul_(k, self._dzs[i - 1])
        return hv


class _FirstLayerMoments:
    """Sums over the samples that depend only on the linearisation point, for an MLP whose
    input x has few dimensions: with x~ = [x, 1] and u = [dW_0, db_0] (so dz_0 = u x~),

        sum_n g_1 (p_0 * dz_0)^T          = sum_m u[:, m] * E_m,   E_m = sum_n g_1 (p_0 x~_m)^T
        sum_n (p_0 * dW_1^T g_1) x~^T      = sum_k dW_1[k, :] E[k]
        sum_n (phi''_0 dz_0 g_h0) x~^T     = sum_m' u[:, m'] Q_m',  Q = sum_n (phi''_0 g_h0) x~ x~^T

    so two of the Hessian-vector product's matrix products over all samples (and the
    elementwise work around them) become products of small tensors."""

    def __init__(self, x: Tensor, g1: Tensor, p0: Tensor, k0: Tensor | None) -> None:
        num_tasks, n = x.shape[:2]
        self.x = torch.cat([x, x.new_ones(num_tasks, n, 1)], dim=-1)  # [T, N, D + 1]
        m = self.x.shape[-1]
        scaled = (p0.unsqueeze(-2) * self.x.unsqueeze(-1)).reshape(num_tasks, n, -1)
        self.e = _outer(g1, scaled).reshape(num_tasks, g1.shape[-1], m, p0.shape[-1])
        self.q = None
        if k0 is not None:
            weighted = (k0.unsqueeze(-1) * self.x.unsqueeze(-2)).reshape(num_tasks, n, -1)
            self.q = _outer(weighted, self.x).reshape(num_tasks, k0.shape[-1], m, m)

    def terms(self, u: Tensor, dw1: Tensor) -> tuple[Tensor, Tensor]:
        """(layer 1's weight term [T, o1, o0], layer 0's [T, o0, D + 1]) for the tangents
        u [T or 1, o0, D + 1] and dW_1 [T or 1, o1, o0]."""
        if u.dim() == 2:
            u = u.unsqueeze(0)
        hw1 = torch.einsum("tjm,tkmj->tkj", u, self.e)
        h0 = torch.einsum("tkj,tkmj->tjm", dw1, self.e)
        if self.q is not None:
            h0 = h0 + torch.einsum("tjm,tjmn->tjn", u, self.q)
        return hw1, h0
