"""Entry point for `python -m stack`."""
import sys

from stack.launcher import main

sys.exit(main())
