"""Operating forsun safely, piece by piece (no daemon): the access checks, the allowed
actions, the execution history, the status histograms and the /metrics exposition.
The end-to-end checks against a real forsund are in tests/test_operations.py."""

import configparser
import math
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from forsun import config
from forsun.action.policy import ActionNotAllowed, ActionPolicy
from forsun.error import ConfigError, ForsunError
from forsun.history import MAX_ERROR_CHARS, Execution, ExecutionHistory
from forsun.metrics import make_registry, render
from forsun.servers.access import BearerToken, ConnectionGate, parse_networks
from forsun.status import ForsunStatus, Histogram
from conftest import ROOT

MY_SETTINGS = ("AUTH_TOKEN", "ALLOW_IPS", "ALLOWED_ACTIONS", "MAX_PLANS", "MAX_PARAMS_BYTES",
               "THRIFT_MAX_CONNECTIONS", "THRIFT_MAX_MESSAGE_BYTES", "THRIFT_IDLE_TIMEOUT",
               "HTTP_MAX_CONNECTIONS", "HTTP_MAX_BODY_BYTES", "HTTP_IDLE_TIMEOUT",
               "HTTP_BODY_TIMEOUT", "EXECUTION_HISTORY_SIZE", "IOLOOP_LAG_PROBE_SECONDS")


# -- access -----------------------------------------------------------------------------------

def gate(cidrs, max_connections=0):
    status = ForsunStatus()
    return ConnectionGate("thrift", status, parse_networks(cidrs), max_connections), status


def test_allow_ips_matches_ipv4_ipv6_and_mapped_addresses():
    g, status = gate(["127.0.0.1/32", "10.0.0.0/8", "::1"])
    assert g.admit(("127.0.0.1", 5000), 0)
    assert g.admit(("10.20.30.40", 5000), 0)
    assert g.admit(("::ffff:127.0.0.1", 5000, 0, 0), 0)  # a dual-stack socket's IPv4 peer
    assert g.admit(("::1", 5000, 0, 0), 0)
    assert not g.admit(("127.0.0.2", 5000), 0)
    assert not g.admit(("::2", 5000, 0, 0), 0)
    assert g.admit("", 0)  # a Unix socket: its file permissions guard it
    assert status.connections_refused == {("thrift", "address"): 2}


def test_no_allow_ips_admits_any_address_and_max_connections_counts():
    g, status = gate([], max_connections=2)
    assert g.admit(("192.0.2.1", 1), 1)
    assert not g.admit(("192.0.2.1", 1), 2)
    assert status.connections_refused == {("thrift", "max_connections"): 1}


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "localhost", "1.2.3"])
def test_invalid_allow_ips_entries_are_start_errors(entry):
    with pytest.raises(ConfigError, match="invalid ALLOW_IPS entry"):
        parse_networks(["127.0.0.1/32", entry])


def test_refusals_are_logged_at_most_every_few_seconds(caplog):
    g, status = gate(["127.0.0.1/32"])
    for _ in range(50):
        g.admit(("127.0.0.9", 1), 0)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "not in ALLOW_IPS" in refused[0].getMessage()
    assert status.connections_refused[("thrift", "address")] == 50


def test_bearer_token():
    token = BearerToken("s3cret")
    assert token.problem("Bearer s3cret") is None
    assert token.problem("bearer  s3cret ") is None
    assert "authentication required" in token.problem(None)
    assert "Bearer <token>" in token.problem("Basic czNjcmV0")
    assert token.problem("Bearer s3cre") == "the bearer token is not valid"
    assert token.problem("Bearer s3cret2") == "the bearer token is not valid"
    assert BearerToken("").problem(None) is None


# -- allowed actions --------------------------------------------------------------------------

def test_allowed_actions_policy():
    everything = ActionPolicy.from_settings(config.Settings())
    assert everything.allows("shell") and everything.allows("anything")
    assert ActionPolicy.from_settings({"ALLOWED_ACTIONS": ["*"]}).allows("shell")
    policy = ActionPolicy.from_settings(config.Settings({"ALLOWED_ACTIONS": "http; redis"}))
    assert policy.allows("http") and not policy.allows("shell")
    with pytest.raises(ForsunError) as refused:
        policy.check("shell")
    assert refused.value.code == 1006
    assert "'shell' is not allowed" in refused.value.message
    assert "http; redis" in refused.value.message
    with pytest.raises(ActionNotAllowed, match="stored before it was disallowed"):
        policy.check_fire("shell")


# -- history and status -----------------------------------------------------------------------

def plan(key, action="shell"):
    return SimpleNamespace(key=key, action=action)


def test_history_is_bounded_newest_first_and_filters():
    history = ExecutionHistory(3)
    for n in range(5):
        history.append(Execution("k%d" % (n % 2), 100 + n, "shell", 1, 1, 0.0, 0.1, None))
    assert [e.due for e in history.list()] == [104, 103, 102]
    assert [e.due for e in history.list(key="k0")] == [104, 102]
    assert [e.due for e in history.list(limit=1)] == [104]
    history.resize(2)
    assert [e.due for e in history.list()] == [104, 103]
    history.append(Execution("k", 1, "shell", -1, 1, 0.0, 0.1, "x" * 5000))
    assert len(history.list()[0].error) == MAX_ERROR_CHARS + 3
    off = ExecutionHistory(0)
    off.append(Execution("k", 1, "shell", 1, 1, 0.0, 0.1, None))
    assert off.list() == []


def test_action_finished_counts_fires_retries_durations_and_history():
    status = ForsunStatus()
    status.action_finished(100, plan("a"), 0, 1, 0.02)
    status.action_finished(100, plan("b", "http"), 0, 0, 0.3, "refused")
    status.action_finished(100, plan("b", "http"), 1, -1, 0.4, "gave up")
    assert status.fires == {("shell", "succeeded"): 1, ("http", "failed"): 1}
    assert status.action_retries == {"http": 1}
    assert status.action_durations["http"].count == 2
    newest = status.history.list()[0].to_dict()
    assert newest["key"] == "b" and newest["outcome"] == "failed" and newest["attempts"] == 2
    assert newest["error"] == "gave up" and newest["due"] == 100
    assert [e.key for e in status.history.list()] == ["b", "a"]  # retried attempts: no entry


def test_histogram_buckets_are_cumulative_and_inclusive():
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 3), (math.inf, 4)]
    assert histogram.sum == pytest.approx(2.65)


# -- /metrics ---------------------------------------------------------------------------------

def scrape(status):
    families = {}
    for family in text_string_to_metric_families(render(make_registry(
            SimpleNamespace(status=status))).decode()):
        for sample in family.samples:
            families[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families


def test_metrics_render_from_the_status_and_parse():
    status = ForsunStatus()
    status.plan_count = 7
    status.create_timeouted_count = 3
    status.action_finished(100, plan("a"), 0, 1, 0.02)
    status.action_finished(100, plan("b"), 0, -1, 0.5, "exit 3")
    status.observe_lateness(0.003)
    status.observe_loop_lag(0.0001)
    status.store_error("flush")
    status.connection_refused("http", "address")
    status.inc("my_extension_count", 2)
    m = scrape(status)
    assert m[("forsun_plans", ())] == 7
    assert m[("forsun_plans_created_total", (("kind", "delay"),))] == 3
    assert m[("forsun_fires_total", (("action", "shell"), ("outcome", "succeeded")))] == 1
    assert m[("forsun_fires_total", (("action", "shell"), ("outcome", "failed")))] == 1
    assert m[("forsun_action_duration_seconds_count", (("action", "shell"),))] == 2
    assert m[("forsun_action_duration_seconds_bucket", (("action", "shell"), ("le", "0.025")))] \
        == 1
    assert m[("forsun_timer_lateness_seconds_count", ())] == 1
    assert m[("forsun_ioloop_lag_seconds_count", ())] == 1
    assert m[("forsun_store_errors_total", (("operation", "flush"),))] == 1
    assert m[("forsun_connections_refused_total", (("reason", "address"), ("server", "http")))] \
        == 1
    assert m[("forsun_extension_counter", (("name", "my_extension_count"),))] == 2
    assert m[("forsun_executions_kept", ())] == 2
    assert ("process_cpu_seconds_total", ()) in m


def test_each_service_has_its_own_registry():
    one, two = ForsunStatus(), ForsunStatus()
    one.plan_count, two.plan_count = 1, 2
    assert scrape(one)[("forsun_plans", ())] == 1
    assert scrape(two)[("forsun_plans", ())] == 2


# -- settings and conf files ------------------------------------------------------------------

def conf_keys(path):
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string("[__global__]\n" + open(path).read())
    return {(section if section != "__global__" else "", key)
            for section in parser.sections() for key in parser.options(section)}


def test_every_operations_setting_is_documented_in_the_example_conf():
    config.load_definitions()
    documented = conf_keys(ROOT + "/conf/forsun.conf")
    for name in MY_SETTINGS:
        assert config.SETTINGS[name].conf_location in documented, name


@pytest.mark.parametrize("path", ["conf/forsun.conf", "contrib/forsun.production.conf"])
def test_conf_files_use_only_known_settings_and_load(path):
    config.load_definitions()
    known = {setting.conf_location for setting in config.SETTINGS.values()}
    unknown = conf_keys(ROOT + "/" + path) - known
    assert not unknown, "%s has keys that are no setting: %s" % (path, sorted(unknown))
    settings = config.Settings.load(conf_file=ROOT + "/" + path, environ={})
    parse_networks(settings.get("ALLOW_IPS"))
