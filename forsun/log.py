"""Logging setup for forsund: a file, stderr ('-'), and rotation by day or by size."""

import logging
import logging.handlers
import os
import re
import sys
from typing import Any

from .error import ConfigError

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def parse_size(text: str) -> int:
    """'100M' -> 104857600; the size of LOG_ROTATE."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", text.upper())
    if not match:
        raise ConfigError("invalid LOG_ROTATE %r: use DAY or a size like 100M" % text)
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def make_handler(settings: Any, foreground: bool) -> logging.Handler:
    filename = settings.get("LOG_FILE") or ("-" if foreground else "~/.forsun.log")
    if filename == "-":
        return logging.StreamHandler(sys.stderr)
    filename = os.path.expanduser(filename)
    rotate = (settings.get("LOG_ROTATE") or "").strip()
    backups = int(settings.get("LOG_BACKUP_COUNT"))
    try:
        if rotate.upper() == "DAY":
            return logging.handlers.TimedRotatingFileHandler(filename, when="midnight",
                                                             backupCount=backups)
        if rotate:
            return logging.handlers.RotatingFileHandler(filename, maxBytes=parse_size(rotate),
                                                        backupCount=backups)
        return logging.handlers.WatchedFileHandler(filename)
    except OSError as e:
        raise ConfigError("cannot open log file %s: %s" % (filename, e.strerror or e))


def setup(settings: Any, foreground: bool) -> None:
    level_name = str(settings.get("LOG_LEVEL")).upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        raise ConfigError("invalid LOG_LEVEL %r: use DEBUG, INFO, WARNING or ERROR" % level_name)
    handler = make_handler(settings, foreground)
    handler.setFormatter(logging.Formatter(settings.get("LOG_FORMAT")))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
