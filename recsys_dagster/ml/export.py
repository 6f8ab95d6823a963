"""ONNX export of the user tower (CONTRACTS `artifacts`: inputs history_emb, history_mask,
device (unknown = 3), hour (0..23, unknown = 24); output user_vec; batch and history
length dynamic)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch

from recsys_dagster.ml.model import N_DEVICES, N_HOURS, UNKNOWN_DEVICE, UNKNOWN_HOUR, TwoTower

INPUT_NAMES = ("history_emb", "history_mask", "device", "hour")
OUTPUT_NAME = "user_vec"

# The exporter warns once per torchvision op it cannot register; torchvision is not used.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


class OnnxParityError(AssertionError):
    """The exported ONNX graph disagrees with the torch model."""


def example_inputs(dim: int, batch: int = 2, length: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random contract-shaped inputs; row 0 has an empty history and unknown device and hour."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(batch, length, dim, generator=g), dim=-1)
    lengths = torch.randint(0, length + 1, (batch,), generator=g)
    lengths[0] = 0
    mask = (torch.arange(length)[None, :] >= (length - lengths)[:, None]).float()  # left-padded
    emb = emb * mask[..., None]
    device = torch.randint(0, N_DEVICES, (batch,), generator=g)
    hour = torch.randint(0, N_HOURS, (batch,), generator=g)
    device[0], hour[0] = UNKNOWN_DEVICE, UNKNOWN_HOUR
    return emb, mask, device, hour


def export_user_tower(model: TwoTower, path: str | Path, opset: int = 18) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tower = copy.deepcopy(model.user_tower).cpu().float().eval()
    args = example_inputs(model.dim, batch=3, length=4)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("history_len")
    dynamic = {
        "history_emb": {0: batch, 1: length},
        "history_mask": {0: batch, 1: length},
        "device": {0: batch},
        "hour": {0: batch},
    }
    program = torch.onnx.export(
        tower,
        args,
        input_names=list(INPUT_NAMES),
        output_names=[OUTPUT_NAME],
        dynamic_shapes=dynamic,
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    program.save(str(path), external_data=False)
    return path


def verify_onnx(
    model: TwoTower, path: str | Path, batch: tuple[int, ...] = (1, 7), lengths: tuple[int, ...] = (1, 13)
) -> float:
    """Max abs difference between onnxruntime and torch over (B, L) pairs; raises
    OnnxParityError above 1e-4."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    if tuple(names) != INPUT_NAMES or sess.get_outputs()[0].name != OUTPUT_NAME:
        raise OnnxParityError(f"ONNX signature {names} -> {[o.name for o in sess.get_outputs()]} breaks the contract")
    tower = copy.deepcopy(model.user_tower).cpu().float().eval()
    worst = 0.0
    for i, (b, L) in enumerate(zip(batch, lengths, strict=True)):
        args = example_inputs(model.dim, batch=b, length=L, seed=100 + i)
        with torch.no_grad():
            ref = tower(*args).numpy()
        feeds = {n: a.numpy() for n, a in zip(INPUT_NAMES, args, strict=True)}
        got = sess.run([OUTPUT_NAME], feeds)[0]
        if got.shape != ref.shape or not np.isfinite(got).all():
            raise OnnxParityError(
                f"ONNX output shape {got.shape} / finite={np.isfinite(got).all()} vs torch {ref.shape}"
            )
        worst = max(worst, float(np.abs(got - ref).max()))
    if worst >= 1e-4:
        raise OnnxParityError(f"ONNX vs torch max abs diff {worst:.2e} >= 1e-4")
    return worst
