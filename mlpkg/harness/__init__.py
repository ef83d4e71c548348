"""MLPerf Inference RetinaNet harness: LoadGen over an ONNX Runtime session.

Runs inside the benchmark closure (installed as the top-level package ``mlpkg_harness``,
``python -m mlpkg_harness``; in this repository it is ``mlpkg.harness``). It imports nothing
of mlpkg: only the standard library, numpy, onnxruntime, mlperf_loadgen and pycocotools (the
preprocessing and synthetic-data modules also use cv2 and onnx). See :mod:`.main` for the
command line and the ``harness.json`` it writes, and :mod:`.accuracy` for the mAP tool.

Unlike mlpkg (3.11+), the harness runs on every interpreter the collection offers, Python 3.9
to 3.13, with numpy 1.26 or 2.x, ONNX Runtime 1.12.1 or later and LoadGen 4.0 or later: no
syntax or standard-library API newer than 3.9 (no ``zip(strict=)``, no ``X | Y`` outside
annotations, which stay unevaluated through ``from __future__ import annotations``). Guarded
by ``tests/harness/test_py39_compat.py``.
"""

__version__ = "1.0"
