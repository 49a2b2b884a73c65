"""``python -m medlearn ...``: the ``medlearn`` command (:func:`medlearn.cli.main`)."""

from medlearn.cli import main

raise SystemExit(main())
