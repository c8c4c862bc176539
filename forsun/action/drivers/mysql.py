"""The ``mysql`` action: runs ``sql`` in one transaction with PyMySQL, in worker threads.

Params: ``sql`` (required; several statements separated by ``;`` are allowed and all run in
the same transaction), ``host`` (127.0.0.1), ``port`` (3306), ``db`` (mysql), ``user``
(setting ACTION_MYSQL_USER), ``passwd`` (setting ACTION_MYSQL_PASSWD; ``passwd=`` means an
empty password), ``max_connections`` (setting ACTION_MYSQL_MAX_CONNECTIONS),
``connect_timeout``, ``timeout`` (seconds a query may wait on the server).

The transaction is committed when every statement succeeded and rolled back otherwise
(statements MySQL commits implicitly, like CREATE TABLE, cannot be rolled back). Losing or
not getting the connection, too many connections, a lock wait timeout or a deadlock raise
ActionExecuteRetry; any other error (bad SQL, a duplicate key, access denied) is final.

PyMySQL blocks, so each (host, port, user, password, db) target has a pool of its own threads
(:class:`forsun.action.pool.ThreadPool`) of ``max_connections``: connections are reused, pinged
before reuse (a restarted server gets a fresh connection), dropped after an error, and closed
after ACTION_MYSQL_IDLE_SECONDS unused. A fire waits at most
ACTION_MYSQL_WAIT_CONNECTION_TIMEOUT (and ``timeout``) for a free connection.
"""

import pymysql
from pymysql.constants import CLIENT

from ... import config
from ...error import ActionExecuteRetry
from ..action import Action, ExecuteActionError
from ..params import integer, required, timeouts
from ..pool import Targets, ThreadPool

# Error codes a later attempt may fix: cannot connect (2002, 2003), server gone or connection
# lost (2006, 2013), too many connections (1040), lock wait timeout (1205), deadlock (1213).
RETRY_CODES = frozenset((2002, 2003, 2006, 2013, 1040, 1205, 1213))

_targets: Targets[ThreadPool] = Targets()


def _alive(connection: pymysql.connections.Connection) -> bool:
    try:
        connection.ping()
        return True
    except Exception:
        return False


def _transaction(sql: str, connection: pymysql.connections.Connection) -> None:
    """In a worker thread: every statement of ``sql``, then commit; rollback on any error."""
    connection.begin()
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            while cursor.nextset():  # reports an error in a later statement
                pass
        connection.commit()
    except BaseException:
        try:
            connection.rollback()
        except Exception:
            pass  # the connection is gone; the server drops the transaction itself
        raise


class MysqlAction(Action):
    async def execute(self, *args, **kwargs) -> None:
        params = self.params
        sql = required(params, "sql")
        host = (params.get("host") or "127.0.0.1").strip()
        port = integer(params, "port", 3306, 1, 65535)
        db = params.get("db") or "mysql"
        user = params.get("user") or str(config.get("ACTION_MYSQL_USER"))
        passwd = params["passwd"] if "passwd" in params else str(config.get("ACTION_MYSQL_PASSWD"))
        connect_timeout, timeout = timeouts(params)
        description = "mysql %s@%s:%d/%s" % (user, host, port, db)

        def connect() -> pymysql.connections.Connection:
            return pymysql.connect(
                host=host, port=port, user=user, password=passwd, database=db,
                charset="utf8mb4", autocommit=False, client_flag=CLIENT.MULTI_STATEMENTS,
                connect_timeout=connect_timeout, read_timeout=timeout, write_timeout=timeout)

        def make() -> ThreadPool:
            size = integer(params, "max_connections",
                           int(config.get("ACTION_MYSQL_MAX_CONNECTIONS")), 1)
            return ThreadPool(description, size, float(config.get("ACTION_MYSQL_IDLE_SECONDS")),
                              connect, pymysql.connections.Connection.close, _alive)

        pool = _targets.get((host, port, user, passwd, db), make)
        wait = min(float(config.get("ACTION_MYSQL_WAIT_CONNECTION_TIMEOUT")), timeout)
        try:
            await pool.run(lambda connection: _transaction(sql, connection), wait)
        except pymysql.err.MySQLError as e:
            error = ActionExecuteRetry if _retryable(e) else ExecuteActionError
            raise error("%s: %s" % (description, _message(e))) from None
        except OSError as e:
            raise ActionExecuteRetry("%s: %s" % (description, str(e) or type(e).__name__)) \
                from None

    @classmethod
    async def uninit(cls) -> None:
        await _targets.close()


def _retryable(error: pymysql.err.MySQLError) -> bool:
    """A broken connection (InterfaceError) or an OperationalError with a RETRY_CODES code."""
    if isinstance(error, pymysql.err.InterfaceError):
        return True
    code = error.args[0] if error.args else 0
    return isinstance(error, pymysql.err.OperationalError) and code in RETRY_CODES


def _message(error: pymysql.err.MySQLError) -> str:
    if len(error.args) >= 2:
        return "(%s) %s" % (error.args[0], error.args[1])
    return str(error) or type(error).__name__
