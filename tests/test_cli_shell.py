"""The interactive ``forsun> `` prompt, driven through a pseudo-terminal like a person would.

HOME points at a temp dir so the history file is the test's own.
"""

import os
import sys

import pexpect

from conftest import ROOT, free_port

PROMPT = "forsun> "
UP = "\x1b[A"


def spawn(port: int, home: str) -> pexpect.spawn:
    env = dict(os.environ, HOME=str(home), TERM="xterm", TZ="UTC",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = pexpect.spawn(sys.executable, ["-m", "forsun.cli", "--port", str(port)],
                          env=env, encoding="utf-8", timeout=10, dimensions=(24, 200))
    child.expect_exact(PROMPT)
    return child


def test_prompt_set_ls_history_completion_exit(forsund, tmp_path):
    child = spawn(forsund.port, tmp_path)
    child.sendline("set shell:1 */300/2 * * * * * shell 'cmd=echo hi'")
    child.expect(r"\d\d:\d\d:\d\d shell:1 \*/300/2 \* \* \* \* \* shell \"cmd='echo hi'\"")
    child.expect_exact(PROMPT)

    child.sendline("ls shell")
    child.expect(r"\d\d:\d\d:\d\d shell:1 \*/300/2")
    child.expect_exact(PROMPT)

    child.send(UP)  # recalls "ls shell"
    child.expect_exact("ls shell")
    child.send("\r")
    child.expect(r"\d\d:\d\d:\d\d shell:1 \*/300/2")
    child.expect_exact(PROMPT)

    child.send("ge\t")  # command name, then the key from the server
    child.expect_exact("get ")
    child.send("shell:\t")
    child.expect_exact("shell:1 ")
    child.send("\r")
    child.expect(r"\d\d:\d\d:\d\d shell:1 \*/300/2")
    child.expect_exact(PROMPT)

    child.sendline("get nope")  # an error does not end the prompt
    child.expect_exact("error 1003: plan 'nope' not found")
    child.expect_exact(PROMPT)
    child.sendline("rm shell:1; exit")
    child.expect_exact("success")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    history = (tmp_path / ".forsun_history").read_text().splitlines()
    assert history[0] == "set shell:1 */300/2 * * * * * shell 'cmd=echo hi'"
    assert history[-3:] == ["get shell:1 ", "get nope", "rm shell:1; exit"]

    again = spawn(forsund.port, tmp_path)  # the history survives the session
    again.send(UP)
    again.expect_exact("rm shell:1; exit")
    again.send("\r")
    again.expect_exact("error 1003: plan 'shell:1' not found")
    again.expect_exact(PROMPT)
    again.send("half a line\x03")  # Ctrl-C drops the line, not the prompt
    again.expect_exact(PROMPT)
    again.sendeof()  # Ctrl-D leaves too
    again.expect(pexpect.EOF)
    again.close()
    assert again.exitstatus == 0


def test_prompt_outlives_a_server_that_is_down(tmp_path):
    port = free_port()
    child = spawn(port, tmp_path)
    child.sendline("ls")
    child.expect_exact("error: cannot connect to forsund at 127.0.0.1:%d: Connection refused"
                       % port)
    child.expect_exact(PROMPT)
    child.sendline("version")
    child.expect_exact("0.2.0")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
