"""RefSTAR networks: backbone blocks, the RefSel mask head, masked dual-stream fusion, the net."""

from refstar.networks.discriminator import PatchDiscriminator
from refstar.networks.fusion import DualStreamFusion, WindowCrossAttention
from refstar.networks.refsel import RefSelHead
from refstar.networks.refstar_net import (
    NetConfig,
    NetOutput,
    RefFeatures,
    RefSTARNet,
    count_parameters,
)

__all__ = [
    "DualStreamFusion",
    "NetConfig",
    "NetOutput",
    "PatchDiscriminator",
    "RefFeatures",
    "RefSTARNet",
    "RefSelHead",
    "WindowCrossAttention",
    "count_parameters",
]
