"""Which generators run on which frame of an image: source specs and the registered unions.

A *source* is a ``(generator, frame)`` pair; a proposal run has one or several, written as
one spec (``tools/precompute_proposals.py --generator``, ``DATASETS.PROPOSAL_SEARCH.GENERATOR``):

* a generator name (:data:`.generators.PROPOSAL_GENERATORS`): it runs on the frame(s) of
  ``modality`` (``visible``, ``lwir``, or ``both``: the visible frame, then the LWIR one);
* ``NAME@FRAME`` parts joined by ``+``: ``thermal_blobs@lwir+soco@visible`` runs the thermal
  blobs on the LWIR frame and SoCo's search on the visible one (a part without ``@`` takes
  ``modality``);
* a registered union (:data:`PROPOSAL_UNIONS`, :func:`register_union`): a name for such a
  spec, e.g. ``kaist_thermal``. A spec may combine unions and generators.

The order of the sources is the order in which :meth:`.filters.ProposalFilter.fuse`
interleaves their boxes (the first box of each source, then the second, ...), so it is part
of what a file holds: :class:`.compute.SearchSettings` records the expanded sources.

Registered here (docs/kaist_proposals.md gives their recall on KAIST frames):

* ``kaist_thermal``: ``thermal_blobs@lwir+thermal_mser@lwir``, the two warm-blob sources of
  :mod:`.thermal` on the thermal frame; the connected components first (they cut the warm
  contrast at fixed levels, MSER keeps only its stable regions, so the components see more
  of the small, faint persons);
* ``kaist_multispectral``: ``kaist_thermal`` followed by SoCo's selective search on both
  frames (colour and texture for what is not warmer than its surround: a person by day in
  front of a sunlit wall).
"""

from typing import Dict, List, Tuple

from ..multispectral import LWIR, VISIBLE
from .generators import PROPOSAL_GENERATORS, THERMAL_GENERATORS

__all__ = ["MODALITIES", "PROPOSAL_UNIONS", "parse_sources", "register_union"]

#: The frames of an image that a source without ``@FRAME`` searches: one, or both.
MODALITIES = (VISIBLE, LWIR, "both")
#: name -> source spec.
PROPOSAL_UNIONS: Dict[str, str] = {}

Source = Tuple[str, str]


def _frames(frame: str) -> Tuple[str, ...]:
    return (VISIBLE, LWIR) if frame == "both" else (frame,)


def parse_sources(generator: str, modality: str = VISIBLE) -> Tuple[Source, ...]:
    """The ``(generator, frame)`` sources of a spec (module docstring), in order.

    ``"soco"`` with ``modality="both"`` is ``(("soco", "visible"), ("soco", "lwir"))``;
    ``"thermal_blobs@lwir+soco"`` with ``"visible"`` is ``(("thermal_blobs", "lwir"), ("soco",
    "visible"))``. A ValueError names an unknown generator, union or frame, a source given
    twice and a thermal generator given the visible frame.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} is not one of {MODALITIES}.")
    sources: List[Source] = []
    for part in str(generator).split("+"):
        name, at, frame = part.strip().partition("@")
        if name in PROPOSAL_UNIONS:
            if at:
                raise ValueError(
                    f"{part!r} (in {generator!r}): union {name!r} names its own frames "
                    f"({PROPOSAL_UNIONS[name]}); give it without @FRAME."
                )
            expanded = parse_sources(PROPOSAL_UNIONS[name], modality)
        elif name in PROPOSAL_GENERATORS:
            frame = frame or modality
            if frame not in MODALITIES:
                raise ValueError(f"frame {frame!r} of {part!r} (in {generator!r}) is not one of {MODALITIES}.")
            expanded = tuple((name, f) for f in _frames(frame))
        else:
            raise ValueError(
                f"{name!r} (in {generator!r}) is neither a generator ({', '.join(sorted(PROPOSAL_GENERATORS))}) "
                f"nor a union ({', '.join(sorted(PROPOSAL_UNIONS))}); a spec is NAME[@FRAME] joined by '+', "
                "e.g. thermal_blobs@lwir+soco@visible."
            )
        for source in expanded:
            if source[0] in THERMAL_GENERATORS and source[1] != LWIR:
                raise ValueError(
                    f"generator {source[0]!r} (in {generator!r}) finds warm blobs and needs the thermal frame, "
                    f"not the {source[1]} one: use --modality lwir or {source[0]}@lwir."
                )
            if source in sources:
                raise ValueError(
                    f"source {source[0]}@{source[1]} is given twice in {generator!r} (modality {modality!r})."
                )
            sources.append(source)
    return tuple(sources)


def register_union(name: str, spec: str) -> None:
    """Register ``spec`` (checked now) under ``name``, which no generator or union has."""
    if name in PROPOSAL_UNIONS or name in PROPOSAL_GENERATORS:
        raise ValueError(f"Proposal source {name!r} is already registered.")
    if any(c in name for c in "+@"):
        raise ValueError(f"A union's name cannot hold '+' or '@': {name!r}.")
    if parse_sources(spec, VISIBLE) != parse_sources(spec, LWIR):
        raise ValueError(f"Union {name!r}: every source of {spec!r} must name its frame (NAME@FRAME).")
    PROPOSAL_UNIONS[name] = spec


register_union("kaist_thermal", "thermal_blobs@lwir+thermal_mser@lwir")
register_union("kaist_multispectral", "kaist_thermal+soco@visible+soco@lwir")
