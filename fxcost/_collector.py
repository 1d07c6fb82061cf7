"""Python's cyclic garbage collector, paused while fxcost builds an analysis.

An analysis makes tens of thousands of small objects (graph nodes, fake tensors, records)
that live until it ends. With the collector running, each of its young-generation passes
walks them again, and the survivors it promotes soon trigger a full collection: a walk
over every object the process holds (hundreds of thousands once torch and transformers are
imported), which on its own takes longer than analysing a ResNet. Paused, the collector
does nothing during the analysis; at its end one young-generation pass frees what the
analysis left in reference cycles (its graph), so no garbage outlives the call.

The collector's fake tensors go away when the analysis ends either way: storages are
released (:class:`fxcost._storage.StorageTracker`) when the last tensor using them is freed
by reference counting, as in eager PyTorch; a tensor held only by a reference cycle counts
as alive to the end of the analysis instead of until some arbitrary collection.
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

