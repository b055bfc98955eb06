"""Imported by pytest before any test: ``models.encoder`` sets MKL's strict reproducibility
(``MKL_CBWR``), which MKL reads at its first call, so it must precede every test's torch work."""

import models.encoder  # noqa: F401
