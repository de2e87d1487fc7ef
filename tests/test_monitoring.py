"""Monitoring as code: alert rules and their promtool unit tests, the Grafana dashboard's
queries, a live /metrics over a real Redis and ledger, and the stage middleware around
a real dramatiq worker."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
import yaml
from dramatiq.brokers.redis import RedisBroker
from prometheus_client import CollectorRegistry
from sqlalchemy import insert, update

from certfactory.embedded import RedisServer, free_port
from factory.errors import ConfigurationError
from factory.ledger import Ledger
from factory.tables import certificates, requests
from monitoring import exporter, metrics
from monitoring.http import MultiProcessFiles, metrics_registry, redis_following, serve_metrics
from workers import broker as broker_module
from workers import middleware

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "dashboards" / "certfactory.json"
GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "stage": ".*"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                   "group_right", "inf", "nan"}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool, failing the test with how to get it when it is missing."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: install Debian's prometheus package (`make test` does, as root)")
    return subprocess.run([binary, *args], input=stdin, capture_output=True, text=True, timeout=60)


def dashboard_queries() -> list[str]:
    """Every target expression of the dashboard, Grafana variables substituted."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queries = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    pattern = re.compile(r"\$\{(\w+)\}|\$(\w+)")
    return [pattern.sub(lambda m: GRAFANA_VARIABLES[m.group(1) or m.group(2)], query) for query in queries]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels dropped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][\w:]*", text):
        if not text[match.end():].lstrip().startswith("(") and match.group() not in PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def exported_names() -> set[str]:
    """Every series name our code can expose: the worker metrics and the exporter's families."""
    registry = CollectorRegistry()
    metrics.WorkerMetrics.create(registry)
    families = [*registry.collect(), *exporter.metric_families().values()]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in families for suffix in suffixes[family.type]}


def alert_expressions() -> list[str]:
    """The expression of every alert rule in monitoring/alerts.yml."""

    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


# -- alert rules ------------------------------------------------------------------------------

def test_alert_rules_pass_promtool_check_rules() -> None:
    """monitoring/alerts.yml is a valid Prometheus rules file."""
    result = promtool("check", "rules", str(MONITORING / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    """Every alert fires and stays quiet as monitoring/alerts_test.yml expects."""
    result = promtool("test", "rules", str(MONITORING / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_name_only_metrics_we_export() -> None:
    """An alert over a metric nobody exports would never fire."""
    known = exported_names() | {"up"}
    for expr in alert_expressions():
        assert metric_names(expr) <= known, f"unknown metric in alert {expr!r}: {metric_names(expr) - known}"


# -- dashboard ---------------------------------------------------------------------------------

def test_dashboard_panels_have_unique_ids_and_a_query_each() -> None:
    """Every panel has its own id and at least one target with an expression."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in panels:
        assert panel.get("targets"), f"panel {panel['id']} {panel['title']!r} has no query"
        assert all(target.get("expr", "").strip() for target in panel["targets"]), panel["title"]
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"]), panel["title"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each dashboard expression parses: promtool checks them as recording rules."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{index}", "expr": expr} for index, expr in enumerate(dashboard_queries())]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_name_only_metrics_we_export() -> None:
    """Every metric a panel asks for is one our code exports."""
    known = exported_names()
    for expr in dashboard_queries():
        assert metric_names(expr), f"no metric in {expr!r}"
        assert metric_names(expr) <= known, f"unknown metric in {expr!r}: {metric_names(expr) - known}"


def test_metric_name_extraction_ignores_functions_labels_and_keywords() -> None:
    """The extractor the two tests above rely on finds exactly the selected names."""
    expr = ('histogram_quantile(0.95, sum by (stage, le) (rate(a_bucket{stage=~"x|y"}[5m]))) '
            '/ on (queue) max without (instance) (b) unless label_replace(c, "q", "$1", "s", "(.+)") > bool 0')
    assert metric_names(expr) == {"a_bucket", "b", "c"}


# -- names shared across layers ----------------------------------------------------------------

def test_monitoring_knows_the_same_stages_and_queues_as_the_broker() -> None:
    """Stage and queue label sets match the queues the broker declares."""
    assert metrics.STAGES == broker_module.STAGE_QUEUES
    assert set(exporter.QUEUES) == {*broker_module.STAGE_QUEUES, broker_module.FAILURE_QUEUE}
    assert exporter.DUE_OPTION == middleware.DUE_OPTION


# -- live exposition: real Redis, real ledger, real worker ---------------------------------------

WORKER_SCRIPT = textwrap.dedent("""
    import sys, time
    import dramatiq
    from dramatiq import Worker
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware.prometheus import Prometheus
    from factory.errors import PolicyError
    from monitoring.metrics import worker_metrics
    from workers.middleware import install

    broker = RedisBroker(url=sys.argv[1])
    broker.add_middleware(Prometheus())
    install(broker, worker_metrics, stages=("validate", "sign"))
    dramatiq.set_broker(broker)

    @dramatiq.actor(actor_name="validate", queue_name="test_validate", max_retries=0)
    def validate(n):
        time.sleep(0.02)

    @dramatiq.actor(actor_name="sign", queue_name="test_sign", max_retries=1, min_backoff=2000,
                    max_backoff=2000, throws=(PolicyError,))
    def sign(kind):
        if kind == "policy":
            raise PolicyError("refused")
        raise RuntimeError("token busy")

    @dramatiq.actor(queue_name="test_validate")
    def not_a_stage():
        pass

    broker.emit_after("process_boot")  # what the dramatiq CLI does in each worker process
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    for message in (validate.message(1), validate.message(2), sign.message("policy"), sign.message("busy"),
                    not_a_stage.message()):
        broker.enqueue(message)
    broker.join("test_validate", timeout=30000)
    broker.join("test_sign", timeout=30000)
    worker.stop()
    worker_metrics().token_operation("keygen", "rsa2048", 0.2)
    worker_metrics().token_operation("sign", "ecdsa-p256", 0.001)
""")


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for this module."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found: install Debian's redis-server package (`make test` does, as root)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker_metrics_dir(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree of multiprocess directories (one per pool), the ``general`` one filled by a
    real dramatiq worker with the stage middleware and dramatiq's Prometheus middleware."""
    root = tmp_path_factory.mktemp("metrics")
    folder = root / "general"
    folder.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(folder), "dramatiq_prom_db": str(folder),
           "dramatiq_prom_host": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, module_redis.url], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect() for sample in family.samples}


def test_middleware_records_duration_wait_and_outcome_around_a_real_worker(worker_metrics_dir: Path) -> None:
    """ok, failed (permanent error; retries exhausted) and retried are counted per stage,
    with a duration and a queue wait per delivery; non-stage actors are not measured."""
    registry = CollectorRegistry()
    registry.register(MultiProcessFiles(worker_metrics_dir))
    samples = _samples(registry)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("certfactory_stage_messages_total", stage="validate", outcome="ok") == 2
    assert value("certfactory_stage_messages_total", stage="sign", outcome="failed") == 2
    assert value("certfactory_stage_messages_total", stage="sign", outcome="retried") == 1
    assert value("certfactory_stage_duration_seconds_count", stage="validate") == 2
    assert value("certfactory_stage_duration_seconds_sum", stage="validate") >= 0.04
    assert value("certfactory_stage_duration_seconds_count", stage="sign") == 3
    assert value("certfactory_stage_queue_wait_seconds_count", stage="sign") == 3
    # the retry waited 2 s of backoff before it was due: that is not queue wait
    assert value("certfactory_stage_queue_wait_seconds_bucket", stage="sign", le="1.0") == 3
    assert value("certfactory_keygen_duration_seconds_count", key_type="rsa2048") == 1
    assert not any(dict(labels).get("stage") == "not_a_stage" for _, labels in samples)
    assert value("dramatiq_messages_total", queue_name="test_validate", actor_name="validate") == 2


NOW = dt.datetime(2026, 3, 10, 3, 0, tzinfo=dt.UTC)  # 10:00 on Tuesday 10 March in Hà Nội
TODAY = dt.date(2026, 3, 10)


def _days(n: int) -> dt.date:
    return TODAY + dt.timedelta(days=n)


# id, batch, state, key type, ready deadline, publish deadline
LEDGER_ROWS = [
    ("r1", "b1", "validated", "rsa2048", _days(0), None),  # ready deadline today: at risk
    ("r2", "b1", "signed", "rsa2048", _days(-1), None),  # ready deadline passed: breached
    ("r3", "b1", "key_generated", "rsa3072", _days(5), None),
    ("r4", "b1", "packaged", "rsa2048", _days(-3), None),  # packaged: the ready deadline no longer applies
    ("r5", "b1", "activated", "rsa2048", _days(-2), _days(1)),  # publish deadline tomorrow: at risk
    ("r6", "b1", "published", "rsa2048", _days(-9), _days(-4)),
    ("r7", "b1", "received", "rsa2048", None, None),
    ("r8", "b2", "published", "ecdsa-p256", _days(0), _days(0)),
    ("r9", "b2", "rejected", "rsa2048", None, None),
]


def _fill_ledger(ledger: Ledger) -> None:
    rows = LEDGER_ROWS
    for batch_id in ("b1", "b2"):
        mine = [row for row in rows if row[1] == batch_id]
        ledger.add_batch(
            {"id": batch_id, "agency_code": "A1", "source": "test.jsonl", "submitted_at": NOW, "rows": len(mine),
             "accepted": len(mine), "rejected": 0, "duplicates": 0, "endorsement": None},
            [{"id": rid, "batch_id": batch_id, "agency_code": "A1", "request_ref": rid, "citizen_id": f"0010{i}",
              "record": "{}", "key_type": key_type, "state": "received", "reason_code": None, "reason": None,
              "device_serial": None, "received_at": NOW, "ready_deadline": ready, "publish_deadline": publish,
              "activation_requested_at": None, "effective_at": None, "updated_at": NOW}
             for i, (rid, _, _, key_type, ready, publish) in enumerate(mine)])
    with ledger.transaction() as connection:
        for rid, _, state, *_ in rows:
            connection.execute(update(requests).where(requests.c.id == rid).values(state=state))
        for rid in ("r6", "r8"):
            connection.execute(insert(certificates).values(serial=f"{rid}00", request_id=rid, status="published",
                                                           created_at=NOW, published_at=NOW))
    ledger.add_blank_devices("station-1", [("D1", "t1"), ("D2", "t2")])


def _fill_queues(client: redis.Redis) -> None:
    broker = RedisBroker(client=client)  # type: ignore[no-untyped-call]
    two_minutes_ago = int(NOW.timestamp() * 1000) - 120_000
    for n in (1, 2):  # raw, as dramatiq's dispatch script stores them
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name="sign", actor_name="sign", args=(f"r{n}",), kwargs={}, options={}, message_id=f"m{n}",
            message_timestamp=two_minutes_ago + n * 1000)
        client.hset("dramatiq:sign.msgs", f"m{n}", message.encode())
        client.rpush("dramatiq:sign", f"m{n}")
    client.zadd("dramatiq:sign.XQ", {"dead": two_minutes_ago})
    delayed: dramatiq.Message[Any] = dramatiq.Message(queue_name="publish", actor_name="publish", args=("r5",),
                                                      kwargs={}, options={})
    broker.enqueue(delayed, delay=3_600_000)  # through the real broker: lands where the exporter looks
    broker.close()


@pytest.fixture(scope="module")
def pipeline(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Ledger, redis.Redis]]:
    """A SQLite ledger and the module's Redis, holding requests, devices and messages."""
    ledger = Ledger.connect(f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.sqlite'}")
    client = redis.Redis.from_url(module_redis.url)
    client.flushdb()
    _fill_ledger(ledger)
    _fill_queues(client)
    yield ledger, client
    client.close()
    ledger.close()


def test_exporter_reads_queue_state_and_ledger_counts(pipeline: tuple[Ledger, redis.Redis]) -> None:
    """Depth, delay, dead letters and head age per queue; requests, devices, deadlines,
    published certificates and batch progress from the ledger."""
    registry = CollectorRegistry()
    registry.register(exporter.PipelineExporter(*pipeline, clock=lambda: NOW))
    samples = _samples(registry)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("certfactory_queue_messages", queue="sign") == 2
    assert value("certfactory_queue_in_flight_messages", queue="sign") == 0
    assert value("certfactory_queue_oldest_message_age_seconds", queue="sign") == pytest.approx(119)
    assert value("certfactory_queue_dead_letters", queue="sign") == 1
    assert value("certfactory_queue_delayed_messages", queue="publish") == 1
    assert value("certfactory_queue_messages", queue="validate") == 0
    assert value("certfactory_queue_oldest_message_age_seconds", queue="validate") == 0
    assert {dict(labels)["state"] for name, labels in samples if name == "certfactory_requests"} == {
        "received", "validated", "key_generated", "signed", "packaged", "awaiting_activation", "activated",
        "published", "rejected", "failed", "revoked"}
    assert value("certfactory_requests", state="published") == 2
    assert value("certfactory_devices", state="blank") == 2 and value("certfactory_devices", state="packaged") == 0
    assert value("certfactory_deadline_at_risk_requests", deadline="ready") == 1  # r1, due today
    assert value("certfactory_deadline_breached_requests", deadline="ready") == 1  # r2; r4 is packaged
    assert value("certfactory_deadline_at_risk_requests", deadline="publish") == 1  # r5, due tomorrow
    assert value("certfactory_deadline_breached_requests", deadline="publish") == 0  # r6 is published
    assert value("certfactory_certificates_published_total", key_type="rsa2048") == 1
    assert value("certfactory_certificates_published_total", key_type="ecdsa-p256") == 1
    assert value("certfactory_certificates_published_total", key_type="rsa3072") == 0
    assert value("certfactory_batches_open") == 1
    assert value("certfactory_batch_progress_ratio") == pytest.approx(1 / 7)  # b1: only r6 finished
    assert value("certfactory_exporter_source_up", source="redis") == 1


def _no_broker() -> redis.Redis:
    raise ConfigurationError("no broker: set CERTFACTORY_REDIS_URL")


@pytest.mark.parametrize("source", [redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5), _no_broker],
                         ids=["refused", "not-configured"])
def test_exporter_marks_an_unreadable_redis_down_and_keeps_the_ledger(
        pipeline: tuple[Ledger, redis.Redis], source: exporter.RedisSource) -> None:
    """A source that cannot be read is marked down; the other still exports."""
    registry = CollectorRegistry()
    registry.register(exporter.PipelineExporter(pipeline[0], source, clock=lambda: NOW))
    samples = _samples(registry)
    assert samples[("certfactory_exporter_source_up", (("source", "redis"),))] == 0
    assert samples[("certfactory_exporter_source_up", (("source", "ledger"),))] == 1
    assert not any(name.startswith("certfactory_queue_") for name, _ in samples)
    assert samples[("certfactory_requests", (("state", "published"),))] == 2


def _scrape(url: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_live_metrics_pass_promtool_check_metrics(pipeline: tuple[Ledger, redis.Redis], module_redis: RedisServer,
                                                  worker_metrics_dir: Path) -> None:
    """/metrics serves the workers' and the exporter's metrics, and promtool finds
    nothing to complain about in any certfactory_* metric."""
    registry = metrics_registry(worker_metrics_dir, lambda: pipeline[0], redis_following(lambda: module_redis.url))
    server = serve_metrics(registry, "127.0.0.1:0")
    try:
        exposition = _scrape(server.url)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.url.replace("/metrics", "/elsewhere"), timeout=5)
    finally:
        server.stop()
    for name in ("certfactory_stage_messages_total", "certfactory_keygen_duration_seconds_bucket",
                 "certfactory_queue_messages", "certfactory_requests", "certfactory_certificates_published_total"):
        assert f"\n{name}{{" in exposition, f"{name} missing from /metrics"
    assert 'certfactory_queue_messages{queue="sign"} 2.0' in exposition
    assert 'certfactory_exporter_source_up{source="ledger"} 1.0' in exposition
    result = promtool("check", "metrics", stdin=exposition)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "certfactory_" in line]
    assert complaints == [], "\n".join(complaints)


def _publish_steadily(ledger: Ledger, count: int, every: float, stop: threading.Event) -> None:
    """Add published certificates one by one, as the publish stage would."""
    rows = [{"id": f"p{n}", "batch_id": "pb", "agency_code": "A1", "request_ref": f"p{n}", "citizen_id": f"0020{n}",
             "record": "{}", "key_type": "ecdsa-p256", "state": "activated", "reason_code": None, "reason": None,
             "device_serial": None, "received_at": NOW, "ready_deadline": None, "publish_deadline": None,
             "activation_requested_at": None, "effective_at": None, "updated_at": NOW} for n in range(count)]
    ledger.add_batch({"id": "pb", "agency_code": "A1", "source": "test.jsonl", "submitted_at": NOW, "rows": count,
                      "accepted": count, "rejected": 0, "duplicates": 0, "endorsement": None}, rows)
    for n in range(count):
        if stop.wait(every):
            return
        with ledger.transaction() as connection:
            connection.execute(update(requests).where(requests.c.id == f"p{n}").values(state="published"))
            connection.execute(insert(certificates).values(serial=f"p{n}", request_id=f"p{n}", status="published",
                                                           created_at=NOW, published_at=dt.datetime.now(dt.UTC)))


def _prometheus_query(base: str, query: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_a_real_prometheus_reads_back_a_non_zero_end_to_end_throughput(
        tmp_path: Path, module_redis: RedisServer, worker_metrics_dir: Path) -> None:
    """A Prometheus server on loopback scrapes /metrics while certificates are published, and
    the dashboard's throughput query, asked through its HTTP API, answers above zero."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: install Debian's prometheus package (`make test` does, as root)")
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    server = serve_metrics(metrics_registry(worker_metrics_dir, ledger, redis.Redis.from_url(module_redis.url)),
                           "127.0.0.1:0")
    target = server.url.removeprefix("http://").removesuffix("/metrics")
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                  "scrape_configs": [{"job_name": "certfactory",
                                                      "static_configs": [{"targets": [target]}]}]}))
    web = f"127.0.0.1:{free_port()}"
    prometheus = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address={web}", "--log.level=warn"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    publisher = threading.Thread(target=_publish_steadily, args=(ledger, 300, 0.1, stop))
    publisher.start()
    panel = json.loads(DASHBOARD.read_text())["panels"][0]["targets"][0]["expr"]
    query = panel.replace("$__rate_interval", "10s")
    try:
        deadline, throughput = time.monotonic() + 40, 0.0
        while time.monotonic() < deadline and throughput <= 0:
            time.sleep(0.5)
            try:
                result = _prometheus_query(f"http://{web}", query)
            except (urllib.error.URLError, ConnectionError):
                continue  # not listening yet
            throughput = float(result[0]["value"][1]) if result else 0.0
        assert throughput > 0, f"Prometheus never saw certificates published ({query})"
        assert _prometheus_query(f"http://{web}", 'up{job="certfactory"}')[0]["value"][1] == "1"
    finally:
        stop.set()
        publisher.join()
        prometheus.terminate()
        prometheus.wait(20)
        server.stop()
        ledger.close()


def test_worker_metrics_are_one_cached_object_per_process() -> None:
    """worker_metrics() creates the metrics once (a second creation would be a duplicate)."""
    assert metrics.worker_metrics() is metrics.worker_metrics()


def test_labels_outside_their_closed_set_are_recorded_as_other() -> None:
    """An unknown stage or key type cannot grow a new series."""
    registry = CollectorRegistry()
    recorder = metrics.WorkerMetrics.create(registry)
    recorder.stage_done("request-1234", "ok", 0.1)
    recorder.token_operation("keygen", "rsa1024", 0.1)
    with pytest.raises(ValueError, match="operation must be one of"):
        recorder.token_operation("decrypt", "rsa2048", 0.1)
    labels: set[Any] = {sample.labels.get("stage") or sample.labels.get("key_type")
                        for family in registry.collect() for sample in family.samples if sample.labels}
    assert labels == {"other"}
