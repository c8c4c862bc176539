"""Extensions that import fine but fail later in their life cycle."""

from forsun.extension import Extension


class RaisingExtension(Extension):
    name = "raising"

    def register(self):
        raise RuntimeError("no licence key configured")


class FailingInitExtension(Extension):
    name = "failing-init"

    async def init(self):
        raise ConnectionRefusedError("backend at 127.0.0.1:1 refused the connection")
