import sys

from prefmatch.cli import main

sys.exit(main())
