"""Python's cyclic garbage collector, paused while fxcost builds an analysis.

An analysis makes tens of thousands of small objects (graph nodes, fake tensors, records)
that live until it ends. With the collector running, its young-generation passes walk them
again and again, and the survivors they promote soon trigger a full collection: a walk over
every object the process holds (hundreds of thousands once torch and transformers are
imported), which alone takes longer than analysing a ResNet. Paused, the collector does
nothing during the analysis. At its end the analysis drops what its graphs hold (node values,
the mirror's modules), which then goes by reference counting, and one young-generation pass
frees the little left in reference cycles (an fx graph's nodes refer to each other), so no
garbage outlives the call.

Fake tensors are released (:class:`fxcost._storage.StorageTracker`) when reference counting
frees them, as in eager PyTorch; one held only by a reference cycle counts as alive until the
analysis ends, where with the collector running it would count as alive until whichever
collection happened to come first.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside; one young-generation pass on the way out.
    Nested uses, or a collector the caller disabled, are left as they are."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(0)

