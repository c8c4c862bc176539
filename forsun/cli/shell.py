"""The interactive ``forsun> `` prompt: readline editing, a history file, tab completion.

History lives in ``~/.forsun_history`` (the home directory of whoever runs it) and is
written after every line, so a killed terminal loses nothing. Keys are completed by asking
the server (``getKeys``) only when Tab is pressed.
"""

import os
from typing import Any, List, Optional

from ..version import version
from .commands import COMMANDS
from .session import Session

PROMPT = "forsun> "
HISTORY_FILE = "~/.forsun_history"
HISTORY_LENGTH = 1000


def _import_readline() -> Optional[Any]:
    """None where Python has no readline (Windows): the prompt still works, unedited."""
    try:
        import readline
    except ImportError:
        return None
    return readline


class Completer:
    """Completes command names first, then keys for the commands that take one."""

    def __init__(self, session: Session, readline: Any):
        self.session = session
        self.readline = readline
        self.matches: List[str] = []

    def complete(self, text: str, state: int) -> Optional[str]:
        if state == 0:
            self.matches = self.candidates(text)
        return self.matches[state] if state < len(self.matches) else None

    def candidates(self, text: str) -> List[str]:
        before = self.readline.get_line_buffer()[:self.readline.get_begidx()]
        words = before.rsplit(";", 1)[-1].split()
        if not words:
            return [name + " " for name in COMMANDS if name.startswith(text)]
        command = COMMANDS.get(words[0])
        if command is None or not command.completes_keys or len(words) != 1:
            return []
        try:
            keys = self.session.client.get_keys(text)
        except Exception:  # a server that is down simply offers nothing to complete
            return []
        return sorted(key + " " for key in keys)


def _history_path() -> str:
    return os.path.expanduser(HISTORY_FILE)


def _setup(readline: Any, session: Session) -> None:
    readline.set_history_length(HISTORY_LENGTH)
    try:
        readline.read_history_file(_history_path())
    except OSError:  # first run: no history yet
        pass
    readline.set_completer(Completer(session, readline).complete)
    readline.set_completer_delims(" \t;")
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")


def _save_history(readline: Any) -> None:
    try:
        readline.write_history_file(_history_path())
    except OSError as error:
        print("warning: cannot write the history file: %s" % error)


def run_shell(session: Session) -> int:
    """Reads commands until ``exit`` or Ctrl-D; a failed command never ends the prompt."""
    readline = _import_readline()
    if readline is not None:
        _setup(readline, session)
    print("forsun %s, server %s:%d. Type 'help' for the commands, 'exit' to leave."
          % (version, session.host, session.port))
    while not session.exited:
        try:
            line = input(PROMPT)
        except EOFError:
            print()
            break
        except KeyboardInterrupt:  # Ctrl-C drops the line being typed, as in a shell
            print()
            continue
        if readline is not None and line.strip():
            _save_history(readline)
        try:
            session.execute(line)
        except KeyboardInterrupt:  # Ctrl-C during a call: the stream is out of step
            session.client.close()
            print("interrupted")
    return 0
