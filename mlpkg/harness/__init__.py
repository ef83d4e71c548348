"""MLPerf Inference RetinaNet harness: LoadGen over an ONNX Runtime session.

Runs inside the benchmark closure (installed as the top-level package ``mlpkg_harness``,
``python -m mlpkg_harness``; in this repository it is ``mlpkg.harness``). It imports nothing
of mlpkg: only the standard library, numpy, onnxruntime, mlperf_loadgen and pycocotools (the
preprocessing and synthetic-data modules also use cv2 and onnx). See :mod:`.main` for the
command line and the ``harness.json`` it writes, and :mod:`.accuracy` for the mAP tool.
"""

__version__ = "1.0"
