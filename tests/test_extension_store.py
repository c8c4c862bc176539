"""A store brought by an extension (``register_store`` + ``--driver``), implementing only the
basic 0.1.x methods of forsun.store.store.Store: the core must work through the defaults.
"""

import importlib
import inspect
import os
import signal
import time

import pytest

from conftest import ROOT
from forsun import config
from forsun.error import NotFoundPlanError
from forsun.extension import ExtensionManager
from forsun.forsun import Forsun
from forsun.status import ForsunStatus
from forsun.utils import maybe_await

EXTENSIONS = os.path.join(ROOT, "tests", "extensions")
BASIC_METHODS = ("get_current", "set_current", "get_plan", "set_plan", "remove_plan",
                 "add_time_plan", "remove_time_plan", "get_time_plans", "delete_time_plans",
                 "get_plan_keys")


def test_extension_store_chosen_with_driver_holds_plans_that_fire(forsund_factory, fifo_sink):
    daemon = forsund_factory("--extension-path", EXTENSIONS,
                             "--extension", "dict_store.DictStoreExtension",
                             "--extension", "sample_ext.PlainExtension", "--driver", "dict")
    daemon.wait_log("store register dict <class 'dict_store.DictStore'>")
    daemon.wait_log("dict store init")
    client = daemon.client()
    info = client.info()
    assert info["current_store"] == "dict" and "dict" in info["stores"].split(";")
    assert info["extensions"] == "dict-store;sample-plain"

    params = {"path": fifo_sink.path}
    repeat = client.create_timeout("store:repeat", 1, count=2, action="sample_plain",
                                   params=dict(params, word="r"))
    client.create_timeout("store:gone", 1, action="sample_plain", params=dict(params, word="g"))
    client.create("store:fixed", 0, 0, 3, 1, 1, -1, "shell", {"cmd": "true"})
    assert sorted(client.get_keys("store:")) == ["store:fixed", "store:gone", "store:repeat"]
    assert client.remove("store:gone").key == "store:gone"
    assert client.get("store:repeat").next_time == repeat.next_time

    fires = fifo_sink.wait(2, timeout=8)
    assert fires == [["plain", str(repeat.next_time + n), "store:repeat", "r"] for n in (0, 1)]
    assert fifo_sink.quiet_for(1.2) == []
    assert client.get_keys("store:") == ["store:fixed"]

    start = len(daemon.lines)
    assert daemon.stop(signal.SIGTERM) == 0
    daemon.wait_log("dict store uninit with 1 plans", start=start)


@pytest.fixture(scope="module")
def dict_store():
    """The test extensions registered in this process; the dict_store module."""
    ExtensionManager().load(EXTENSIONS, ["sample_ext.PlainExtension",
                                         "dict_store.DictStoreExtension"])
    return importlib.import_module("dict_store")


def coroutine_store(module):
    return module.DictStore


def plain_store(module):
    """The same store with plain methods, which store.py's contract allows."""
    def plain(method):
        def call(self, *args):
            return inspect.unwrap(method)(self, *args)  # the function under gen.coroutine
        return call
    methods = {name: plain(module.DictStore.__dict__[name]) for name in BASIC_METHODS}
    return type("PlainDictStore", (module.DictStore,), methods)


@pytest.mark.parametrize("make_store", [coroutine_store, plain_store])
async def test_core_works_through_the_basic_methods_only(dict_store, make_store, tmp_path):
    settings = config.Settings()
    store = make_store(dict_store)(settings)
    now = float(int(time.time()))
    core = Forsun(settings, store, ForsunStatus(), clock=lambda: now)  # both plans due together
    await maybe_await(store.init())
    fires = tmp_path / "fires"
    fires.touch()
    params = {"path": str(fires)}
    plan = await core.create_timeout("s:a", 5, count=2, action="sample_plain", params=params)
    await core.create_timeout("s:b", 5, action="sample_plain", params=params)
    assert sorted(await core.get_keys("s:")) == ["s:a", "s:b"]
    assert [p.key for p in await core.get_time_plans(plan.next_time)] == ["s:a", "s:b"]
    assert (await core.remove_plan("s:b")).key == "s:b"
    await maybe_await(store.set_current(int(time.time())))

    assert await core.fire_second(plan.next_time) == 1
    await core.runner.stop()
    assert fires.read_text() == "plain %d s:a -\n" % plan.next_time
    fired = await core.get_plan("s:a")
    assert (fired.current_count, fired.last_timeout, fired.next_time, fired.status) == \
        (1, plan.next_time, plan.next_time + 5, 1)
    assert await core.get_time_plans(plan.next_time) == []

    assert await core.fire_second(plan.next_time + 5) == 1
    await core.runner.stop()
    with pytest.raises(NotFoundPlanError):
        await core.get_plan("s:a")
    assert await core.get_keys("") == []
