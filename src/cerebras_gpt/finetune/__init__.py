"""Fine-tuning for downstream tasks: record formatting and batching (data), LoRA adapters (lora), task
metrics (tasks) and the run itself (run), on top of the training loop in `cerebras_gpt.train`."""

from cerebras_gpt.finetune.data import FinetuneLoader, build_examples, encode_record, read_records
from cerebras_gpt.finetune.lora import LoRAConfig, LoRAGPT, apply_lora, load_adapter
from cerebras_gpt.finetune.run import FinetuneArgs, finetune
from cerebras_gpt.finetune.tasks import task_metrics

__all__ = [
    "FinetuneArgs",
    "FinetuneLoader",
    "LoRAConfig",
    "LoRAGPT",
    "apply_lora",
    "build_examples",
    "encode_record",
    "finetune",
    "load_adapter",
    "read_records",
    "task_metrics",
]
