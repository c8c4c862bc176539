"""Creating the plans of a ``PUT``/``POST /v1/plan`` body, shared by both HTTP paths.

Both the tornado handler and the fast path (``fastpath``) call :func:`create_from_body`,
so a create is answered the same whichever path served it. It returns the answer's
``data`` already encoded as JSON, because a bulk crontab body answers a list of thousands
of plans, which is encoded a chunk at a time like it is created.

A crontab body of more than :data:`BULK_CHUNK` lines is handled in chunks of that many lines,
yielding to the IOLoop between chunks, so a 10,000-line body never holds up the timer or
other requests for long.
Every line is parsed, built and checked before the first plan is stored (a bad line 9,000
creates nothing), then the plans are stored a chunk per store call.

Bulk loads are meant to create 50,000 plans a second on one core (``scripts/bench.py
--only bulk``), so the per-line work is lean: lines without quotes take
``parse_plain_set_line`` and ``PlanBuilder.build_parsed`` (checks done once, not twice;
what the time fields decide computed once per distinct fields), and the answer is encoded
a chunk at a time by ``plans_json``. Each gives what the general way gives (tests compare).
"""

import asyncio
import time
from typing import Any, List, Optional, Tuple

from ...crontab import parse_plain_set_line, parse_set_line
from ...error import ForsunError, StorePlanError
from ...plan import Plan, PlanBuilder, plans_json
from .bodies import crontab_lines, json_plan_args, line_context

CRONTAB_TYPE = "application/crontab"

# Crontab lines parsed and built, or stored and encoded, between two yields to the IOLoop:
# 5-15 ms of work, so other requests and the timer run in between.
BULK_CHUNK = 500


def is_crontab(content_type: str) -> bool:
    """Whether a Content-Type names a crontab body (parameters and case ignored)."""
    return content_type.split(";", 1)[0].strip().lower() == CRONTAB_TYPE


async def create_from_body(forsun: Any, content_type: str, body: bytes,
                           is_time_out: bool) -> str:
    """Creates the plan(s) of a request body; returns the answer's data as JSON.

    A JSON body is one plan, delay or fixed-time by the method (``is_time_out``). A crontab
    body is one plan a line, each a delay or fixed-time plan by its own syntax (``*/N``
    fields), as in forsun 0.1.x; the answer is the plan, or the list of plans for several
    lines.
    """
    if is_crontab(content_type):
        return await _create_crontab(forsun, body)
    args = json_plan_args(body)
    now = time.time()
    plan = Plan.build(is_time_out=is_time_out, now=int(now), tz=forsun.tz, created_time=now,
                      **args)
    return (await forsun.create_plan(plan)).to_json()


async def _create_crontab(forsun: Any, body: bytes) -> str:
    """All lines built and checked, then stored, a chunk at a time (see the module doc)."""
    lines = crontab_lines(body)
    now = time.time()
    builder = PlanBuilder(int(now), forsun.tz, now)  # one moment for the whole body
    plans: List[Plan] = []
    bulk = len(lines) > BULK_CHUNK  # a body of one chunk is done in one go, as before
    for start in range(0, len(lines), BULK_CHUNK):
        if bulk:
            await asyncio.sleep(0)
        plans += build_lines(forsun, lines[start:start + BULK_CHUNK], builder)
    if len(plans) == 1:
        await _store(forsun, lines, plans, 0)
        return plans[0].to_json()
    pieces = []
    for start in range(0, len(plans), BULK_CHUNK):
        if bulk:
            await asyncio.sleep(0)
        chunk = plans[start:start + BULK_CHUNK]
        await _store(forsun, lines, chunk, start)
        pieces.append(plans_json(chunk))
    # exactly what json.dumps writes for the list; the brackets go on the small first and
    # last pieces, so the megabytes of the answer are copied once
    pieces[0] = "[" + pieces[0]
    pieces[-1] += "]"
    return ", ".join(pieces)


def build_lines(forsun: Any, lines: List[Tuple[int, str]],
                builder: PlanBuilder) -> List[Plan]:
    """Parses, builds and checks (action known and allowed) crontab lines; the first bad
    line raises its error, prefixed with ``line N:``."""
    plans = []
    number: Optional[int] = None
    build, build_parsed = builder.build, builder.build_parsed
    checked = set()  # actions that passed Forsun.check_action
    try:
        for number, line in lines:
            parsed = parse_plain_set_line(line)  # most lines; None for quoted ones
            if parsed is not None:
                plan = build_parsed(parsed)
            else:
                plan = build(*parse_set_line(line))
            if plan.action not in checked:
                forsun.check_action(plan.action)
                checked.add(plan.action)
            plans.append(plan)
    except ForsunError:
        with line_context(number):
            raise
    return plans


async def _store(forsun: Any, lines: List[Tuple[int, str]], plans: List[Plan],
                 first: int) -> None:
    """Stores ``plans``, which are those of ``lines[first:]``; a failure names its line and
    how many plans of the lines before it were created."""
    try:
        await forsun.create_plans(plans)
    except ForsunError as e:
        failed = first + getattr(e, "stored", 0)
        with line_context(lines[failed][0]):
            if isinstance(e, StorePlanError) and failed:
                e.message += " (the %d plan(s) of the lines before it were created)" % failed
            raise
