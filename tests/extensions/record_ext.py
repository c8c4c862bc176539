"""A test extension whose action ``record`` logs each execution of a fire to a file.

One line per execution, ``KEY TS PID WALL`` (the plan, the due second, the forsund process
that ran it, and the wall time it ran at), appended with one ``os.write`` to the file named
by the ``path`` param, opened with O_APPEND: small appends to a regular file are atomic, so
several nodes can share the file. No subprocess and no await, so a fire is executed in the
same loop iteration that dispatched it, and a test sees exactly which (plan, second) pairs
ran, on which node, and when.
"""

import os
import time

from forsun.action.action import Action
from forsun.extension import Extension


class RecordAction(Action):
    def execute(self, *args, **kwargs):
        line = "%s %d %d %.3f\n" % (self.plan.key, self.ts, os.getpid(), time.time())
        fd = os.open(self.params["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


class RecordExtension(Extension):
    name = "record"

    def register(self):
        self.register_action("record", RecordAction)
