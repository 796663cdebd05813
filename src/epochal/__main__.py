"""``python -m epochal`` is the ``epochal`` command."""

from epochal.cli import main

raise SystemExit(main())
