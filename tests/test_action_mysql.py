"""The mysql action against the session's throwaway MariaDB, in a database of its own."""

import asyncio
import logging
import threading
import time

import pytest

from conftest import free_port
from forsun.action.action import ExecuteActionError
from forsun.action.drivers import mysql as mysql_driver
from forsun.action.drivers.mysql import MysqlAction
from forsun.error import ActionExecuteRetry
from test_action_helpers import (action_pools, action_settings, black_hole,  # noqa: F401
                                 make_runner, plan, until)

DB = "forsun_action_test"


@pytest.fixture
def db(mariadb):
    admin = mariadb.connect()
    with admin.cursor() as cursor:
        cursor.execute("CREATE DATABASE IF NOT EXISTS %s" % DB)
        cursor.execute("CREATE TABLE IF NOT EXISTS %s.t (id INT AUTO_INCREMENT PRIMARY KEY, "
                       "v VARCHAR(64) NOT NULL) ENGINE=InnoDB" % DB)
        cursor.execute("TRUNCATE TABLE %s.t" % DB)
    yield mariadb
    admin.close()


def rows(server) -> list:
    connection = server.connect(DB)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT v FROM t ORDER BY id")
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


def pooled_connections(server) -> int:
    connection = server.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM information_schema.processlist WHERE db = %s",
                           (DB,))
            return cursor.fetchone()[0]
    finally:
        connection.close()


def mysql(server_port: int, **params: str) -> MysqlAction:
    params = dict({"port": str(server_port), "db": DB, "user": "root", "passwd": ""}, **params)
    return MysqlAction(1700000000, plan(action="mysql", **params), "mysql", params)


async def test_insert_lands_and_statements_share_a_transaction(db, action_settings,
                                                               action_pools):
    await mysql(db.port, sql="INSERT INTO t (v) VALUES ('a;b')").execute()
    await mysql(db.port, sql="INSERT INTO t (v) VALUES ('c'); INSERT INTO t (v) VALUES ('d')"
                ).execute()
    assert rows(db) == ["a;b", "c", "d"]


@pytest.mark.gen_test(timeout=20)
async def test_bad_sql_is_rolled_back_logged_once_and_not_retried(db, make_runner, caplog):
    runner = make_runner(ACTION_RETRY_DELAY_SECONDS=0.05)
    caplog.set_level(logging.INFO, logger="forsun.action")
    runner.fire("sql:bad", "mysql", {
        "port": str(db.port), "db": DB, "user": "root", "passwd": "",
        "sql": "INSERT INTO t (v) VALUES ('kept?'); INSERT INTO no_such_table VALUES (1)"})
    assert await runner.outcome("sql:bad") == -1
    assert rows(db) == []
    assert runner.status.action_retried_count == 0
    failures = [r.getMessage() for r in caplog.records
                if r.name == "forsun.action" and r.levelno >= logging.WARNING]
    assert len(failures) == 1
    assert "sql:bad" in failures[0] and "mysql root@127.0.0.1:%d/%s" % (db.port, DB) \
        in failures[0] and "no_such_table" in failures[0]
    runner.fire("sql:good", "mysql", {"port": str(db.port), "db": DB, "user": "root",
                                      "passwd": "", "sql": "INSERT INTO t (v) VALUES ('ok')"})
    assert await runner.outcome("sql:good") == 1
    assert rows(db) == ["ok"]


async def test_final_and_retried_failures(db, action_settings, action_pools, black_hole):
    with pytest.raises(ExecuteActionError, match="1045"):  # access denied
        await mysql(db.port, passwd="wrong", sql="SELECT 1").execute()
    with pytest.raises(ExecuteActionError, match="missing required param 'sql'"):
        await mysql(db.port).execute()
    with pytest.raises(ExecuteActionError, match="1062"):  # duplicate key
        await mysql(db.port, sql="INSERT INTO t (id, v) VALUES (1, 'a'), (1, 'b')").execute()
    with pytest.raises(ActionExecuteRetry, match="2003"):
        await mysql(free_port(), sql="SELECT 1").execute()
    started = time.monotonic()
    with pytest.raises(ActionExecuteRetry, match="2013|2003|timed out"):
        await mysql(black_hole.port, sql="SELECT 1", connect_timeout="0.3",
                    timeout="0.3").execute()
    assert time.monotonic() - started < 2
    assert rows(db) == []


async def test_connections_are_reused_rebuilt_and_closed_when_idle(db, action_settings,
                                                                   action_pools):
    action_settings.set("ACTION_MYSQL_IDLE_SECONDS", 1)
    for value in ("1", "2", "3"):
        await mysql(db.port, sql="INSERT INTO t (v) VALUES ('%s')" % value).execute()
    assert pooled_connections(db) == 1
    admin = db.connect()
    with admin.cursor() as cursor:  # the server drops the pooled connection
        cursor.execute("SELECT id FROM information_schema.processlist WHERE db = %s", (DB,))
        cursor.execute("KILL %d" % cursor.fetchone()[0])
    admin.close()
    await mysql(db.port, sql="INSERT INTO t (v) VALUES ('after kill')").execute()
    assert rows(db) == ["1", "2", "3", "after kill"]
    await until(lambda: pooled_connections(db) == 0)
    assert len(mysql_driver._targets) == 0
    await until(lambda: not [t for t in threading.enumerate()
                             if t.name.startswith("forsun-mysql")])


async def test_concurrent_fires_are_bounded_by_max_connections(db, action_settings,
                                                               action_pools):
    fires = [mysql(db.port, max_connections="2",
                   sql="INSERT INTO t (v) VALUES ('%d'); DO SLEEP(0.1)" % i).execute()
             for i in range(6)]
    seen = []

    async def watch() -> None:
        while len(rows(db)) < 6:
            seen.append(pooled_connections(db))
            await asyncio.sleep(0.02)

    await asyncio.gather(watch(), *fires)
    assert sorted(rows(db)) == [str(i) for i in range(6)]
    assert max(seen) <= 2 and pooled_connections(db) == 2
