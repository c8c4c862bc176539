"""Settings: defaults < environment < conf file < flags, and the documented conf file."""

import pytest

from forsun import config
from forsun.daemon import load_settings, parse_args
from forsun.error import ConfigError
from conftest import ROOT


def write(tmp_path, text):
    path = tmp_path / "forsun.conf"
    path.write_text(text)
    return str(path)


def test_precedence_flags_over_conf_over_environment(tmp_path):
    conf = write(tmp_path, "port = 7000\nbind_address = 0.0.0.0\n[store]\ndriver = redis\n"
                           "redis_port = 6380\n[action]\nretry_max_count = 5\n"
                           "[extension]\nextensions = a.B;c.D\npath = /x\n")
    environ = {"PORT": "6000", "STORE_REDIS_HOST": "10.0.0.1", "ACTION_RETRY_MAX_COUNT": "9",
               "LOG_LEVEL": "DEBUG"}
    args = parse_args(["--conf", conf, "--port", "8000", "--nodemon"])
    settings = load_settings(args, environ)
    assert settings.get("PORT") == 8000                    # flag beats conf and env
    assert settings.get("BIND_ADDRESS") == "0.0.0.0"       # conf beats default
    assert settings.get("STORE_DRIVER") == "redis"
    assert settings.get("STORE_REDIS_PORT") == 6380
    assert settings.get("STORE_REDIS_HOST") == "10.0.0.1"  # env beats default
    assert settings.get("ACTION_RETRY_MAX_COUNT") == 5     # conf beats env
    assert settings.get("LOG_LEVEL") == "DEBUG"
    assert settings.get("EXTENSIONS") == ["a.B", "c.D"]
    assert settings.get("EXTENSION_PATH") == "/x"
    assert settings.get("DAEMON") is False


def test_every_documented_flag_maps_to_a_setting():
    args = parse_args(["--bind", "0.0.0.0", "--http", "127.0.0.1:8001", "--demon",
                       "--log", "-", "--log-level", "ERROR", "--driver", "redis",
                       "--driver-mem-store-file", "/tmp/x", "--driver-redis-host", "h",
                       "--driver-redis-port", "1", "--driver-redis-db", "2",
                       "--driver-redis-password", "p", "--driver-redis-prefix", "pf",
                       "--driver-redis-server-id", "3", "--extension-path", "/e",
                       "--extension", "m.A", "--extension", "m.B"])
    s = load_settings(args, {})
    assert (s["BIND_ADDRESS"], s["HTTP_BIND"], s["DAEMON"], s["LOG_FILE"], s["LOG_LEVEL"]) == \
        ("0.0.0.0", "127.0.0.1:8001", True, "-", "ERROR")
    assert (s["STORE_DRIVER"], s["STORE_MEM_STORE_FILE"], s["STORE_REDIS_HOST"],
            s["STORE_REDIS_PORT"], s["STORE_REDIS_DB"], s["STORE_REDIS_PASSWORD"],
            s["STORE_REDIS_PREFIX"], s["STORE_REDIS_SERVER_ID"]) == \
        ("redis", "/tmp/x", "h", 1, 2, "p", "pf", 3)
    assert s["EXTENSION_PATH"] == "/e" and s["EXTENSIONS"] == ["m.A", "m.B"]


def test_the_example_conf_file_sets_only_known_defaults():
    settings = config.Settings()
    settings.load_conf(ROOT + "/conf/forsun.conf")
    defaults = config.Settings()
    changed = {k: v for k, v in settings.values.items() if defaults.values[k] != v}
    assert changed == {}, "conf/forsun.conf documents values that differ from the defaults"


@pytest.mark.parametrize("text, message", [
    ("port = abc\n", "invalid value 'abc' for PORT"),
    ("[action]\nretry_max_count = many\n", "ACTION_RETRY_MAX_COUNT"),
    ("this is not ini\n", "cannot parse conf file"),
])
def test_invalid_conf_values_name_the_setting(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        config.Settings().load_conf(write(tmp_path, text))


def test_invalid_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="environment variable PORT"):
        config.Settings.load(environ={"PORT": "x"})


def test_public_get_reads_the_installed_settings():
    previous = config.current()
    try:
        config.use(config.Settings({"ACTION_SHELL_CWD": "/srv"}))
        assert config.get("ACTION_SHELL_CWD") == "/srv"
        assert config.get("NO_SUCH_SETTING", 7) == 7
    finally:
        config.use(previous)
