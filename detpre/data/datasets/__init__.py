"""Dataset loaders (:mod:`.demo`, :mod:`.kaist`, :mod:`.subsets`); importing this package
registers every predefined name (:mod:`.builtin`)."""

from . import builtin  # noqa: F401  (registers detpre_demo_*, kaist_*, the papers' COCO subsets)
