"""The mem store's journal: every change survives a crash, torn tails are cut, snapshots
rotate and drop segments, fsync policies, and failures that must not change memory."""

import asyncio
import errno
import logging
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from tornado.ioloop import IOLoop

from forsun.config import Settings
from forsun.error import ConfigError
from forsun.plan import Plan
from forsun.store.drivers import mem_dump, mem_journal
from forsun.store.drivers.mem import MemStore

T0 = 1_700_000_000


def new_store(path: Path, **settings) -> MemStore:
    values = {"STORE_MEM_STORE_FILE": str(path), "STORE_MEM_FLUSH_SECONDS": 0}
    values.update(settings)
    return MemStore(Settings(values))


async def open_store(path: Path, **settings) -> MemStore:
    store = new_store(path, **settings)
    await store.init()
    return store


def crash(store: MemStore) -> None:
    """What SIGKILL leaves: whatever reached the files. Lazy records (statuses, the
    current second) still in the buffer are lost, as in a real kill."""
    journal = store._journal
    if journal._lazy_handle is not None:
        IOLoop.current().remove_timeout(journal._lazy_handle)
    if journal._periodic is not None:
        journal._periodic.stop()
    if store._periodic is not None:
        store._periodic.stop()
    os.close(journal._fd)
    journal._fd = -1
    journal._executor.shutdown(wait=True)


def recovered(path: Path) -> MemStore:
    store = new_store(path)
    store._recover()
    return store


def segments(path: Path):
    return [os.path.basename(p) for _, p in mem_journal.list_segments(str(path))]


def plan(key: str, next_time: int, **fields) -> Plan:
    values = {"is_time_out": True, "second": 30, "action": "http", "created_time": T0 - 0.5,
              "params": {"url": "http://127.0.0.1:8080/%s" % key}}
    values.update(fields)
    return Plan(key, next_time=next_time, **values)


async def state(store: MemStore):
    keys = sorted(await store.get_plan_keys())
    return {key: (await store.get_plan(key)) for key in keys}


@pytest.mark.gen_test
async def test_every_change_is_recovered_after_a_crash(tmp_path):
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    await store.put_plan(plan("keep", T0 + 10))
    await store.put_plan(plan("replace", T0 + 10))
    await store.put_plan(plan("replace", T0 + 20, params={"url": "http://x/2"}))
    await store.put_plan(plan("gone", T0 + 10))
    await store.take_plan("gone")
    await store.put_plan(plan("fired", T0 + 5, count=2))
    await store.put_plan(plan("finished", T0 + 5))
    fired = plan("fired", T0 + 35, count=2, current_count=1, last_timeout=T0 + 5)
    await store.commit_fired(T0 + 5, [fired], ["finished"])
    await store.put_plans([plan("bulk%d" % n, T0 + 40 + n) for n in range(3)])
    await store.set_current(T0 + 5)
    store._journal.flush_lazy()
    expected = await state(store)
    crash(store)

    assert os.listdir(tmp_path) == ["forsun.dump.journal.00000001"]  # no snapshot yet
    again = await open_store(path)
    assert await state(again) == expected
    assert sorted(expected) == ["bulk0", "bulk1", "bulk2", "fired", "keep", "replace"]
    assert expected["replace"].next_time == T0 + 20 and expected["fired"].current_count == 1
    assert await again.get_current() == T0 + 5
    assert await again.get_time_plans(T0 + 10) == ["keep"]
    assert await again.get_time_plans(T0 + 35) == ["fired"]
    assert await again.get_time_plans(T0 + 5) == []
    assert await again.count_plans() == 6
    await again.uninit()
    assert os.listdir(tmp_path) == ["forsun.dump"]
    assert await state(recovered(path)) == expected


@pytest.mark.gen_test
async def test_a_request_is_answered_only_after_its_record_is_written(tmp_path, monkeypatch):
    """A failing journal write fails the change and leaves memory as it was."""
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    await store.put_plan(plan("old", T0 + 10))

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(mem_journal.os, "write", disk_full)
        with pytest.raises(OSError):
            await store.put_plan(plan("new", T0 + 10))
        with pytest.raises(OSError):
            await store.take_plan("old")
        with pytest.raises(OSError):
            await store.commit_fired(T0 + 10, [plan("old", T0 + 40)], [])
    assert sorted(await store.get_plan_keys()) == ["old"]
    assert (await store.get_plan("old")).next_time == T0 + 10
    await store.put_plan(plan("new", T0 + 10))  # works again once the disk has room
    crash(store)
    assert sorted(await recovered(path).get_plan_keys()) == ["new", "old"]


@pytest.mark.gen_test
async def test_a_half_written_record_is_cut_before_the_next_one(tmp_path, monkeypatch):
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    real_write = os.write

    def short_then_fail(fd, data):
        real_write(fd, bytes(data[:7]))
        raise OSError(errno.EIO, "I/O error")

    with monkeypatch.context() as patch:
        patch.setattr(mem_journal.os, "write", short_then_fail)
        with pytest.raises(OSError):
            await store.put_plan(plan("torn", T0 + 10))
    await store.put_plan(plan("after", T0 + 10))
    crash(store)
    assert await recovered(path).get_plan_keys() == ["after"]


@pytest.mark.parametrize("damage", ["torn-header", "torn-payload", "bad-checksum", "garbage"])
@pytest.mark.gen_test
async def test_a_torn_or_corrupt_tail_is_cut_at_the_last_good_record(tmp_path, caplog, damage):
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    for n in range(5):
        await store.put_plan(plan("p%d" % n, T0 + n))
    segment = store._journal.path
    crash(store)
    good_size = os.path.getsize(segment)
    data = Path(segment).read_bytes()
    records = []
    offset = 0
    while offset < len(data):
        length, _ = mem_journal.HEADER.unpack_from(data, offset)
        records.append(offset)
        offset += mem_journal.HEADER.size + length
    last = records[-1]
    if damage == "torn-header":
        Path(segment).write_bytes(data + data[last:last + 5])
        expected, cut_at = ["p0", "p1", "p2", "p3", "p4"], good_size
    elif damage == "torn-payload":
        Path(segment).write_bytes(data[:-3])
        expected, cut_at = ["p0", "p1", "p2", "p3"], last
    elif damage == "bad-checksum":
        broken = bytearray(data)
        broken[records[3] + 12] ^= 0xFF
        Path(segment).write_bytes(bytes(broken))
        expected, cut_at = ["p0", "p1", "p2"], records[3]
    else:
        Path(segment).write_bytes(data + b"\x00" * 64)
        expected, cut_at = ["p0", "p1", "p2", "p3", "p4"], good_size

    caplog.set_level(logging.WARNING)
    again = await open_store(path)
    assert sorted(await again.get_plan_keys()) == expected
    assert os.path.getsize(segment) == cut_at
    assert "cut" in caplog.text and segment in caplog.text and "offset %d" % cut_at in caplog.text
    await again.put_plan(plan("later", T0))  # new records go to a new segment
    crash(again)
    assert sorted(await recovered(path).get_plan_keys()) == sorted(expected + ["later"])


@pytest.mark.gen_test
async def test_a_corrupt_snapshot_stops_the_start_and_nothing_is_touched(tmp_path):
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    await store.put_plan(plan("a", T0))
    await store.flush()
    await store.put_plan(plan("b", T0))
    crash(store)
    path.write_bytes(path.read_bytes()[:-30])
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}

    broken = new_store(path)
    with pytest.raises(ConfigError, match=str(path)) as error:
        await broken.init()
    assert "not a readable forsun dump" in str(error.value)
    with pytest.raises(RuntimeError):
        await broken.flush()
    await broken.uninit()
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


@pytest.mark.gen_test
async def test_a_snapshot_starts_a_segment_and_drops_the_ones_it_covers(tmp_path):
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    await store.put_plan(plan("a", T0))
    assert segments(path) == ["forsun.dump.journal.00000001"]
    covered = Path(store._journal.path).read_bytes()
    await store.flush()
    assert segments(path) == ["forsun.dump.journal.00000002"]
    await store.put_plan(plan("b", T0))
    await store.take_plan("a")
    crash(store)

    # a crash between the rename and the deletion leaves a segment the dump already holds:
    # replaying it again does no harm, as every record is an absolute value
    (tmp_path / "forsun.dump.journal.00000001").write_bytes(covered)
    again = await open_store(path)
    assert await again.get_plan_keys() == ["b"]
    assert segments(path) == ["forsun.dump.journal.00000001", "forsun.dump.journal.00000002",
                              "forsun.dump.journal.00000003"]
    await again.uninit()
    assert os.listdir(tmp_path) == ["forsun.dump"]
    assert await recovered(path).get_plan_keys() == ["b"]


@pytest.mark.gen_test(timeout=60)  # the snapshot writer runs niced: slow on a busy machine
async def test_changes_during_a_snapshot_are_kept_by_the_next_segment(tmp_path):
    """The snapshot streams shard by shard while requests go on; the new segment has every
    change made meanwhile, so dump + segment is exact whatever the snapshot caught."""
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    for n in range(20_000):
        await store.put_plan(plan("p%05d" % n, T0 + n % 100))
    snapshot = asyncio.ensure_future(store.flush())
    n = 0
    while not snapshot.done():
        await store.put_plan(plan("new%05d" % n, T0))
        await store.take_plan("p%05d" % n)
        n += 1
        await asyncio.sleep(0)
    await snapshot
    assert n > 0
    expected = sorted(await store.get_plan_keys())
    crash(store)
    assert sorted(await recovered(path).get_plan_keys()) == expected


@pytest.mark.gen_test
async def test_snapshots_start_by_journal_size(tmp_path):
    path = tmp_path / "forsun.dump"
    store = await open_store(path, STORE_MEM_COMPACT_BYTES=20_000)
    for n in range(300):
        await store.put_plan(plan("p%03d" % n, T0))
    assert store.journal_bytes() > 20_000
    for _ in range(100):
        if store.snapshot_count:
            break
        await asyncio.sleep(0.05)
    if store._last_flush is not None:
        await store._last_flush
    assert store.snapshot_count >= 1
    assert store.journal_bytes() < 20_000
    await store.uninit()


@pytest.mark.gen_test
async def test_fsync_always_answers_after_the_fsync_and_groups_waiters(tmp_path, monkeypatch):
    path = tmp_path / "forsun.dump"
    store = await open_store(path, STORE_MEM_FSYNC="always")
    synced = []
    real_fsync = os.fsync

    def slow_fsync(fd):
        real_fsync(fd)
        synced.append(fd)

    monkeypatch.setattr(mem_journal.os, "fsync", slow_fsync)
    puts = [asyncio.ensure_future(store.put_plan(plan("p%d" % n, T0))) for n in range(50)]
    done, _ = await asyncio.wait(puts, timeout=0)
    assert not done  # none answered before an fsync covered it
    await asyncio.gather(*puts)
    assert 1 <= len(synced) < 50  # one fsync covers every waiter of its moment
    assert store._journal.synced == store._journal.written
    await store.uninit()


@pytest.mark.gen_test(timeout=10)
async def test_fsync_everysec_syncs_within_a_second(tmp_path, monkeypatch):
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(mem_journal.os, "fsync", lambda fd: (real_fsync(fd), synced.append(fd)))
    await store.put_plan(plan("a", T0))
    assert store._journal.synced < store._journal.written
    for _ in range(30):
        await asyncio.sleep(0.1)
        if store._journal.synced == store._journal.written:
            break
    assert synced and store._journal.synced == store._journal.written
    await store.uninit()


async def settled(journal: mem_journal.Journal) -> None:
    """Until the journal's thread has done everything handed to it, a switch included,
    and the loop has taken in the results."""
    if journal._switch is not None:
        await asyncio.wait([journal._switch])
    await asyncio.wrap_future(journal._executor.submit(int))


@pytest.mark.gen_test(timeout=10)
async def test_on_a_busy_disk_the_fsync_is_of_a_segment_no_longer_appended_to(tmp_path,
                                                                             monkeypatch):
    """ext4 makes an append wait while its file is written back for an fsync; with the disk
    busy (a snapshot being written) appends move to a new segment before the old is synced,
    and requests are answered while that fsync runs."""
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    journal = store._journal
    journal._periodic.stop()
    loop = asyncio.get_running_loop()
    fsync_running = asyncio.Event()
    release = threading.Event()
    fsynced = []
    real_fsync = os.fsync

    def held_fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):  # not the directory's
            fsynced.append(os.fstat(fd).st_ino)
            loop.call_soon_threadsafe(fsync_running.set)
            release.wait(5)
        real_fsync(fd)

    monkeypatch.setattr(mem_journal.os, "fsync", held_fsync)
    await store.put_plan(plan("before", T0))
    first = Path(journal.path)
    journal.disk_busy = True
    journal._sync_if_dirty()
    # the switch the sync started, shared; an fsync in place would hold it up for 5 s
    seq, _ = await asyncio.wait_for(journal.rotate(), 2)
    assert seq == 2 and segments(path) == [first.name, "forsun.dump.journal.00000002"]
    await fsync_running.wait()
    assert fsynced == [first.stat().st_ino]
    await store.put_plan(plan("during", T0))
    assert journal.synced < journal.written  # answered with the fsync still held
    assert b"during" in Path(journal.path).read_bytes() and b"during" not in first.read_bytes()
    written_before = first.stat().st_size
    release.set()
    await settled(journal)
    assert 0 < written_before <= journal.synced < journal.written
    crash(store)
    assert sorted(await recovered(path).get_plan_keys()) == ["before", "during"]


@pytest.mark.gen_test(timeout=10)
async def test_after_a_slow_fsync_the_next_sync_moves_to_a_new_segment(tmp_path, monkeypatch):
    """A slow fsync means a busy disk whatever the cause; once fsyncs are fast again the
    everysec sync stays in place, so a quiet daemon does not make a segment a second."""
    monkeypatch.setattr(mem_journal, "SLOW_FSYNC_SECONDS", 0.05)
    delay = [0.0]
    real_fsync = os.fsync
    monkeypatch.setattr(mem_journal.os, "fsync",
                        lambda fd: (time.sleep(delay[0]), real_fsync(fd)))
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    journal = store._journal
    journal._periodic.stop()
    seqs = []
    for key, fsync_seconds in [("a", 0.0), ("b", 0.06), ("c", 0.0), ("d", 0.0)]:
        delay[0] = fsync_seconds
        await store.put_plan(plan(key, T0))
        journal._sync_if_dirty()
        await settled(journal)
        assert journal.synced == journal.written
        seqs.append(journal.seq)
    assert seqs == [1, 1, 2, 2]  # after b's slow fsync, c's sync started segment 2
    crash(store)
    assert sorted(await recovered(path).get_plan_keys()) == ["a", "b", "c", "d"]


@pytest.mark.gen_test(timeout=30)
async def test_a_segment_that_cannot_be_created_fails_the_snapshot_not_the_journal(
        tmp_path, monkeypatch):
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    journal = store._journal
    journal._periodic.stop()
    real_open = os.open

    def no_new_segment(name, *args, **kwargs):
        if ".journal." in str(name):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(name, *args, **kwargs)

    await store.put_plan(plan("a", T0))
    with monkeypatch.context() as patch:
        patch.setattr(mem_journal.os, "open", no_new_segment)
        with pytest.raises(OSError, match="No space left"):
            await store.flush()
        journal.disk_busy = True
        journal._sync_if_dirty()
        await settled(journal)
    journal.disk_busy = False
    await store.put_plan(plan("b", T0))  # still appended to the first segment
    assert segments(path) == ["forsun.dump.journal.00000001"] and journal.seq == 1
    assert not os.path.exists(path)
    await store.flush()  # works again once a segment can be made
    assert segments(path) == ["forsun.dump.journal.00000002"]
    crash(store)
    assert sorted(await recovered(path).get_plan_keys()) == ["a", "b"]


def test_unknown_fsync_policy_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="STORE_MEM_FSYNC"):
        new_store(tmp_path / "forsun.dump", STORE_MEM_FSYNC="sometimes")


def test_writer_of_a_dead_daemon_does_not_replace_the_file(tmp_path):
    """A snapshot writer whose forsund died gives up before the rename."""
    import io
    import msgpack
    path = tmp_path / "forsun.dump"
    path.write_bytes(b"the current file")
    stream = io.BytesIO(msgpack.packb({"current_time": T0}) + msgpack.packb({"a": plan(
        "a", T0).pack()}) + msgpack.packb(mem_dump.END))
    assert mem_dump.writer_main(str(path), os.getppid() + 1_000_000, stream) == \
        mem_dump.EXIT_ABANDONED
    assert path.read_bytes() == b"the current file"
    assert os.listdir(tmp_path) == ["forsun.dump"]
    stream.seek(0)
    assert mem_dump.writer_main(str(path), os.getppid(), stream) == mem_dump.EXIT_OK
    assert os.listdir(tmp_path) == ["forsun.dump"]
    store = new_store(path)
    store._recover()
    assert store._count == 1


def test_writer_without_the_end_of_the_stream_leaves_no_file(tmp_path):
    import io
    import msgpack
    path = tmp_path / "forsun.dump"
    stream = io.BytesIO(msgpack.packb({"current_time": T0}) + msgpack.packb({"a": plan(
        "a", T0).pack()}))
    assert mem_dump.writer_main(str(path), os.getppid(), stream) == mem_dump.EXIT_ABANDONED
    assert os.listdir(tmp_path) == []
