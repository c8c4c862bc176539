"""An extension module whose import fails, as when a dependency is not installed."""

import forsun_test_missing_dependency  # noqa: F401

from forsun.extension import Extension


class BrokenImportExtension(Extension):
    name = "broken-import"
