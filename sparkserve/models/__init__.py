"""Target model architectures, HF config handling and safetensors loading."""
