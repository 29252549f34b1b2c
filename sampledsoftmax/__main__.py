"""``python -m sampledsoftmax <command>``: the same as the ``sampledsoftmax`` console script."""

from sampledsoftmax.cli import main

raise SystemExit(main())
