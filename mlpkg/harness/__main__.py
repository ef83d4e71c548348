"""``python -m mlpkg_harness``: run the RetinaNet benchmark (see :mod:`.main`)."""

import sys

from .main import main

sys.exit(main())
