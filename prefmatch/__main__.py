import sys

from prefmatch.cli import main

if __name__ == "__main__":  # spawned worker processes (prefmatch opinion --jobs N) import this module
    sys.exit(main())
