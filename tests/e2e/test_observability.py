"""Observability (issue 6): the admin HTTP endpoint, Prometheus metrics, OTLP
export of traces and metrics, and readiness during log recovery.

Definitions the counters are checked against:

* bytes in (`sediment_produce_bytes_total{topic}`): for every partition of a
  Produce request whose batch was appended, the size of that record batch as
  sent (the whole v2 batch: 61-byte header plus records, compressed or not).
  Refused batches and idempotent duplicates are not counted. Since batches are
  stored verbatim, bytes in also equals the growth of the partition logs.
* records in (`sediment_produce_records_total{topic}`): the record count of
  each appended batch.
* bytes out (`sediment_fetch_bytes_total{topic}`): the size of the record
  batches carried in Fetch responses.
"""

from __future__ import annotations

import gzip
import datetime
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import consume_range, create_topic, producer
from sediment_harness.metrics import scrape, val

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def build_batch(n: int, size: int, tag: str) -> bytes:
    return kw.build_record_batch(
        [kw.Record(key=f"{tag}-{i}".encode(), value=(f"{tag}-{i}-".encode() * size)[:size]) for i in range(n)]
    )


# --------------------------------------------------------------------------
# a minimal OTLP/HTTP receiver (protobuf), decoding with opentelemetry-proto
# --------------------------------------------------------------------------


def _any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def _attrs(kvs) -> dict:
    return {kv.key: _any_value(kv.value) for kv in kvs}


class OtlpReceiver:
    """Accepts POST /v1/traces and /v1/metrics (application/x-protobuf, optionally
    gzip), keeps every span and metric data point it decodes."""

    def __init__(self):
        self.spans: list[dict] = []
        self.metrics: list[dict] = []
        self.requests = 0
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                return body

            def do_POST(self):
                body = self._body()
                if self.path == "/v1/traces":
                    req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    resp = trace_service_pb2.ExportTraceServiceResponse()
                    receiver._add_spans(req)
                elif self.path == "/v1/metrics":
                    req = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                    resp = metrics_service_pb2.ExportMetricsServiceResponse()
                    receiver._add_metrics(req)
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                out = resp.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _add_spans(self, req):
        with self.cond:
            self.requests += 1
            for rs in req.resource_spans:
                res = _attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append({
                            "name": s.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "kind": s.kind,
                            "status": s.status.code,
                            "attrs": _attrs(s.attributes),
                            "resource": res,
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                        })
            self.cond.notify_all()

    def _add_metrics(self, req):
        with self.cond:
            self.requests += 1
            for rm in req.resource_metrics:
                res = _attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        for dp in getattr(m, kind).data_points:
                            value = None
                            if kind in ("sum", "gauge"):
                                value = _any_value_num(dp)
                            elif kind == "histogram":
                                value = dp.count
                            self.metrics.append({"name": m.name, "kind": kind, "attrs": _attrs(dp.attributes),
                                                 "value": value, "resource": res})
            self.cond.notify_all()

    def wait_for(self, what: str, predicate, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = predicate()
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; have {len(self.spans)} spans, "
                                         f"{len(self.metrics)} metric points: "
                                         f"{sorted({s['name'] for s in self.spans})} "
                                         f"{sorted({m['name'] for m in self.metrics})[:40]}")
                self.cond.wait(min(left, 0.2))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _any_value_num(dp):
    kind = dp.WhichOneof("value")
    return getattr(dp, kind) if kind else None


@pytest.fixture
def otlp():
    r = OtlpReceiver()
    yield r
    r.close()


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_health_cluster_and_unknown_paths(broker):
    assert http_get(f"{broker.admin_url}/health") == (200, "ok\n")
    assert http_get(f"{broker.admin_url}/ready") == (200, "ready\n")
    status, body = http_get(f"{broker.admin_url}/v1/cluster")
    assert status == 200
    c = json.loads(body)
    assert c["node_id"] == 1
    assert c["ready"] is True
    assert c["listeners"]["kafka"] == broker.bootstrap
    assert c["listeners"]["admin"] == broker.admin_url.removeprefix("http://")
    assert len(c["cluster_id"]) > 10
    assert c["uptime_seconds"] >= 0
    assert http_get(f"{broker.admin_url}/nope")[0] == 404
    assert http_get(f"{broker.admin_url}/v1/topics/does-not-exist")[0] == 404


def test_metrics_count_exactly_what_was_produced_and_fetched(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=2)
    _, before = scrape(broker)

    # --- raw produce: we know every byte ---------------------------------
    sent_bytes = {0: 0, 1: 0}
    sent_records = {0: 0, 1: 0}
    with kw.Connection.to(broker.bootstrap) as conn:
        for i in range(10):
            p = i % 2
            batch = build_batch(3 + i, 200 + 50 * i, f"b{i}")
            r = kw.produce(conn, 9, topic_name, p, batch, acks=-1)
            assert r.error_code == 0, r
            sent_bytes[p] += len(batch)
            sent_records[p] += 3 + i
        # refused: the partition does not exist; counted as an error, not as bytes in
        r = kw.produce(conn, 9, topic_name, 7, build_batch(2, 10, "x"), acks=-1)
        assert r.error_code == 3, r
        # fetch everything back, one request per partition
        fetched = 0
        for p in (0, 1):
            f = kw.fetch(conn, 12, topic_name, [(p, 0)], max_wait_ms=0)
            assert f.partitions[0].error_code == 0
            assert len(f.partitions[0].records) == sent_bytes[p]
            fetched += len(f.partitions[0].records)

    # a request is counted once its response is written, a moment after the client read it:
    # scrape until the last one shows (an extra request would still fail the exact checks)
    deadline = time.monotonic() + 5
    while True:
        text, after = scrape(broker)
        counted = val(after, "sediment_requests_total", api="Fetch") - val(before, "sediment_requests_total", api="Fetch")
        if counted >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    t = topic_name
    total_bytes = sum(sent_bytes.values())
    total_records = sum(sent_records.values())
    d = lambda name, **l: val(after, name, **l) - val(before, name, **l)  # noqa: E731
    assert d("sediment_produce_bytes_total", topic=t) == total_bytes
    assert d("sediment_produce_records_total", topic=t) == total_records
    assert d("sediment_fetch_bytes_total", topic=t) == fetched == total_bytes
    assert d("sediment_requests_total", api="Produce") == 11
    assert d("sediment_requests_total", api="Fetch") == 2
    assert d("sediment_request_errors_total", api="Produce", error="UNKNOWN_TOPIC_OR_PARTITION") == 1
    assert d("sediment_request_latency_seconds_count", api="Produce") == 11
    assert d("sediment_produce_latency_seconds_count", acks="all") == 11
    assert d("sediment_fetch_latency_seconds_count") == 2
    assert d("sediment_request_latency_seconds_sum", api="Produce") > 0
    # histogram buckets are cumulative and end in +Inf == count
    assert val(after, "sediment_request_latency_seconds_bucket", api="Produce", le="+Inf") == \
        val(after, "sediment_request_latency_seconds_count", api="Produce")
    assert val(after, "sediment_log_fsync_latency_seconds_count") >= 1
    # per-partition gauges, computed at scrape time
    for p in (0, 1):
        assert val(after, "sediment_log_end_offset", topic=t, partition=p) == sent_records[p]
        assert val(after, "sediment_log_high_watermark", topic=t, partition=p) == sent_records[p]
        assert val(after, "sediment_log_start_offset", topic=t, partition=p) == 0
        assert val(after, "sediment_log_size_bytes", topic=t, partition=p) == sent_bytes[p]
        assert val(after, "sediment_log_segments", topic=t, partition=p) == 1
    assert val(after, "sediment_connections_total") >= 2
    assert val(after, "sediment_connections_open") >= 0
    assert val(after, "sediment_ready") == 1
    # hooks tiering and replication fill: present, at zero
    for name in ("sediment_tier_upload_lag_bytes", "sediment_under_replicated_partitions",
                 "sediment_cache_hits_total", "sediment_cache_misses_total", "sediment_leader_changes_total"):
        assert (name, frozenset()) in after, name
    # tiered storage writes each new topic's metadata object (one PUT): nothing else yet, since
    # no segment of this topic was sealed
    assert val(after, "sediment_object_store_requests_total", op="put") <= 1
    assert val(after, "sediment_raft_commit_latency_seconds_count", group="partition") == 0

    # /v1/topics says the same
    status, body = http_get(f"{broker.admin_url}/v1/topics/{t}")
    assert status == 200
    tj = json.loads(body)
    assert tj["name"] == t and tj["partition_count"] == 2 and tj["size_bytes"] == total_bytes
    for pj in tj["partitions"]:
        p = pj["partition"]
        assert (pj["log_start_offset"], pj["high_watermark"], pj["log_end_offset"], pj["size_bytes"]) == \
            (0, sent_records[p], sent_records[p], sent_bytes[p]), pj
    status, body = http_get(f"{broker.admin_url}/v1/topics")
    assert t in [x["name"] for x in json.loads(body)["topics"]]

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (tests/run.sh installs Debian's prometheus package)"
    r = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_metrics_after_a_real_client_run(broker, topic_name):
    """confluent-kafka (librdkafka, compressed batches): bytes in equals the log growth,
    records in equals the records acknowledged, and a full consume reads at least it all."""
    create_topic(broker.bootstrap, topic_name, partitions=3)
    _, before = scrape(broker)
    n = 3000
    p = producer(broker.bootstrap, **{"compression.type": "lz4", "linger.ms": 20})
    delivered = []
    for i in range(n):
        p.produce(topic_name, key=str(i).encode(), value=(b"v%06d" % i) * 20, partition=i % 3,
                  on_delivery=lambda err, msg: delivered.append(err))
        p.poll(0)
    p.flush(30)
    assert len(delivered) == n and not any(delivered)
    got = consume_range(broker.bootstrap, topic_name, {q: (0, n // 3) for q in range(3)})
    assert sum(len(v) for v in got.values()) == n
    _, after = scrape(broker)
    t = topic_name
    d = lambda name, **l: val(after, name, **l) - val(before, name, **l)  # noqa: E731
    log_bytes = sum(val(after, "sediment_log_size_bytes", topic=t, partition=q) for q in range(3))
    assert log_bytes > 0
    assert d("sediment_produce_bytes_total", topic=t) == log_bytes
    assert d("sediment_produce_records_total", topic=t) == n
    assert sum(val(after, "sediment_log_end_offset", topic=t, partition=q) for q in range(3)) == n
    assert d("sediment_fetch_bytes_total", topic=t) >= log_bytes
    assert d("sediment_requests_total", api="Produce") >= 1
    assert d("sediment_request_errors_total", api="Produce", error="UNKNOWN_TOPIC_OR_PARTITION") == 0


def test_produce_requests_arrive_as_otlp_spans(broker_factory, topic_name, otlp):
    b = broker_factory(env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    })
    create_topic(b.bootstrap, topic_name, partitions=2)
    batch = build_batch(4, 100, "span")
    with kw.Connection.to(b.bootstrap) as conn:
        for _ in range(3):
            r = kw.produce(conn, 9, topic_name, 1, batch, acks=-1)
            assert r.error_code == 0
        r = kw.produce(conn, 9, topic_name, 5, batch, acks=-1)  # no such partition
        assert r.error_code == 3

    def produce_spans():
        return [s for s in otlp.spans if s["attrs"].get("kafka.api") == "Produce"
                and s["attrs"].get("messaging.destination.name") == topic_name]

    spans = otlp.wait_for("4 produce spans", lambda: len(produce_spans()) >= 4 and produce_spans())
    ok = [s for s in spans if s["attrs"]["kafka.error_code"] == 0]
    bad = [s for s in spans if s["attrs"]["kafka.error_code"] != 0]
    assert len(ok) == 3 and len(bad) == 1, spans
    for s in ok:
        a = s["attrs"]
        assert s["name"] == "Produce"
        assert s["kind"] == 2  # SPAN_KIND_SERVER
        assert a["kafka.api_key"] == 0
        assert a["kafka.api_version"] == 9
        assert a["kafka.client_id"] == "sediment-tests"
        assert a["kafka.partition_count"] == 1
        assert a["kafka.bytes"] == len(batch)
        assert a["kafka.acks"] == -1
        assert a["messaging.system"] == "kafka"
        assert s["end"] >= s["start"]
        assert s["resource"]["service.name"] == "sediment"
        assert s["resource"]["deployment.environment"] == "test"
        assert s["resource"]["service.instance.id"] == "1"
    assert bad[0]["attrs"]["kafka.error_code"] == 3
    assert bad[0]["status"] == 2  # STATUS_CODE_ERROR

    # the group-commit fsync is a child span in the trace of a produce request it made durable
    ok_ids = {(s["trace_id"], s["span_id"]) for s in ok}
    fsyncs = otlp.wait_for("an fsync span under a produce span", lambda: [
        s for s in otlp.spans if s["name"] == "log.fsync" and (s["trace_id"], s["parent_span_id"]) in ok_ids])
    assert fsyncs[0]["attrs"]["topic"] == topic_name
    assert fsyncs[0]["attrs"]["partition"] == 1

    # metrics go out over OTLP too, with the same names
    pts = otlp.wait_for("sediment_requests{api=Produce} over OTLP", lambda: [
        m for m in otlp.metrics if m["name"] == "sediment_requests" and m["attrs"].get("api") == "Produce"
        and m["value"] and m["value"] >= 4])
    assert pts[0]["kind"] == "sum"
    assert pts[0]["resource"]["service.name"] == "sediment"
    otlp.wait_for("sediment_produce_bytes over OTLP", lambda: [
        m for m in otlp.metrics if m["name"] == "sediment_produce_bytes"
        and m["attrs"].get("topic") == topic_name and m["value"] == 3 * len(batch)])


def test_sampling_ratio_zero_exports_no_request_spans(broker_factory, topic_name, otlp):
    b = broker_factory(env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_SERVICE_NAME": "sediment-test",
    })
    create_topic(b.bootstrap, topic_name, partitions=1)
    with kw.Connection.to(b.bootstrap) as conn:
        for _ in range(5):
            assert kw.produce(conn, 9, topic_name, 0, build_batch(2, 10, "z"), acks=-1).error_code == 0
    # metrics still flow (export is on), spans do not (sampled out)
    pts = otlp.wait_for("metrics", lambda: [m for m in otlp.metrics if m["name"] == "sediment_requests"])
    assert pts[0]["resource"]["service.name"] == "sediment-test"
    time.sleep(1.0)
    assert not [s for s in otlp.spans if s["attrs"].get("kafka.api") == "Produce"]


def test_bad_otel_settings_are_config_errors(sediment_bin, tmp_path):
    for env, var in [({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
                     ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
                     ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "5"}, "OTEL_TRACES_SAMPLER_ARG"),
                     ({"SEDIMENT_LOG_FORMAT": "xml"}, "log_format")]:
        r = subprocess.run([str(sediment_bin), "serve", "--check-config", "--data-dir", str(tmp_path)],
                           env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, timeout=30)
        assert r.returncode == 2, (env, r)
        assert var in r.stderr.decode(), r.stderr


def test_json_logs(broker_factory):
    b = broker_factory(extra_args=["--log-format", "json"])
    b.stop()
    lines = [l for l in b.log_text().splitlines() if l.startswith("{")]
    assert lines, b.log_tail(20)
    msgs = [json.loads(l) for l in lines]
    assert any(m.get("message", "").startswith("kafka listener ready") for m in msgs), msgs[:5]
    assert all("level" in m and "timestamp" in m for m in msgs)


@pytest.mark.slow
def test_ready_is_503_during_recovery_and_200_after(broker_factory, topic_name):
    """A large unflushed-by-shutdown log makes recovery scan (CRC) every active
    segment; /health answers and /ready says 503 the whole time, the Kafka port
    answers only after (it is bound from the start, so a request sent during
    recovery waits in the backlog), and /ready turns 200."""
    b = broker_factory()
    parts = 4
    create_topic(b.bootstrap, topic_name, partitions=parts)
    batch = build_batch(16, 60 * 1024, "big")  # ~1 MB; sent again and again (the broker patches the base offset)
    per_part = 64
    with kw.Connection.to(b.bootstrap, timeout=30) as conn:
        for i in range(per_part * parts):
            assert kw.produce(conn, 9, topic_name, i % parts, batch, acks=1).error_code == 0
    b.kill()  # no clean shutdown: every active segment is scanned on start

    seen: list[tuple[float, object, bool]] = []  # (time, /ready status or error, kafka port open)
    probes_at: list[tuple[float, float, bool]] = []  # (wall time sent, wall time done, answered)
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                status = http_get(f"{b.admin_url}/ready", timeout=2)[0]
                health = http_get(f"{b.admin_url}/health", timeout=2)[0]
                assert health == 200
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                status = type(e).__name__
            sent = time.time()
            ok = kw.probe(b.host, b.port, timeout=0.5) if isinstance(status, int) else None
            seen.append((time.monotonic(), status, ok))
            if ok is not None:
                probes_at.append((sent, time.time(), ok))
            time.sleep(0.005)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        b.start(timeout=120)
        deadline = time.monotonic() + 10
        while not any(s == 200 for _, s, _ in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(10)
    statuses = [s for _, s, _ in seen]
    assert 503 in statuses, f"never saw /ready 503 during recovery: {statuses[:20]}"
    first_ok = statuses.index(200)
    assert all(s != 200 for s in statuses[:first_ok])
    assert all(s == 200 for s in statuses[first_ok:]), "ready went back to 503 while serving"
    # recovery runs with no Kafka request answered: the first answer comes after the broker
    # logged that it accepts on the port (once recovered), and ApiVersions was tried before
    log = b.log_tail(10_000, since_last_start=True)
    line = next(l for l in log.splitlines() if "kafka listener ready" in l)
    accepting = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
    assert any(sent < accepting for sent, _, _ in probes_at), "no ApiVersions was sent during recovery"
    early = [(sent, done) for sent, done, ok in probes_at if ok and done < accepting]
    assert not early, f"kafka port answered during recovery ({len(early)} probes before {line})"
    probes = [o for _, s, o in seen if o is not None]
    assert all(probes[probes.index(True):]), "kafka port closed again"
    assert all(o for _, s, o in seen if s == 200), "/ready was 200 while the kafka port did not answer"
    recovery_window = [ts for ts, s, _ in seen if s == 503]
    print(f"/ready was 503 for {recovery_window[-1] - recovery_window[0]:.2f}s ({len(recovery_window)} polls)")
    # everything written before the crash is there
    status, body = http_get(f"{b.admin_url}/v1/topics/{topic_name}")
    tj = json.loads(body)
    for pj in tj["partitions"]:
        assert pj["log_end_offset"] == per_part * 16
        assert pj["size_bytes"] == per_part * len(batch)
    assert tj["size_bytes"] == per_part * parts * len(batch)


def test_dashboard_queries_only_metrics_that_exist(cluster_factory, topic_name):
    """Every sediment_* series the Grafana dashboard (deploy/grafana/sediment.json, the chart's
    dashboards/sediment.json) queries is exported by the brokers of a three-broker cluster that
    has seen traffic (replication series exist only where there are followers)."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    dash_path = repo / "deploy" / "grafana" / "sediment.json"
    assert dash_path.resolve() == (repo / "helm" / "sediment" / "dashboards" / "sediment.json").resolve(), \
        "deploy/grafana/sediment.json should be the chart's dashboard (one copy)"
    dash = json.loads(dash_path.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    wanted = {n for e in exprs for n in re.findall(r"\b(sediment_[a-z0-9_]+)\b", e)}
    assert wanted

    c = cluster_factory(3)
    create_topic(c.bootstrap, topic_name, partitions=1, replication_factor=3)
    leader = c.node(c.leader(topic_name, 0))
    with kw.Connection.to(leader.bootstrap) as conn:
        assert kw.produce(conn, 9, topic_name, 0, build_batch(2, 10, "d"), acks=-1).error_code == 0
        assert kw.produce(conn, 9, topic_name, 3, build_batch(2, 10, "d"), acks=-1).error_code == 3  # an error
        kw.fetch(conn, 12, topic_name, [(0, 0)], max_wait_ms=0)
    exported = {name for n in c.live() for name, _ in scrape(n)[1]}
    missing = sorted(wanted - exported)
    assert not missing, f"dashboard queries series no broker exports: {missing}"


def test_otlp_grpc_export(broker_factory, topic_name):
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc: spans and metrics reach an OTLP/gRPC receiver (run in
    its own process: see otlp_grpc_sink.py)."""
    import importlib.util
    import sys
    from pathlib import Path

    if importlib.util.find_spec("grpc") is None:
        pytest.skip("grpcio is not installed")
    sink = subprocess.Popen([sys.executable, str(Path(__file__).with_name("otlp_grpc_sink.py"))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    got = {"spans": [], "metrics": set()}
    cond = threading.Condition()

    def read():
        for line in sink.stdout:
            m = json.loads(line)
            with cond:
                if "span" in m:
                    got["spans"].append((m["span"], m["attrs"]))
                elif "metric" in m:
                    got["metrics"].add(m["metric"])
                elif "port" in m:
                    got["port"] = m["port"]
                cond.notify_all()

    threading.Thread(target=read, daemon=True).start()
    try:
        with cond:
            assert cond.wait_for(lambda: "port" in got, timeout=30), "the gRPC receiver did not start"
        b = broker_factory(env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{got['port']}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        })
        create_topic(b.bootstrap, topic_name, partitions=1)
        with kw.Connection.to(b.bootstrap) as conn:
            assert kw.produce(conn, 9, topic_name, 0, build_batch(3, 10, "g"), acks=-1).error_code == 0
        deadline = time.monotonic() + 20
        with cond:
            while not (any(n == "Produce" and a.get("messaging.destination.name") == topic_name for n, a in got["spans"])
                       and "sediment_produce_bytes" in got["metrics"]):
                left = deadline - time.monotonic()
                assert left > 0, f"over gRPC got spans {sorted({n for n, _ in got['spans']})}, metrics {sorted(got['metrics'])[:10]}"
                cond.wait(min(left, 0.2))
        b.stop()
    finally:
        sink.stdin.close()
        try:
            sink.wait(10)
        except subprocess.TimeoutExpired:
            sink.kill()
