"""Where training runs: `auto` picks CUDA (bf16 autocast) when present, CPU otherwise."""

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from recsys_dagster.settings import DEFAULT_DEVICE


class ComputeResource(ConfigurableResource):
    device: str = Field(default=DEFAULT_DEVICE, description="auto | cpu | cuda | cuda:N")
    amp: bool = Field(default=True, description="bf16 autocast on CUDA (ignored on CPU).")
    checkpoint_root: str = Field(description="Local folder that keeps checkpoints between attempts of a run.")

    def resolve(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def checkpoint_dir(self, partition: str) -> Path:
        # Kept on local disk so a crashed run resumes; the asset removes it on success.
        return Path(self.checkpoint_root) / f"week={partition}"
