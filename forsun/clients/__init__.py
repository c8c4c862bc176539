"""Python clients of the Thrift API, importable as in forsun 0.1.x.

``ThriftClient`` blocks (thrift's own socket transport); ``TorThriftClient`` offers the same
methods as coroutines on Tornado streams. Both raise ``forsun.thriftapi.ttypes.ForsunPlanError``
for the errors the server reports with a code.
"""

from forsun.thriftapi.ttypes import ForsunPlan, ForsunPlanError

from .thrift_client import ThriftClient
from .tor_client import TorThriftClient

__all__ = ["ThriftClient", "TorThriftClient", "ForsunPlan", "ForsunPlanError"]
