"""The inference engine under every interface (ASE, OpenMM ``PythonForce``, evaluation, the trainer's
helpers, benchmarks): :class:`Evaluator` loads the model in its device and dtype and calls it for
single structures and batches, with the thread count, neighbour list, memory plan and edge chunking
of each call. See docs/architecture.md."""

from ..model.chunked import edge_chunking
from .evaluator import (
    Evaluator,
    NonFiniteError,
    centred,
    converted_model,
    load_for_inference,
    resolve_device,
)

__all__ = [
    "Evaluator",
    "NonFiniteError",
    "centred",
    "converted_model",
    "edge_chunking",
    "load_for_inference",
    "resolve_device",
]
