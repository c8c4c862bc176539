"""The ``beanstalk`` action: puts ``body`` as a job into a beanstalkd tube with greenstalk.

Params: ``body`` (required, may be empty), ``name`` (the tube, default "default"), ``host``
(127.0.0.1), ``port`` (11300), ``max_connections`` (setting ACTION_BEANSTALK_MAX_CONNECTIONS),
``connect_timeout``, ``timeout``. Jobs get beanstalkd's usual priority 65536, no delay and a
60 s time-to-run.

A refused, dropped or timed-out connection, and a server that is draining or out of memory,
raise ActionExecuteRetry; a bad tube name, a job over the server's size limit or any other
error answer is final.

greenstalk blocks, so each (host, port) target has a pool of its own threads
(:class:`forsun.action.pool.ThreadPool`); connections are reused (switching tube only when
needed), checked before reuse, dropped after an error and closed after ACTION_IDLE_SECONDS
unused.
"""

import socket
from typing import Optional

import greenstalk

from ...error import ActionExecuteRetry
from ..action import Action, ExecuteActionError
from ..params import integer, required, setting, timeouts
from ..pool import Targets, ThreadPool

# Answers of a server that may accept the job later.
RETRY_ERRORS = (greenstalk.DrainingError, greenstalk.OutOfMemoryError, greenstalk.InternalError)

_targets: Targets[ThreadPool] = Targets()


class _Connection:
    """A greenstalk client on a socket we open (greenstalk itself sets no timeouts), and the
    tube it currently uses."""

    def __init__(self, host: str, port: int, connect_timeout: float, timeout: float):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.settimeout(timeout)
        self.client = greenstalk.Client(self.sock)
        self.tube: Optional[str] = greenstalk.DEFAULT_TUBE

    def put(self, tube: str, body: str) -> None:
        if tube != self.tube:
            self.tube = None  # unknown until the server confirmed the switch
            self.client.use(tube)
            self.tube = tube
        self.client.put(body)

    def alive(self) -> bool:
        """An idle connection has nothing to read: anything readable is the server's end of
        the connection (or bytes nobody asked for), so the connection is not reused."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        return False

    def close(self) -> None:
        self.client.close()


class BeanstalkAction(Action):
    async def execute(self, *args, **kwargs) -> None:
        params = self.params
        body = required(params, "body", allow_empty=True)
        tube = params.get("name") or greenstalk.DEFAULT_TUBE
        host = (params.get("host") or "127.0.0.1").strip()
        port = integer(params, "port", 11300, 1, 65535)
        description = "beanstalk %s:%d" % (host, port)

        def make() -> ThreadPool:
            connect_timeout, timeout = timeouts(params)
            size = integer(params, "max_connections",
                           int(setting("ACTION_BEANSTALK_MAX_CONNECTIONS")), 1)
            return ThreadPool(description, size, float(setting("ACTION_IDLE_SECONDS")),
                              lambda: _Connection(host, port, connect_timeout, timeout),
                              _Connection.close, _Connection.alive)

        pool = _targets.get((host, port), make)
        try:
            await pool.run(lambda connection: connection.put(tube, body),
                           timeouts(params)[1])
        except RETRY_ERRORS as e:
            raise ActionExecuteRetry("%s: %s" % (description, type(e).__name__)) from None
        except greenstalk.Error as e:
            raise ExecuteActionError("%s tube %r: %s" % (description, tube, type(e).__name__)) \
                from None
        except OSError as e:
            raise ActionExecuteRetry("%s: %s" % (description, str(e) or type(e).__name__)) \
                from None

    @classmethod
    async def uninit(cls) -> None:
        await _targets.close()
