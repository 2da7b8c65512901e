"""The one seed scheme: every random stream's seed is ``derive_seed(run_seed, *labels)``.

A run has one seed (``run.seed``). Each stream that needs its own seed (a task's episodes in
one meta-iteration, a protocol start's adaptation episodes, a walk-forward job, a random
start's weights) names itself with labels, and its seed is a stable hash of the run seed
and those labels (blake2b, as CleanRL seeds every stream from one visible seed, but with
names instead of literal offsets, which collide: run 0's seed plus one is run 1's seed). The hash is the same in every process and on every machine (unlike
Python's ``hash``), so a stream's seed does not depend on which worker draws it, and two
different label tuples give independent seeds.
"""

from __future__ import annotations

import hashlib
import operator
from typing import SupportsIndex

SEED_BITS = 63
"""derived seeds lie in [0, 2**63): valid for numpy, ``torch.Generator.manual_seed`` and
Gymnasium's ``reset(seed=...)``"""

Label = str | SupportsIndex


def _encode(item: Label) -> str:
    """A label as text that no other label encodes to: strings and integers are tagged and
    length-prefixed, so ("ab", "c") and ("a", "bc"), or 1 and "1", stay apart."""
    text = f"s{item}" if isinstance(item, str) else f"i{operator.index(item)}"
    return f"{len(text)}:{text}"


def derive_seed(run_seed: SupportsIndex, *labels: Label) -> int:
    """The seed of the stream named ``labels`` in the run seeded ``run_seed``.

    Args:
        run_seed: the run's one seed (any integer, negative included).
        labels: the stream's name, most general first (e.g. ``"walkforward", start, task,
            row``); strings or integers (numpy integers too).

    Returns:
        An integer in [0, 2**63), the same in every process for the same arguments.
    """
    text = "|".join(_encode(x) for x in (run_seed, *labels))
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> (64 - SEED_BITS)
