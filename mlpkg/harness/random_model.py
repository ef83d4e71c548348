"""RetinaNet ResNeXt50-32x4d FPN with seeded random weights, built from ONNX operators.

Usage: ``python -m mlpkg_harness.random_model OUT`` writes ``OUT/model.onnx`` and
``OUT/cost.json`` (parameters and multiply-adds, :mod:`.model_cost`).

The graph is the MLPerf RetinaNet's (torchvision ``retinanet_resnet50_fpn`` with a
ResNeXt50-32x4d backbone, 264 classes, exported at opset 13 for one 800 x 800 image), with
the same interface as the real model and :mod:`.synth_model`: input ``images`` float32
[1, 3, 800, 800] in 0..1; outputs ``boxes`` float32 [N, 4] (xmin, ymin, xmax, ymax in
800-px coordinates), ``scores`` float32 [N] descending, ``labels`` int64 [N], N <= 300.

* Normalisation inside the model: ``(x - mean) / std`` with ImageNet's mean and std.
* Backbone: 7x7/2 convolution (64) and 3x3/2 max pool, then bottleneck stages of
  [3, 4, 6, 3] blocks (1x1, 3x3 with 32 groups of width 4 x 2^stage, 1x1 to 4 x planes;
  stride in the 3x3; a 1x1 projection on each stage's first block). Batch norm is folded
  into each convolution's weight and bias, as in the exported model.
* FPN on C3, C4, C5: 1x1 laterals, nearest 2x top-down upsampling, 3x3 outputs, 256
  channels; P6 = 3x3/2 conv of P5 and P7 = 3x3/2 conv of ReLU(P6) (``LastLevelP6P7(256,
  256)``: P6 takes P5 because in and out channels are equal).
* Heads shared by P3..P7: 4 x (3x3 conv 256 + ReLU), then 3x3 conv to 9 x 264 class logits,
  and likewise to 9 x 4 box deltas. Post-processing: :mod:`.detect_graph`.

Weights (``numpy.random.Generator(PCG64(seed))``, float32, drawn in graph order). With batch
norm folded in as identity (biases 0) nothing renormalises the activations, so the scales
are chosen to keep the second moment of every layer near that of its input (figures in
docs/realistic-model.md):

* backbone convolutions followed by ReLU: He normal on fan_in, ``std = sqrt(2 / fan_in)``
  (fan_in = in channels / groups x kernel area). torchvision draws He on ``fan_out`` and
  relies on batch norm; with identity batch norms that would shrink each grouped 3x3 output
  32-fold.
* the two that are not followed by ReLU (each branch's last 1x1 and the projection):
  ``std = sqrt(1 / fan_in)`` (:data:`LINEAR_GAIN` x He), the branch's further scaled by
  :data:`RESIDUAL_GAIN` (the role of its last batch norm's weight): without it the
  activations grew about 1.4-fold per block, to an RMS of ~30 at C5.
* FPN and P6/P7: kaiming uniform with a = 1 (bound ``sqrt(3 / fan_in)``), biases 0, as
  torchvision.
* head towers: He normal. torchvision's normal std 0.01 would shrink the features about
  3-fold per layer (0.01 x sqrt(2304) / sqrt(2)), leaving every score within a hair of
  the prior, 0.01: no candidate at all.
* class logits: normal std :data:`CLS_STD` (torchvision's 0.01 / 5), bias
  ``-log((1 - 0.01) / 0.01)`` (torchvision's prior). All biases below it are 0, so the
  network is positively homogeneous and this std alone sets how far the scores spread
  above the prior: at 0.003 the cap of 1000 candidates per level bound on three of the
  first four synthetic images; at 0.002 between 4 and ~1700 scores per image pass 0.05,
  and NMS has real work.
* box deltas: normal std 0.01 as torchvision, bias 0.

docs/realistic-model.md has the figures: parameters against the real model's, MACs,
activation ranges and detection counts seen on the synthetic images. The bytes are the same
on every build: fixed seed and draw order, deterministic serialisation, no timestamps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import detect_graph as dg
from . import model_cost

SEED = 20261130
NUM_CLASSES = 264
IR_VERSION = 7
OPSET = 13
PRODUCER_NAME = "mlpkg-random-retinanet"
PRODUCER_VERSION = "1"
MODEL_FILE = "model.onnx"
COST_FILE = "cost.json"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # planes, blocks, stride
GROUPS = 32
FPN_CHANNELS = 256
HEAD_CONVS = 4
PRIOR = 0.01
LINEAR_GAIN = math.sqrt(0.5)  # He's sqrt(2) is for a conv followed by ReLU; these are not
RESIDUAL_GAIN = 0.5
CLS_STD = 0.002


class _Builder(dg.Ops):
    """:class:`.detect_graph.Ops` plus seeded convolution parameters."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def params(
        self,
        name: str,
        shape: tuple[int, int, int, int],
        init: Literal["normal", "uniform"],
        scale: float,
        bias: float,
    ) -> tuple[str, str]:
        """Weight ``name.weight`` of ``shape`` (``init``: "normal" with std ``scale`` or
        "uniform" in +-``scale``) and bias ``name.bias`` filled with ``bias``."""
        if init == "normal":
            w = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
        else:
            w = self.rng.random(shape, dtype=np.float32) * np.float32(2) - np.float32(1)
            w *= np.float32(scale)
        b = np.full((shape[0],), bias, dtype=np.float32)
        return self.const(f"{name}.weight", w), self.const(f"{name}.bias", b)

    def conv(self, x: str, wb: tuple[str, str], k: int, stride: int = 1, groups: int = 1) -> str:
        """A Conv node with "same"-style padding ``k // 2``."""
        p = k // 2
        return self.op(
            "Conv",
            [x, *wb],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[p, p, p, p],
            group=groups,
        )

    def he_conv(
        self,
        x: str,
        name: str,
        cio: tuple[int, int],
        k: int,
        stride: int = 1,
        groups: int = 1,
        gain: float = 1.0,
    ) -> str:
        """Backbone convolution: He normal on fan_in, times ``gain``; bias 0."""
        cin, cout = cio
        fan_in = cin // groups * k * k
        wb = self.params(
            name, (cout, cin // groups, k, k), "normal", gain * math.sqrt(2.0 / fan_in), 0.0
        )
        return self.conv(x, wb, k, stride, groups)

    def fpn_conv(self, x: str, name: str, cio: tuple[int, int], k: int, stride: int = 1) -> str:
        """FPN convolution: kaiming uniform (a = 1), bias 0."""
        cin, cout = cio
        wb = self.params(name, (cout, cin, k, k), "uniform", math.sqrt(3.0 / (cin * k * k)), 0.0)
        return self.conv(x, wb, k, stride)


def _backbone(b: _Builder) -> list[tuple[str, int]]:
    """Normalisation, stem and the four stages; returns (C3, C4, C5) with their channels."""
    mean = b.const("mean", np.array(MEAN, np.float32).reshape(1, 3, 1, 1))
    std = b.const("std", np.array(STD, np.float32).reshape(1, 3, 1, 1))
    x = b.op("Div", [b.op("Sub", ["images", mean]), std])
    x = b.op("Relu", [b.he_conv(x, "backbone.conv1", (3, 64), 7, 2)])
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin, outs = 64, []
    for s, (planes, blocks, stride) in enumerate(STAGES, start=1):
        width, cout = planes * 2, planes * 4
        for i in range(blocks):
            name = f"backbone.layer{s}.{i}"
            st = stride if i == 0 else 1
            y = b.op("Relu", [b.he_conv(x, f"{name}.conv1", (cin, width), 1)])
            y = b.op("Relu", [b.he_conv(y, f"{name}.conv2", (width, width), 3, st, GROUPS)])
            y = b.he_conv(y, f"{name}.conv3", (width, cout), 1, gain=LINEAR_GAIN * RESIDUAL_GAIN)
            if i == 0:
                x = b.he_conv(x, f"{name}.downsample", (cin, cout), 1, st, gain=LINEAR_GAIN)
            idn = x
            x = b.op("Relu", [b.op("Add", [y, idn])])
            cin = cout
        outs.append((x, cout))
    return outs[1:]


def _fpn(b: _Builder, feats: list[tuple[str, int]]) -> list[str]:
    """P3..P7 (256 channels each) from C3..C5."""
    c = FPN_CHANNELS
    inner = [b.fpn_conv(f, f"fpn.inner_blocks.{i}", (ch, c), 1) for i, (f, ch) in enumerate(feats)]
    last = inner[2]
    scales = b.const("upsample_scales", np.array([1, 1, 2, 2], np.float32))
    results = [b.fpn_conv(last, "fpn.layer_blocks.2", (c, c), 3)]
    for i in (1, 0):
        up = b.op(
            "Resize",
            [last, "", scales],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
        last = b.op("Add", [inner[i], up])
        results.insert(0, b.fpn_conv(last, f"fpn.layer_blocks.{i}", (c, c), 3))
    p6 = b.fpn_conv(results[-1], "fpn.extra_blocks.p6", (c, c), 3, 2)
    p7 = b.fpn_conv(b.op("Relu", [p6]), "fpn.extra_blocks.p7", (c, c), 3, 2)
    return [*results, p6, p7]


def _head(b: _Builder, name: str, outputs: int, std: float, bias: float) -> list[tuple[str, str]]:
    """Shared parameters of one head: the tower's convolutions, then the predictor."""
    c, k = FPN_CHANNELS, 3
    tower = [
        b.params(f"head.{name}.conv.{i}", (c, c, k, k), "normal", math.sqrt(2.0 / (c * k * k)), 0.0)
        for i in range(HEAD_CONVS)
    ]
    last = b.params(f"head.{name}.predictor", (outputs, c, k, k), "normal", std, bias)
    return [*tower, last]


def _apply_head(b: _Builder, x: str, params: list[tuple[str, str]]) -> str:
    for wb in params[:-1]:
        x = b.op("Relu", [b.conv(x, wb, 3)])
    return b.conv(x, params[-1], 3)


def feature_sizes(image: int = dg.IMAGE_SIZE) -> list[int]:
    """Side of P3..P7 for a square input: stem /4, then /2 per stage and per extra level."""
    side = (image + 2 * 3 - 7) // 2 + 1  # stem conv
    side = (side + 2 - 3) // 2 + 1  # max pool: C2
    sizes = []
    for _ in range(5):  # C3, C4, C5 (3x3 stride 2), then P6, P7
        side = (side + 2 - 3) // 2 + 1
        sizes.append(side)
    return sizes


def build_model(seed: int = SEED) -> Any:
    """Return the model as a checked ``onnx.ModelProto``."""
    import onnx  # type: ignore[import-untyped,unused-ignore]
    from onnx import TensorProto, helper

    b = _Builder(seed)
    levels = _fpn(b, _backbone(b))
    a = dg.ANCHORS_PER_LOCATION
    prior_bias = -math.log((1 - PRIOR) / PRIOR)
    cls = _head(b, "classification", a * NUM_CLASSES, CLS_STD, prior_bias)
    reg = _head(b, "regression", a * 4, 0.01, 0.0)
    anchors = dg.anchors(feature_sizes())
    candidates = [
        dg.level_candidates(
            b, i + 3, (_apply_head(b, p, cls), _apply_head(b, p, reg)), anchors[i], NUM_CLASSES
        )
        for i, p in enumerate(levels)
    ]
    dg.select(b, candidates, NUM_CLASSES)
    size = dg.IMAGE_SIZE
    graph = helper.make_graph(
        b.nodes,
        "retinanet_resnext50_32x4d_fpn_random",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"]),
        ],
        initializer=b.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string=f"RetinaNet ResNeXt50-32x4d FPN, 264 classes, random weights (seed {seed}).",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build(path: Path, seed: int = SEED) -> model_cost.Cost:
    """Write the model to ``path`` (the same bytes for the same seed); returns its cost."""
    model = build_model(seed)
    _write(path, model.SerializeToString(deterministic=True))
    return model_cost.count(model)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: write OUT/model.onnx and OUT/cost.json; returns the exit status."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m mlpkg_harness.random_model",
        description="Write RetinaNet ResNeXt50-32x4d FPN with seeded random weights (ONNX).",
    )
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--seed", type=int, default=SEED, help=f"weights seed ({SEED})")
    args = parser.parse_args(argv)
    cost = build(args.out / MODEL_FILE, args.seed)
    text = json.dumps(cost.as_dict(), indent=2, sort_keys=True) + "\n"
    _write(args.out / COST_FILE, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
