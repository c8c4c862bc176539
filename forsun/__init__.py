"""forsun: a timed-task service holding millions of delay and crontab-like plans.

The package mirrors the architecture: ``plan`` (the plan model and pure time functions),
``forsun`` (the core that creates, removes and fires plans), ``timer`` (which seconds to
fire), ``store`` (where plans live), ``action`` (what a fire does), ``servers`` (Thrift and
HTTP front ends), ``clients`` (Python clients) and ``daemon`` (the ``forsund`` process).
"""

from .version import version, version_info

__all__ = ["version", "version_info"]
