"""Models: the ViT encoder and its checkpoint formats (DINOv2, timm, transformers)."""

from __future__ import annotations

from raddino_lib.models.backbone import BackboneSpec, ViTBackbone, build_backbone, spec_from_config
from raddino_lib.models.formats import (
    CheckpointFormatError,
    LoadedBackbone,
    detect_format,
    export_hf,
    hf_config_dict,
    hf_to_native,
    infer_spec,
    load_backbone,
    load_head_state,
    load_state_dict_file,
    native_to_hf,
    preprocessor_config_dict,
    resample_pos_embed,
    spec_from_hf_config,
    split_checkpoint,
    to_native,
)

__all__ = [
    "BackboneSpec",
    "CheckpointFormatError",
    "LoadedBackbone",
    "ViTBackbone",
    "build_backbone",
    "detect_format",
    "export_hf",
    "hf_config_dict",
    "hf_to_native",
    "infer_spec",
    "load_backbone",
    "load_head_state",
    "load_state_dict_file",
    "native_to_hf",
    "preprocessor_config_dict",
    "resample_pos_embed",
    "spec_from_config",
    "spec_from_hf_config",
    "split_checkpoint",
    "to_native",
]
