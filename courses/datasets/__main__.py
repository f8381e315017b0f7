"""`python -m courses.datasets [--check]`: write (or check) the courses' recorded data."""

import sys

from courses.datasets import main

sys.exit(main())
