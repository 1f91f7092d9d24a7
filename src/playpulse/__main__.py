"""``python -m playpulse``: the same as the ``playpulse`` command."""

from playpulse.cli import main

main()
