"""Remote code of a tiny Kimi-K2.x-shaped model (language_model + vision_tower + mm_projector), written
beside its weights in tests, as the real release ships configuration_kimi_k25.py / modeling_kimi_k25.py."""

CONFIG_CODE = """
from transformers import PretrainedConfig, DeepseekV3Config


class KimiK25Config(PretrainedConfig):
    model_type = "kimi_k25"
    sub_configs = {"text_config": DeepseekV3Config}

    def __init__(self, text_config=None, vision_config=None, **kwargs):
        if isinstance(text_config, dict):
            text_config = DeepseekV3Config(**text_config)
        self.text_config = text_config if text_config is not None else DeepseekV3Config()
        self.vision_config = vision_config or {"vt_hidden_size": 32, "vt_num_hidden_layers": 2}
        super().__init__(**kwargs)
"""

MODEL_CODE = """
import torch
from torch import nn
from transformers import PreTrainedModel, DeepseekV3ForCausalLM, GenerationMixin
from .configuration_kimi_k25 import KimiK25Config


class VisionBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.wqkv = nn.Linear(width, 3 * width)
        self.wo = nn.Linear(width, width)
        self.mlp = nn.Module()
        self.mlp.fc0 = nn.Linear(width, 2 * width)
        self.mlp.fc1 = nn.Linear(2 * width, width)


class VisionTower(nn.Module):
    def __init__(self, width, blocks):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.blocks = nn.ModuleList(VisionBlock(width) for _ in range(blocks))


class Projector(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(4 * width, 4 * width), nn.GELU(), nn.Linear(4 * width, hidden))


class KimiK25ForConditionalGeneration(PreTrainedModel, GenerationMixin):
    config_class = KimiK25Config
    base_model_prefix = ""
    _no_split_modules = []

    def __init__(self, config):
        super().__init__(config)
        width = config.vision_config["vt_hidden_size"]
        self.vision_tower = VisionTower(width, config.vision_config["vt_num_hidden_layers"])
        self.mm_projector = Projector(width, config.text_config.hidden_size)
        self.language_model = DeepseekV3ForCausalLM(config.text_config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return self.language_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
"""
