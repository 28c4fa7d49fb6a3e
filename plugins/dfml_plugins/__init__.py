"""The built-in dfml-bench plugins.

Registered through the `dfml_bench` entry-point group exactly like a third-party plugin,
using only the public API (`dfml_bench.hookimpl`, `dfml_bench.interfaces`, ...). This module
is imported by `dfml-bench list`, so it only declares light metadata: every factory is a
"module:attribute" string imported when the component is built.
"""

from __future__ import annotations

from typing import Any

from dfml_bench import hookimpl
from dfml_plugins import params as P


@hookimpl
def register_datasets(register: Any) -> None:
    register("glyphs", "dfml_plugins.datasets.glyphs:build_glyphs", params=P.GlyphsParams,
             help="embedded characters rendered from matplotlib's fonts; three domains")


@hookimpl
def register_architectures(register: Any) -> None:
    register("conv4", "dfml_plugins.models.conv4:build_conv4", params=P.Conv4Params,
             help="4 x [conv3x3-BN-ReLU-maxpool] + linear (PROTOCOL.md section 3)")


@hookimpl
def register_meta_learners(register: Any) -> None:
    register("maml", "dfml_plugins.meta_learners.maml:MAML", params=P.MamlParams,
             help="MAML with cross-entropy; second order unless first_order=true")


@hookimpl
def register_methods(register: Any) -> None:
    register("random", "dfml_plugins.methods.random_init:RandomInit", params=None,
             help="randomly initialised meta model, only adapted at test time (a floor)",
             access="none", data_free=True, uses=("architecture",))
    register("maml_oracle", "dfml_plugins.methods.maml_oracle:MamlOracle", params=None,
             help="MAML on the REAL meta-train images: an upper bound, NOT data-free",
             access="real_data", data_free=False, uses=("architecture", "meta_learner"))


@hookimpl
def register_scenarios(register: Any) -> None:
    for name, text in (("SS", "one dataset, one API architecture"),
                       ("SH", "one dataset, mixed API architectures"),
                       ("MH", "several datasets (global class ids), mixed architectures")):
        register(name, f"dfml_plugins.scenarios:build_{name.lower()}", params=getattr(P, f"{name}Params"),
                 help=text)


@hookimpl
def register_launchers(register: Any) -> None:
    register("local", "dfml_plugins.launchers.local:LocalLauncher", params=None,
             help="runs every job in this process, one after another")


@hookimpl
def register_loggers(register: Any) -> None:
    register("csv", "dfml_plugins.loggers.csv_logger:CsvLogger", params=None,
             help="writes metrics.csv beside metrics.jsonl in each run directory")
