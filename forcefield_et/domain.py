"""A model's training domain (the elements and compositions of its training data) and the
warning issued when a structure lies outside it.

The trainer stores ``training_domain`` in every checkpoint's metadata::

    {"elements": [1, 6, 8], "compositions": ["C9H8O4"]}

``compositions`` lists the Hill formulas of the training structures, or is None when the data
held more than ``MAX_COMPOSITIONS`` of them (then only the elements are checked). A checkpoint
without the entry is checked against the elements the model embeds.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Sequence

import numpy as np

from .elements import symbol

MAX_COMPOSITIONS = 20  # more distinct training compositions than this: check elements only


class DomainWarning(UserWarning):
    """A structure lies outside the model's training domain: elements the training data did not
    contain, or (for a model fitted to one or a few molecules) another composition. The model
    still runs; its predictions there are extrapolations."""


def hill_formula(numbers: Iterable[int]) -> str:
    """Hill formula of atomic numbers: C first, then H, then the others alphabetically
    (alphabetically throughout when there is no carbon), e.g. ``C9H8O4``, ``H2O``."""
    counts = Counter(symbol(int(z)) for z in numbers)
    if "C" in counts:
        order = ["C"] + (["H"] if "H" in counts else []) + sorted(k for k in counts if k not in ("C", "H"))
    else:
        order = sorted(counts)
    return "".join(f"{name}{counts[name] if counts[name] > 1 else ''}" for name in order)


def training_domain(
    z: np.ndarray, n_atoms: np.ndarray, max_compositions: int = MAX_COMPOSITIONS
) -> Dict[str, Any]:
    """The ``training_domain`` entry of a data set: atomic numbers ``z`` [A] of all frames
    concatenated and ``n_atoms`` [F] per frame."""
    z = np.asarray(z, dtype=np.int64)
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    compositions: set = set()
    start = 0
    for count in n_atoms:
        compositions.add(hill_formula(z[start : start + count]))
        start += int(count)
        if len(compositions) > max_compositions:
            break
    return {
        "elements": sorted({int(v) for v in np.unique(z)}),
        "compositions": sorted(compositions) if len(compositions) <= max_compositions else None,
    }


def merge_domains(domains: Sequence[Mapping[str, Any]], max_compositions: int = MAX_COMPOSITIONS) -> Dict[str, Any]:
    """One ``training_domain`` for several data sources."""
    elements = sorted({int(z) for d in domains for z in d["elements"]})
    if any(d.get("compositions") is None for d in domains):
        return {"elements": elements, "compositions": None}
    compositions = sorted({c for d in domains for c in d["compositions"]})
    return {"elements": elements, "compositions": compositions if len(compositions) <= max_compositions else None}


def domain_problem(numbers: Sequence[int], metadata: Mapping[str, Any] | None, model_name: str) -> str | None:
    """Why a structure with atomic numbers ``numbers`` is outside the training domain stored in
    ``metadata`` (a checkpoint's), or None when it is inside (or the metadata has no domain)."""
    domain = (metadata or {}).get("training_domain")
    if not isinstance(domain, Mapping):
        return None
    trained = {int(z) for z in domain.get("elements") or []}
    present = {int(z) for z in numbers}
    unseen = sorted(present - trained) if trained else []
    if unseen:
        return (
            f"element(s) {' '.join(symbol(z) for z in unseen)} were not in the training data of model "
            f"{model_name!r} (trained on {' '.join(symbol(z) for z in sorted(trained))}); its predictions for "
            "them are extrapolations"
        )
    compositions: List[str] | None = domain.get("compositions")
    if compositions:
        formula = hill_formula(numbers)
        if formula not in compositions:
            shown = ", ".join(compositions[:5]) + (", ..." if len(compositions) > 5 else "")
            return (
                f"model {model_name!r} was trained on {shown} only, not on {formula}; its predictions for "
                "other molecules are extrapolations (use a model trained on this composition, e.g. 'pretrained' "
                "or one fine-tuned on it)"
            )
    return None


class DomainCheck:
    """Warns (:class:`DomainWarning`) once per composition that lies outside a model's training
    domain."""

    def __init__(self, metadata: Mapping[str, Any] | None, model_name: str) -> None:
        self.metadata = metadata
        self.model_name = model_name
        self._checked: set = set()

    def __call__(self, numbers: Sequence[int], stacklevel: int = 3) -> str | None:
        """Check one structure's atomic numbers; returns the warning text when it warned."""
        key = hill_formula(numbers)
        if key in self._checked:
            return None
        self._checked.add(key)
        problem = domain_problem(numbers, self.metadata, self.model_name)
        if problem is not None:
            warnings.warn(problem, DomainWarning, stacklevel=stacklevel)
        return problem


__all__ = ["DomainCheck", "DomainWarning", "domain_problem", "hill_formula", "merge_domains", "training_domain"]
