"""Extensions (SPEC section 8) in real forsund processes: loading, actions, life cycle, errors.

The extensions live in tests/extensions/ and are written as a user would write them.
"""

import os
import signal
import subprocess
import time
from typing import List, Tuple

import pytest

from conftest import ROOT

EXTENSIONS = os.path.join(ROOT, "tests", "extensions")
SAMPLES = ["sample_ext.AsyncExtension", "sample_ext.CoroutineExtension",
           "sample_ext.PlainExtension"]


def extension_args(*specs: str, path: str = EXTENSIONS) -> List[str]:
    args = ["--extension-path", path]
    for spec in specs:
        args += ["--extension", spec]
    return args


def test_extensions_load_fire_and_follow_their_life_cycle(forsund_factory, fifo_sink):
    """The three ways of writing execute fire; info, log lines, init and uninit as specified."""
    daemon = forsund_factory(*extension_args(*SAMPLES), env={"SAMPLE_WORD": "from-env"})
    daemon.wait_log("register extension path %s" % EXTENSIONS)
    for spec in SAMPLES:
        daemon.wait_log("load extension %s <class '%s'>" % (spec, spec))
    for action, cls in (("sample_async", "AsyncAction"), ("sample_coroutine", "CoroutineAction"),
                        ("sample_plain", "PlainAction")):
        daemon.wait_log("action register %s <class 'sample_ext.%s'>" % (action, cls))
    init_line = daemon.lines.index(daemon.wait_log("sample-async init with the loop running"))
    daemon.wait_log("sample-coroutine init")
    daemon.wait_log("sample-plain init")
    assert init_line < daemon.lines.index(daemon.wait_log("ready"))

    client = daemon.client()
    info = client.info()
    assert info["extensions"] == "sample-async;sample-coroutine;sample-plain"
    actions = info["actions"].split(";")
    assert {"shell", "sample_async", "sample_flaky", "sample_coroutine",
            "sample_plain"} <= set(actions)

    words = {"async": "w-async", "coroutine": "w-coroutine", "plain": ""}
    plans = {style: client.create_timeout("ext:%s" % style, 1, action="sample_%s" % style,
                                          params={"path": fifo_sink.path, "word": word})
             for style, word in words.items()}
    fires = sorted(fifo_sink.wait(3, timeout=8))
    assert fires == sorted([style, str(plan.next_time), plan.key, words[style] or "from-env"]
                           for style, plan in plans.items())  # the setting it defined
    assert client.info()["sample_fired_count"] == "3"  # an extension's own counter

    start = len(daemon.lines)
    assert daemon.stop(signal.SIGTERM) == 0
    daemon.wait_log("sample-async uninit", start=start)
    uninits = [line.split()[-2] for line in daemon.lines[start:] if line.endswith(" uninit")]
    assert uninits == ["sample-plain", "sample-coroutine", "sample-async"]  # reverse order


def test_action_asking_for_a_retry_is_run_again(forsund_factory, fifo_sink):
    daemon = forsund_factory(*extension_args("sample_ext.AsyncExtension"),
                             env={"ACTION_RETRY_DELAY_SECONDS": "0.2",
                                  "ACTION_RETRY_DELAY_RATE": "0"})
    client = daemon.client()
    plan = client.create_timeout("ext:flaky", 1, action="sample_flaky",
                                 params={"path": fifo_sink.path, "fail": "2"})
    (style, ts, key, _), = fifo_sink.wait(1, timeout=8)
    assert (style, ts, key) == ("flaky3", str(plan.next_time), "ext:flaky")
    daemon.wait_log("will retry (2/3)")
    assert client.info()["action_retried_count"] == "2"


def test_conf_file_extension_section(forsund_factory, tmp_path, fifo_sink):
    """Extensions from [extension]; a setting an extension defines read from the conf file."""
    conf = tmp_path / "forsun.conf"
    conf.write_text("sample_word = from-conf\n[extension]\npath = %s\nextensions = %s\n"
                    % (EXTENSIONS, "sample_ext.PlainExtension; sample_ext.AsyncExtension"))
    daemon = forsund_factory("--conf", str(conf))
    client = daemon.client()
    info = client.info()
    assert info["extensions"] == "sample-plain;sample-async"
    assert {"sample_plain", "sample_async"} <= set(info["actions"].split(";"))
    plan = client.create_timeout("ext:conf", 1, action="sample_plain",
                                 params={"path": fifo_sink.path})
    assert fifo_sink.wait(1, timeout=8) == [["plain", str(plan.next_time), plan.key,
                                             "from-conf"]]


def test_extensions_from_the_environment(forsund_factory):
    daemon = forsund_factory(env={"EXTENSION_PATH": EXTENSIONS,
                                  "EXTENSIONS": "sample_ext.CoroutineExtension"})
    assert daemon.client().info()["extensions"] == "sample-coroutine"


def failed_start(forsund_factory, *args: str) -> Tuple[int, List[str]]:
    """Starts a forsund expected to refuse; returns its exit code and its stderr lines."""
    daemon = forsund_factory(*args, start=False).start(wait=False)
    code = daemon.process.wait(20)
    daemon.wait_log("<exited>")
    return code, daemon.lines[:-1]


@pytest.mark.parametrize("spec, message", [
    ("broken_import.BrokenImportExtension",
     "extension broken_import.BrokenImportExtension cannot be imported (extension path %s): "
     "ModuleNotFoundError: No module named 'forsun_test_missing_dependency'" % EXTENSIONS),
    ("no_such_module.Extension",
     "extension no_such_module.Extension cannot be imported (extension path %s): "
     "ModuleNotFoundError: No module named 'no_such_module'" % EXTENSIONS),
    ("sample_ext.NoSuchExtension", "extension sample_ext.NoSuchExtension: module sample_ext ("),
    ("sample_ext.record", "extension sample_ext.record: sample_ext.record is not a class"),
    ("sample_ext", "extension 'sample_ext' is not of the form module.Class"),
    ("broken_ext.RaisingExtension", "extension broken_ext.RaisingExtension failed to register: "
                                    "RuntimeError: no licence key configured"),
    ("broken_ext.FailingInitExtension",
     "extension broken_ext.FailingInitExtension failed to init: ConnectionRefusedError: "
     "backend at 127.0.0.1:1 refused the connection"),
])
def test_broken_extension_stops_forsund_at_start(forsund_factory, spec, message):
    code, lines = failed_start(forsund_factory, *extension_args(spec))
    assert code == 1
    assert lines[-1].startswith("forsund: " + message), lines
    assert not any("ready" in line for line in lines)


def test_missing_extension_path_stops_forsund(forsund_factory, tmp_path):
    missing = str(tmp_path / "nowhere")
    code, lines = failed_start(forsund_factory, *extension_args(SAMPLES[0], path=missing))
    assert code == 1
    assert lines[-1] == "forsund: extension path %s is not a directory" % missing


def test_detached_start_reports_a_broken_extension(forsund_factory):
    """Without --nodemon the error still reaches the terminal and the command fails."""
    daemon = forsund_factory(*extension_args("broken_ext.RaisingExtension"), start=False)
    command = [part for part in daemon.command if part != "--nodemon"]
    started = time.monotonic()
    result = subprocess.run(command, cwd=daemon.workdir, env=daemon.env, capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and time.monotonic() - started < 20
    assert result.stderr.strip().splitlines()[-1].startswith(
        "forsund: extension broken_ext.RaisingExtension failed to register")
