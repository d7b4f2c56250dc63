import sys

from cimc.cli import main

sys.exit(main())
