"""Where the post-step decision's noise comes from: for a start saved by ``run --dump``,
the oracle fraction by kind of the full decision and of the decision without each feature
group (and the std of each group's contribution to the long-minus-short logit).

    python -m experiments.regimes.run --features lags:4,todn:6,gapdecay,volx,acx:32 \\
        --dump /tmp/start.pt && python -m experiments.regimes.diagnose /tmp/start.pt
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from experiments.regimes import evaluate, meta
from experiments.regimes.features import group_of
from experiments.regimes.tasks import family


def main() -> None:
    d = torch.load(sys.argv[1])
    a = d["args"]
    held = family(
        5000 + a["seed"],
        a["eval_tasks"],
        a["features"],
        n_bars=1024 + a["test_bars"],
        test_bars=a["test_bars"],
    )
    q = meta.adapt_eval_tasks(d["p"], d["rates"], held, 512, a["steps"])
    w = (q["w"][:, 2] - q["w"][:, 0]).numpy()
    b = (q["b"][:, 2] - q["b"][:, 0]).numpy()
    x, kinds = held.x.numpy(), np.array(held.kinds)
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(held.names):
        groups.setdefault(group_of(n), []).append(i)
    ts = held.test_start
    orc, nxt = np.sign(held.expected[:, ts:]), held.nxt.numpy()[:, ts:]
    for kind in evaluate.FRACTION_KINDS:
        sel = kinds == kind
        part = {
            g: np.einsum("tnf,tf->tn", x[sel][:, ts:, i], w[sel][:, i]) for g, i in groups.items()
        }
        part["bias"] = np.broadcast_to(b[sel][:, None], next(iter(part.values())).shape)
        total = sum(part.values())
        o, r = orc[sel], nxt[sel]
        base = np.sum(np.sign(total) * r) / np.sum(o * r)
        print(
            f"{kind:9s} fraction {base:.2f}; std "
            + " ".join(f"{g} {v.std():.1f}" for g, v in part.items())
        )
        for g, v in part.items():
            print(f"    without {g:9s} {np.sum(np.sign(total - v) * r) / np.sum(o * r):.2f}")


if __name__ == "__main__":
    main()
