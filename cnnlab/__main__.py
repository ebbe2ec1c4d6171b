"""`python -m cnnlab`: the same entry point as the `cnnlab` console script."""

from cnnlab.cli import main

raise SystemExit(main())
