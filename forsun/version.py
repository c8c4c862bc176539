"""The forsun version; 0.2 is the rewrite that stays wire-compatible with 0.1.x."""

version = "0.2.0"
version_info = tuple(int(part) for part in version.split("."))
