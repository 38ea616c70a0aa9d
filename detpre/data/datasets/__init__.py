"""Dataset registration: importing this package registers detpre's datasets."""
from . import subsets  # noqa: F401
