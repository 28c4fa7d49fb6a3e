"""The built-in components' parameter dataclasses under one import path, for code written when
they lived in this module. Each is declared in its component's folder (`GROUP/COMPONENT/__init__.py`);
import it from there."""

from __future__ import annotations

from dfml_plugins.common import Variant, variant_params, variant_table
from dfml_plugins.datasets.glyphs import GLYPH_DOMAINS, GlyphsParams
from dfml_plugins.datasets.real import CifarFSParams, CUBParams, MiniImageNetParams
from dfml_plugins.estimators.zeroth_order import WhiteBoxEstimatorParams, ZOParams
from dfml_plugins.launchers.local import LocalLauncherParams
from dfml_plugins.launchers.ray_tasks import RayLauncherParams
from dfml_plugins.launchers.slurm import SlurmLauncherParams
from dfml_plugins.meta_learners.kd import KDParams
from dfml_plugins.meta_learners.maml import MamlParams
from dfml_plugins.meta_learners.protonet import ProtoNetParams
from dfml_plugins.methods.bidf_mkd import BIDF_MKD_PARAMS, BIDF_MKD_VARIANTS, BidfMkdParams
from dfml_plugins.methods.kd_distill import KDDistillParams
from dfml_plugins.methods.oracle_learner import OracleLearnerParams
from dfml_plugins.methods.purer import PURER_PARAMS, PURER_VARIANTS, PurerParams
from dfml_plugins.models.conv4 import Conv4Params
from dfml_plugins.models.resnet import ResNetParams
from dfml_plugins.pools.http import HttpPoolParams
from dfml_plugins.recoverers.deepinversion import DeepInversionParams
from dfml_plugins.recoverers.generator import GeneratorRecovererParams, NoiseRecovererParams
from dfml_plugins.replay.api_tasks import ApiTasksParams
from dfml_plugins.replay.task_memory import NoReplayParams, TaskMemoryParams
from dfml_plugins.scenarios.standard import (ALL_ARCHS, ALL_GLYPHS, LETTERS, CustomScenarioParams, MHParams,
                                             ScenarioParams, SHParams, SSParams)

# the variants' generated dataclasses (BidfMkdFoParams, PurerFoParams, ...), importable by name here too
globals().update({cls.__name__: cls for table in (BIDF_MKD_PARAMS, PURER_PARAMS) for cls in table.values()})

__all__ = [
    "ALL_ARCHS", "ALL_GLYPHS", "BIDF_MKD_PARAMS", "BIDF_MKD_VARIANTS", "GLYPH_DOMAINS", "LETTERS", "PURER_PARAMS",
    "PURER_VARIANTS", "ApiTasksParams", "BidfMkdParams", "CifarFSParams", "Conv4Params", "CUBParams",
    "CustomScenarioParams", "DeepInversionParams", "GeneratorRecovererParams", "GlyphsParams", "HttpPoolParams",
    "KDDistillParams", "KDParams", "LocalLauncherParams", "MamlParams", "MHParams", "MiniImageNetParams",
    "NoiseRecovererParams", "NoReplayParams", "OracleLearnerParams", "ProtoNetParams", "PurerParams",
    "RayLauncherParams", "ResNetParams", "ScenarioParams", "SHParams", "SlurmLauncherParams", "SSParams",
    "TaskMemoryParams", "Variant", "WhiteBoxEstimatorParams", "ZOParams", "variant_params",
    "variant_table",
]
