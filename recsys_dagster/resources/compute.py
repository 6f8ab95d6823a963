"""Where training runs: `auto` picks CUDA (bf16 autocast) when present, CPU otherwise."""


from dagster import ConfigurableResource


class ComputeResource(ConfigurableResource):
    device: str = "auto"
    amp: bool = True

    def resolve(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
