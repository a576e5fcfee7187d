"""NVFP4 post-training quantization with NVIDIA Model Optimizer (imports torch; never on the CLI start-up path)."""
