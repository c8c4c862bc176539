"""The Celery app a test worker runs (``celery -A celery_tasks worker``).

Broker and result backend come from the environment, so each test points a real worker at
its own private Redis.
"""

import os

from celery import Celery

app = Celery("forsun_test", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.broker_connection_retry_on_startup = True


@app.task(name="forsun_test.record")
def record(path: str, word: str, times: int = 1) -> dict:
    """Appends a line to ``path`` (the test's fifo) and returns what it wrote."""
    text = word * times
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    try:
        os.write(fd, ("celery %s\n" % text).encode())
    finally:
        os.close(fd)
    return {"word": word, "text": text}
