"""What loading weights into a model left out, and the check that evaluation does not run on
weights that left a share of the model at its initialization."""

from dataclasses import dataclass, field
from typing import Collection, List, Optional

__all__ = ["LoadReport", "WeightsError", "check_loaded"]

_SHOWN = 5  # keys named per kind in a message


class WeightsError(ValueError):
    """Weights that do not describe the model; the message says how many tensors and which."""


@dataclass
class LoadReport:
    """What loading a state dict into a model left out, on either side."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    wrong_shape: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def unloaded(self) -> List[str]:
        """Model tensors left at their initialization: missing, or of another shape."""
        return sorted(set(self.missing) | set(self.wrong_shape))


def _names(keys: List[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def check_loaded(report: Optional[LoadReport], model_keys: Collection[str], weights: str, tolerance: float) -> None:
    """Raise :class:`WeightsError` when more than ``tolerance`` of ``model_keys`` did not load.

    ``report`` is None when nothing was loaded (no ``MODEL.WEIGHTS``). The message is one line
    with the counts and the first names of each kind, and the key that allows it.
    """
    total = len(model_keys)
    missing = sorted(model_keys) if report is None else sorted(set(report.missing) - set(report.wrong_shape))
    wrong = [] if report is None else sorted(report.wrong_shape)
    count = len(missing) + len(wrong)
    if total == 0 or count / total <= tolerance:
        return
    source = f"MODEL.WEIGHTS {weights!r}" if weights else "No MODEL.WEIGHTS given: the model"
    parts = []
    if missing:
        parts.append(f"{len(missing)} not in the checkpoint ({_names(missing)})")
    if wrong:
        parts.append(f"{len(wrong)} of another shape ({_names(wrong)})")
    raise WeightsError(
        f"{source} leaves {count} of the model's {total} tensors ({100.0 * count / total:.1f}%) at their "
        f"initialization: {'; '.join(parts)}. Evaluate with the config the weights were trained with, or set "
        f"TEST.MAX_UNLOADED_WEIGHTS (now {tolerance:g}) to 1.0 to evaluate them anyway."
    )
