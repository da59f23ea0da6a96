"""``python -m affectlocus …`` (and ``accelerate launch -m affectlocus train …``): the same CLI."""
import sys

from .cli import main

sys.exit(main())
