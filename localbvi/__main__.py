"""`python -m localbvi` is the same program as the `localbvi` console script."""

import sys

from localbvi.console import main

if __name__ == "__main__":
    sys.exit(main())
