"""Shared constants of the synthetic OpenImages set and the synthetic RetinaNet model.

Both :mod:`.synth_dataset` (which draws the images) and :mod:`.synth_model` (which detects
what was drawn) read this table, so the detector and the data agree by construction.

Contract:

* :data:`MLPERF_CLASSES` is the real MLPerf OpenImages class list (264 display names, in the
  order the MLCommons download scripts pass them to ``--classes``; category id = position).
  Source: the ``MLPERF_CLASSES`` array in mlcommons/inference
  ``vision/classification_and_detection/tools/openimages_mlperf.sh`` (identical in
  mlcommons/training ``single_stage_detector/scripts/download_openimages_mlperf.sh``).
* :data:`COLOUR_CLASSES` maps 12 saturated colours (RGB, 0..255) to category ids spread over
  0..263. Each synthetic object is a solid rectangle of its category's colour; backgrounds
  are low-saturation, so no class colour occurs outside an object.
* The detector's colour tolerance :data:`COLOUR_TOLERANCE` (Euclidean distance in 0..1 RGB,
  0.2) plus the largest colour jitter (0.054) stays below the smallest distance between two
  class colours (0.44), between a class colour and a blend of another class colour with a
  background (0.30), and half the distance to any background colour (0.57).
"""

from __future__ import annotations

from typing import Final

from .openimages_classes import MLPERF_CLASSES as MLPERF_CLASSES

#: Side of the square model input (pixels).
INPUT_SIZE: Final = 800

#: Seed of ``numpy.random.default_rng`` for the synthetic dataset.
SEED: Final = 42

#: Default number of synthetic images.
DEFAULT_IMAGES: Final = 64

#: JPEG quality used by ``cv2.imwrite`` (chroma not subsampled: 4:4:4).
JPEG_QUALITY: Final = 95

#: Object edges lie on this pixel grid: with 4:4:4 JPEG no 8x8 DCT block straddles an
#: object edge, so the decoded rectangle keeps its exact extent.
GRID: Final = 8

#: The 264 MLPerf OpenImages classes; category id = index.
# fmt: off
# fmt: on

#: (category id, (R, G, B)) for every colour the synthetic objects use: the 12 hues of a
#: 30-degree colour wheel at full saturation, with 0 -> 16, 0.5 -> 128 and 1 -> 240 so
#: that JPEG never clips. Adjacent hues are 112 levels (0.44 in 0..1 units) apart.
COLOUR_CLASSES: Final[tuple[tuple[int, tuple[int, int, int]], ...]] = (
    (238, (240, 16, 16)),  # red: Tomato
    (164, (240, 128, 16)),  # orange: Orange
    (5, (240, 240, 16)),  # yellow: Banana
    (95, (128, 240, 16)),  # chartreuse: Frog
    (26, (16, 240, 16)),  # green: Broccoli
    (66, (16, 240, 128)),  # spring green: Cucumber
    (224, (16, 240, 240)),  # cyan: Swimming pool
    (0, (16, 128, 240)),  # azure: Airplane
    (132, (16, 16, 240)),  # blue: Jeans
    (140, (128, 16, 240)),  # violet: Lavender (Plant)
    (146, (240, 16, 240)),  # magenta: Lipstick
    (187, (240, 16, 128)),  # rose: Rose
)

#: A pixel belongs to a colour class when its Euclidean RGB distance (0..1 units) to the
#: class colour is below this.
COLOUR_TOLERANCE: Final = 0.2

#: Each object's colour is jittered by at most this many levels per channel.
COLOUR_JITTER: Final = 8

#: Background grey levels stay within [BACKGROUND_MIN, BACKGROUND_MAX]; the channels of a
#: background pixel differ by at most 2 * BACKGROUND_TINT levels.
BACKGROUND_MIN: Final = 60
BACKGROUND_MAX: Final = 200
BACKGROUND_TINT: Final = 10

#: Side of the square kernel of the detector's morphological opening, in 800-px input
#: pixels: specks and strips thinner than this (e.g. edge blends from resizing) vanish.
OPENING_KERNEL: Final = 3

#: Detected boxes are pushed out by this many input pixels on each side: the colour mask
#: keeps a blended edge pixel only when it is mostly object colour (about 70% with the
#: tolerance above), so raw mask edges sit about a quarter pixel inside the true edge.
BOX_OUTSET: Final = 0.25

#: A class is reported present when its cleaned mask has more than this many pixels
#: (the smallest synthetic object covers at least 64 x 64 input pixels).
MIN_MASK_PIXELS: Final = 256


def category_names() -> list[str]:
    """Return the 264 category names, index = category id."""
    return list(MLPERF_CLASSES)


def colour_category_ids() -> list[int]:
    """Return the category ids of :data:`COLOUR_CLASSES`, in table order."""
    return [cat for cat, _ in COLOUR_CLASSES]
