"""The Celery example (examples/celery_extension.py) end to end, and its action's edges.

A real forsund loads the example and a real Celery worker (tests/extensions/celery_tasks.py)
consumes from a private Redis, or from the machine's RabbitMQ (the example's default broker),
with its results in the private Redis. A plan created over HTTP fires, and the test sees the
task's effect twice: the line the task writes, and its result in the result backend.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, free_port, require

EXAMPLES = os.path.join(ROOT, "examples")
EXTENSIONS = os.path.join(ROOT, "tests", "extensions")

pytest.importorskip("celery")


RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"  # the example's default broker
RABBITMQ_QUEUE = "forsun-test"  # its own queue on the machine's shared RabbitMQ


@pytest.fixture(params=["redis", "rabbitmq"])
def celery_worker(request, redis_server, tmp_path):
    """A real ``celery worker`` on a private Redis, or on the machine's RabbitMQ with its
    results in the private Redis; yields (forsund env, extra action params)."""
    if request.param == "redis":
        broker = "redis://127.0.0.1:%d/0" % redis_server.port
        forsund_env, params, queue_args = {"CELERY_BROKER_URL": broker}, {}, []
    else:
        require(port_open(5672), "RabbitMQ on 127.0.0.1:5672 (guest/guest)")
        broker = RABBITMQ
        forsund_env, params = {}, {"queue": RABBITMQ_QUEUE}  # the default CELERY_BROKER_URL
        queue_args = ["--queues", RABBITMQ_QUEUE]
    env = dict(os.environ, CELERY_BROKER_URL=broker,
               CELERY_RESULT_BACKEND="redis://127.0.0.1:%d/1" % redis_server.port,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(str(tmp_path / "celery.log"), "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--pool=solo",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO",
         "--hostname", "forsun-test@%h"] + queue_args,
        cwd=EXTENSIONS, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    yield forsund_env, params
    worker.kill()  # its task is done; even a cold shutdown on amqp takes about 7 s
    worker.wait()


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def http_put_plan(port: int, body: dict) -> dict:
    """Creates a delay plan with ``PUT /v1/plan``; returns the plan of the answer."""
    request = urllib.request.Request("http://127.0.0.1:%d/v1/plan" % port, method="PUT",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["errcode"] == 0, answer
    return answer["data"]


def test_celery_plan_sends_a_task_a_real_worker_runs(celery_worker, redis_server,
                                                     forsund_factory, fifo_sink):
    forsund_env, params = celery_worker
    daemon = forsund_factory("--extension-path", EXAMPLES,
                             "--extension", "celery_extension.CeleryExtension",
                             env=forsund_env, http=True)
    daemon.wait_log("load extension celery_extension.CeleryExtension")
    client = daemon.client()
    info = client.info()
    assert info["extensions"] == "celery" and "celery" in info["actions"].split(";")

    plan = http_put_plan(daemon.http_port, {
        "key": "celery:record", "seconds": 1, "count": 1, "action": "celery",
        "params": dict(params, method="forsun_test.record",
                       args=json.dumps([fifo_sink.path, "ab"]),
                       kwargs=json.dumps({"times": 2}))})
    sent = daemon.wait_log("celery task forsun_test.record sent as", timeout=10)
    assert sent.endswith("for plan celery:record at %d" % plan["next_time"])
    task_id = re.search(r"sent as (\S+)", sent).group(1)
    assert fifo_sink.wait(1, timeout=30) == [["celery", "abab"]]  # the worker ran it

    backend = redis_server.client(db=1)
    deadline = time.monotonic() + 10
    while backend.get("celery-task-meta-" + task_id) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    meta = json.loads(backend.get("celery-task-meta-" + task_id))
    assert meta["status"] == "SUCCESS" and meta["result"] == {"word": "ab", "text": "abab"}
    assert client.info()["action_executed_error_count"] == "0"


def test_celery_broker_down_is_retried_and_bad_params_are_final(forsund_factory):
    """A broker that refuses connections asks for a retry; bad JSON fails at once."""
    down = "redis://127.0.0.1:%d/0" % free_port()
    daemon = forsund_factory("--extension-path", EXAMPLES,
                             "--extension", "celery_extension.CeleryExtension",
                             env={"ACTION_RETRY_DELAY_SECONDS": "0.2",
                                  "ACTION_RETRY_DELAY_RATE": "0",
                                  "ACTION_RETRY_MAX_COUNT": "1"})
    client = daemon.client()
    client.create_timeout("celery:down", 1, action="celery",
                          params={"method": "t.x", "broker": down})
    client.create_timeout("celery:bad", 1, action="celery",
                          params={"method": "t.x", "args": "{\"a\": 1}"})
    assert "celery param args must be a JSON list, got dict" in \
        daemon.wait_log("plan celery:bad action celery at")
    retry = daemon.wait_log("plan celery:down action celery", timeout=10)
    assert "will retry (1/1)" in retry and "celery broker %s" % down in retry
    gave_up = daemon.wait_log("gave up after 1 retries", timeout=15)
    assert "plan celery:down" in gave_up
