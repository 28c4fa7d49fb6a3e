"""dfml-bench: a plugin-based benchmark suite for data-free meta-learning from black-box APIs.

Importing this package is cheap (no torch): heavy modules are imported only when a component
is built, so ``dfml-bench --help`` and ``dfml-bench list`` stay fast.
"""

__version__ = "0.1.0"

from dfml_bench.hookspecs import hookimpl  # noqa: E402  (re-exported for plugin authors)
from dfml_bench.params import param  # noqa: E402

__all__ = ["__version__", "hookimpl", "param"]
