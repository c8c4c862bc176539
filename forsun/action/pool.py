"""Per-target connection pools of the built-in actions, written once for all of them.

Every target an action talks to (a host and port, with db and user where they matter) gets
its own pool, so a slow or dead target only ever holds up fires that go to that same target.

- :class:`AsyncPool` holds connections used on the IOLoop (the thrift action's streams).
- :class:`ThreadPool` holds blocking clients (PyMySQL, greenstalk). Each target has its own
  executor of ``size`` threads and its connections are only ever used inside it, so a blocking
  call never runs on the IOLoop and a hung target cannot take the threads of another one.
- :class:`SharedTarget` wraps a client that pools by itself (redis-py's pool).

All three keep at most ``size`` connections open, reuse idle ones (most recent first), drop
a connection that saw any error so the next fire opens a fresh one (this is how a restarted
target is reconnected), close what stayed unused ``idle_seconds``, and forget themselves once
nothing is open, so a target no plan uses any more costs nothing. Bookkeeping happens on the
IOLoop thread only; worker threads just open, use and close connections.
"""

import asyncio
import concurrent.futures
import logging
from contextlib import asynccontextmanager
from typing import (AsyncIterator, Awaitable, Callable, Dict, Generic, Hashable, List,
                    Optional, Tuple, TypeVar)

from tornado.ioloop import IOLoop

from ..error import ActionExecuteRetry

log = logging.getLogger("forsun.action")

C = TypeVar("C")
R = TypeVar("R")
T = TypeVar("T", bound="Target")


class Target:
    """Idle bookkeeping shared by every pool: a timer runs only while something sits idle."""

    def __init__(self, description: str, idle_seconds: float):
        self.description = description
        self.idle_seconds = float(idle_seconds)
        self.busy = 0  # fires using the target or waiting for one of its connections
        self.closed = False
        self._timer: Optional[object] = None
        self._forget: Callable[[], None] = lambda: None

    def idle_since(self) -> Optional[float]:
        """IOLoop time since which the longest-idle connection has been unused, or None."""
        raise NotImplementedError

    def expire(self, before: float) -> Optional[Awaitable[None]]:
        """Closes what has been unused since ``before``; may return an awaitable to wait on."""
        raise NotImplementedError

    def is_empty(self) -> bool:
        """True when nothing is open (busy fires are checked separately)."""
        raise NotImplementedError

    def _schedule(self) -> None:
        if self.closed or self._timer is not None:
            return
        since = self.idle_since()
        if since is not None:
            self._timer = IOLoop.current().call_at(since + self.idle_seconds, self._sweep)
        elif not self.busy and self.is_empty():
            self.closed = True
            self._forget()
            self._forgotten()

    def _forgotten(self) -> None:
        """Called once nothing is open and no fire uses the target; release what is left."""

    async def _sweep(self) -> None:
        self._timer = None
        if self.closed:
            return
        closing = self.expire(IOLoop.current().time() - self.idle_seconds)
        self._schedule()
        if closing is not None:
            await closing

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            IOLoop.current().remove_timeout(self._timer)
            self._timer = None

    async def close(self) -> None:
        """Closes every idle connection now; busy ones are closed when their fire ends."""
        raise NotImplementedError


class Targets(Generic[T]):
    """The open targets of one action by key (the registry its ``uninit`` closes)."""

    def __init__(self) -> None:
        self._targets: Dict[Hashable, T] = {}

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        """The target for ``key``, made with ``make()`` if none is open."""
        target = self._targets.get(key)
        if target is None or target.closed:
            target = self._targets[key] = make()

            def forget() -> None:
                if self._targets.get(key) is target:
                    del self._targets[key]

            target._forget = forget
        return target

    def __len__(self) -> int:
        return len(self._targets)

    async def close(self) -> None:
        targets, self._targets = list(self._targets.values()), {}
        for target in targets:
            try:
                await target.close()
            except Exception as e:
                log.warning("closing %s failed: %s", target.description, e)


class _Pool(Target, Generic[C]):
    """Idle connections and the slots that bound how many are open at once."""

    def __init__(self, description: str, size: int, idle_seconds: float):
        super().__init__(description, idle_seconds)
        self.size = max(1, int(size))
        self._slots = asyncio.Semaphore(self.size)
        self._idle: List[Tuple[C, float]] = []

    def idle_since(self) -> Optional[float]:
        return self._idle[0][1] if self._idle else None

    def is_empty(self) -> bool:
        return not self._idle

    def expire(self, before: float) -> Optional[Awaitable[None]]:
        expired = [conn for conn, used in self._idle if used <= before]
        self._idle = [(conn, used) for conn, used in self._idle if used > before]
        return self._discard(expired) if expired else None

    def _discard(self, conns: List[C]) -> Optional[Awaitable[None]]:
        raise NotImplementedError

    async def _checkout(self, wait: Optional[float]) -> Optional[C]:
        """Takes a slot (waiting at most ``wait`` seconds) and the freshest idle connection."""
        self.busy += 1
        try:
            if wait is None:
                await self._slots.acquire()
            else:
                await asyncio.wait_for(self._slots.acquire(), wait)
        except asyncio.TimeoutError:
            self.busy -= 1
            self._schedule()
            raise ActionExecuteRetry("%s: all %d connections busy for %.1f s"
                                     % (self.description, self.size, wait)) from None
        except BaseException:
            self.busy -= 1
            self._schedule()
            raise
        return self._idle.pop()[0] if self._idle else None

    def _checkin(self, conn: Optional[C]) -> None:
        """Gives the slot back, and ``conn`` (if still good) to the idle list, or closes it if
        the pool was closed meanwhile."""
        self.busy -= 1
        self._slots.release()
        if conn is not None:
            if self.closed:
                self._discard([conn])
            else:
                self._idle.append((conn, IOLoop.current().time()))
        self._schedule()


class AsyncPool(_Pool[C]):
    """Connections used on the IOLoop: ``open`` is a coroutine, ``close`` and ``alive`` are
    plain calls that must not block."""

    def __init__(self, description: str, size: int, idle_seconds: float,
                 open: Callable[[], Awaitable[C]], close: Callable[[C], None],
                 alive: Callable[[C], bool]):
        super().__init__(description, size, idle_seconds)
        self._open = open
        self._close = close
        self._alive = alive

    def _discard(self, conns: List[C]) -> None:
        for conn in conns:
            self._close(conn)

    @asynccontextmanager
    async def connection(self, wait: Optional[float] = None) -> AsyncIterator[C]:
        """A connection for one call; it goes back to the pool only if the call succeeded."""
        conn = await self._checkout(wait)
        keep = None
        try:
            if conn is not None and not self._alive(conn):
                self._close(conn)
                conn = None
            if conn is None:
                conn = await self._open()
            yield conn
            keep = conn
        finally:
            if keep is None and conn is not None:
                self._close(conn)
            self._checkin(keep)

    async def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        idle, self._idle = self._idle, []
        self._discard([conn for conn, _ in idle])


class ThreadPool(_Pool[C]):
    """Blocking clients, each used only inside this target's own executor of ``size`` threads.

    ``open()``, ``close(conn)`` and ``alive(conn)`` run in those threads. A fire whose awaiting
    coroutine is cancelled (the runner's timeout) still gives its connection and slot back when
    the blocking call returns, which its socket timeouts guarantee.
    """

    def __init__(self, description: str, size: int, idle_seconds: float,
                 open: Callable[[], C], close: Callable[[C], None],
                 alive: Callable[[C], bool]):
        super().__init__(description, size, idle_seconds)
        self._open = open
        self._close = close
        self._alive = alive
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.size, thread_name_prefix="forsun-" + description.split()[0])

    async def run(self, call: Callable[[C], R], wait: Optional[float] = None) -> R:
        """Runs ``call(connection)`` in a worker thread and returns its result."""
        holder = [await self._checkout(wait)]
        loop = asyncio.get_running_loop()
        try:
            future = self._executor.submit(self._job, holder, call)
        except BaseException:
            self._checkin(holder[0])
            raise
        future.add_done_callback(
            lambda _: loop.call_soon_threadsafe(self._finished, holder))
        return await asyncio.wrap_future(future)

    def _job(self, holder: List[Optional[C]], call: Callable[[C], R]) -> R:
        """In a worker thread: reuse the idle connection if it is still alive, else open one;
        a connection that saw an error is closed here and not given back."""
        conn = holder[0]
        if conn is not None and not self._alive(conn):
            holder[0] = None
            self._quiet_close(conn)
            conn = None
        if conn is None:
            conn = self._open()
            holder[0] = conn
        try:
            return call(conn)
        except BaseException:
            holder[0] = None
            self._quiet_close(conn)
            raise

    def _finished(self, holder: List[Optional[C]]) -> None:
        self._checkin(holder[0])
        if self.closed and not self.busy:
            self._executor.shutdown(wait=False)

    def _quiet_close(self, conn: C) -> None:
        try:
            self._close(conn)
        except Exception as e:
            log.debug("closing a connection to %s failed: %s", self.description, e)

    def _close_all(self, conns: List[C]) -> None:
        for conn in conns:
            self._quiet_close(conn)

    def _discard(self, conns: List[C]) -> Awaitable[None]:
        return asyncio.wrap_future(self._executor.submit(self._close_all, conns))

    def _forgotten(self) -> None:
        self._executor.shutdown(wait=False)  # queued closes still run; then the threads end

    async def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        idle, self._idle = self._idle, []
        if idle:
            await self._discard([conn for conn, _ in idle])
        if not self.busy:
            self._executor.shutdown(wait=False)


class SharedTarget(Target, Generic[R]):
    """A client that pools its own connections (redis-py), closed once unused ``idle_seconds``."""

    def __init__(self, description: str, idle_seconds: float, client: R,
                 close: Callable[[R], Awaitable[None]]):
        super().__init__(description, idle_seconds)
        self.client = client
        self._close = close
        self._last_used = IOLoop.current().time()

    def idle_since(self) -> Optional[float]:
        return None if self.busy or self.closed else self._last_used

    def is_empty(self) -> bool:
        return self.closed

    def expire(self, before: float) -> Optional[Awaitable[None]]:
        if self.busy or self._last_used > before:
            return None
        self.closed = True
        self._forget()
        return self._close(self.client)

    @asynccontextmanager
    async def use(self) -> AsyncIterator[R]:
        self.busy += 1
        try:
            yield self.client
        finally:
            self.busy -= 1
            self._last_used = IOLoop.current().time()
            self._schedule()

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel_timer()
            await self._close(self.client)
