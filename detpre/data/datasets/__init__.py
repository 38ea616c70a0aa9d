"""Dataset registration: importing this package registers detpre's datasets."""

from . import (
    demo,  # noqa: F401  (registers detpre_demo_train / detpre_demo_val)
    kaist,  # noqa: F401  (registers kaist_train_all02_paired, kaist_test_all20_improved, ...)
    subsets,  # noqa: F401
)
