import sys

from labs.home.app import main

sys.exit(main())
