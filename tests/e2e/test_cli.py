"""The `sediment` command line: serve's config contract (exit 2 with one line
naming the bad key, precedence flags > env > file > defaults) and the topic
subcommands against a running broker."""

import os
import subprocess
import time

import pytest
from confluent_kafka.admin import ConfigResource

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import admin, create_topic
from sediment_harness.ports import free_port, port_is_listening


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEDIMENT_")}
    env.update(extra)
    return env


def _serve_args(tmp_path, **over):
    args = {
        "--listen": f"127.0.0.1:{free_port()}",
        "--admin-listen": f"127.0.0.1:{free_port()}",
        "--raft-listen": f"127.0.0.1:{free_port()}",
        "--data-dir": str(tmp_path / "data"),
    }
    args.update(over)
    out = []
    for k, v in args.items():
        if v is not None:
            out += [k, v]
    return out


@pytest.mark.parametrize("flag,value,key", [
    ("--listen", "not-an-address", "listen"),
    ("--admin-listen", "127.0.0.1:notaport", "admin"),
    ("--node-id", "abc", "node"),
    ("--object-store", "ftp://somewhere/else", "object"),
    ("--fsync", "sometimes", "fsync"),
    ("--cache-size", "lots", "cache"),
])
def test_bad_flag_exits_2_naming_it(sediment_bin, tmp_path, flag, value, key):
    args = _serve_args(tmp_path, **{flag: value})
    listen = args[args.index("--listen") + 1]
    r = subprocess.run([str(sediment_bin), "serve", *args], capture_output=True, text=True, timeout=30,
                       env=_env())
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    # one line naming the key (clap may add its "For more information, try '--help'" hint)
    assert lines and lines[0].lower().startswith("error"), r.stderr
    assert key in lines[0].replace("_", "-").lower(), f"first line does not name {key!r}: {lines[0]}"
    assert all("help" in l for l in lines[1:]), f"more than one line of error: {r.stderr!r}"
    if flag != "--listen":
        host, port = listen.rsplit(":", 1)
        assert not port_is_listening(host, int(port))


def test_bad_env_and_file_exit_2_naming_the_key(sediment_bin, tmp_path):
    base = [str(sediment_bin), "serve", "--check-config", *_serve_args(tmp_path)]
    r = subprocess.run(base, capture_output=True, text=True, timeout=30, env=_env(SEDIMENT_NUM_PARTITIONS="many"))
    assert r.returncode == 2 and "num_partitions" in r.stderr.replace("-", "_").lower(), r.stderr
    cfg = tmp_path / "bad.toml"
    cfg.write_text('no_such_key = 5\n')
    r = subprocess.run(base + ["--config", str(cfg)], capture_output=True, text=True, timeout=30, env=_env())
    assert r.returncode == 2 and "no_such_key" in r.stderr, r.stderr
    r = subprocess.run(base + ["--config", str(tmp_path / "missing.toml")], capture_output=True, text=True,
                       timeout=30, env=_env())
    assert r.returncode == 2, r.stderr
    r = subprocess.run(base, capture_output=True, text=True, timeout=30, env=_env())
    assert r.returncode == 0, r.stderr


def _listens_on(sediment_bin, tmp_path, args, env, port, name):
    log = open(tmp_path / f"{name}.log", "wb")
    p = subprocess.Popen([str(sediment_bin), "serve", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                         cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert p.poll() is None, (tmp_path / f"{name}.log").read_text()
            if kw.probe("127.0.0.1", port, timeout=0.5):
                return True
            time.sleep(0.1)
        return False
    finally:
        p.terminate()
        assert p.wait(30) == 0


def test_config_precedence_flag_env_file(sediment_bin, tmp_path):
    p_file, p_env, p_flag = free_port(), free_port(), free_port()
    cfg = tmp_path / "sediment.toml"
    cfg.write_text(f'listen = "127.0.0.1:{p_file}"\nnum_partitions = 1\n')
    common = ["--config", str(cfg), "--admin-listen", f"127.0.0.1:{free_port()}",
              "--raft-listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data")]
    assert _listens_on(sediment_bin, tmp_path, common, _env(), p_file, "file")
    assert _listens_on(sediment_bin, tmp_path, common, _env(SEDIMENT_LISTEN=f"127.0.0.1:{p_env}"), p_env, "env")
    assert _listens_on(sediment_bin, tmp_path, common + ["--listen", f"127.0.0.1:{p_flag}"],
                       _env(SEDIMENT_LISTEN=f"127.0.0.1:{p_env}"), p_flag, "flag")


def _cli(sediment_bin, broker, *args, check=True):
    r = subprocess.run([str(sediment_bin), *args, "--bootstrap", broker.bootstrap], capture_output=True,
                       text=True, timeout=60, env=_env())
    if check:
        assert r.returncode == 0, f"sediment {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_topic_subcommands(sediment_bin, broker, topic_name):
    a = admin(broker.bootstrap)
    _cli(sediment_bin, broker, "topic", "create", topic_name, "--partitions", "3",
         "--config", "retention.ms=86400000")
    md = a.list_topics(timeout=15).topics
    assert sorted(md[topic_name].partitions) == [0, 1, 2]

    other = f"{topic_name}-other"
    create_topic(broker.bootstrap, other, 1, client=a)
    out = _cli(sediment_bin, broker, "topic", "list").stdout
    assert topic_name in out.split() and other in out.split(), out

    out = _cli(sediment_bin, broker, "topic", "describe", topic_name).stdout
    assert topic_name in out
    assert "retention.ms" in out and "86400000" in out, out

    _cli(sediment_bin, broker, "topic", "alter", topic_name, "--set", "retention.ms=3600000",
         "--set", "segment.ms=7200000")
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    cfg = a.describe_configs([res])[res].result(30)
    assert (cfg["retention.ms"].value, cfg["segment.ms"].value) == ("3600000", "7200000")
    _cli(sediment_bin, broker, "topic", "alter", topic_name, "--delete", "segment.ms")
    cfg = a.describe_configs([res])[res].result(30)
    assert cfg["retention.ms"].value == "3600000" and cfg["segment.ms"].is_default

    _cli(sediment_bin, broker, "topic", "delete", topic_name)
    deadline = time.monotonic() + 10
    while topic_name in a.list_topics(timeout=15).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    assert topic_name not in a.list_topics(timeout=15).topics
    assert other in a.list_topics(timeout=15).topics

    # errors are exit code 1 (runtime), with a message
    r = _cli(sediment_bin, broker, "topic", "delete", f"{topic_name}-missing", check=False)
    assert r.returncode == 1 and r.stderr.strip(), (r.returncode, r.stderr)
    r = _cli(sediment_bin, broker, "topic", "create", other, "--partitions", "1", check=False)
    assert r.returncode == 1 and r.stderr.strip(), (r.returncode, r.stderr)


def test_produce_and_consume_subcommands(sediment_bin, broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 2)
    lines = "".join(f"key{i}\tvalue {i}\n" for i in range(200))
    r = subprocess.run([str(sediment_bin), "produce", "--topic", topic_name, "--key-separator", "\t",
                        "--header", "origin=cli", "--compression", "snappy", "--bootstrap", broker.bootstrap],
                       input=lines, capture_output=True, text=True, timeout=60, env=_env())
    assert r.returncode == 0, r.stderr

    # what the CLI wrote, read by librdkafka: keys, values, headers, xerial snappy batches
    from sediment_harness.clients import consume_range, watermarks
    hw = {q: watermarks(broker.bootstrap, topic_name, q)[1] for q in (0, 1)}
    assert sum(hw.values()) == 200
    got = consume_range(broker.bootstrap, topic_name, {q: (0, h) for q, h in hw.items()})
    seen = {}
    for q, msgs in got.items():
        for m in msgs:
            seen[m.key().decode()] = (m.value().decode(), m.headers(), q)
    assert {k: v for k, (v, _, _) in seen.items()} == {f"key{i}": f"value {i}" for i in range(200)}
    assert all(h == [("origin", b"cli")] for _, h, _ in seen.values())

    r = subprocess.run([str(sediment_bin), "consume", "--topic", topic_name, "--from-beginning",
                        "--max-messages", "200", "--timeout-ms", "10000", "--format", "%p|%o|%k|%v|%h",
                        "--bootstrap", broker.bootstrap],
                       capture_output=True, text=True, timeout=60, env=_env())
    assert r.returncode == 0, r.stderr
    out = [l.split("|") for l in r.stdout.splitlines() if l]
    assert len(out) == 200
    for p, o, k, v, h in out:
        assert seen[k][0] == v and seen[k][2] == int(p)
        assert h == "origin=cli"
    for q in (0, 1):
        assert sorted(int(o) for p, o, *_ in out if int(p) == q) == list(range(hw[q]))


def test_produce_idempotence_needs_acks_all(sediment_bin, broker, topic_name):
    """`--idempotence true` with acks other than all is a usage error (exit 2, naming the flag),
    as Kafka's clients refuse it; with acks=all (the default) the CLI writes idempotent batches."""
    create_topic(broker.bootstrap, topic_name, 1)
    r = subprocess.run([str(sediment_bin), "produce", "--topic", topic_name, "--acks", "1", "--idempotence", "true",
                        "--bootstrap", broker.bootstrap], input="x\n", capture_output=True, text=True, timeout=60, env=_env())
    assert r.returncode == 2 and "--idempotence" in r.stderr, (r.returncode, r.stderr)

    r = subprocess.run([str(sediment_bin), "produce", "--topic", topic_name, "--bootstrap", broker.bootstrap],
                       input="a\nb\nc\n", capture_output=True, text=True, timeout=60, env=_env())
    assert r.returncode == 0, r.stderr
    # The batch on the wire carries a producer id and sequence 0: read it back raw.
    from sediment_harness import kafka_wire

    with kafka_wire.Connection.to(broker.bootstrap) as conn:
        batches = kafka_wire.fetch_batches(conn, topic_name, 0, 0, 3)
    assert batches and all(b.producer_id >= 0 for b in batches), batches
    assert batches[0].base_sequence == 0


def test_readme_names_exactly_the_serve_flags(sediment_bin):
    """The README's configuration section lists the keys that also have a flag; `serve --help`
    is the truth."""
    import re
    from pathlib import Path
    help_text = subprocess.run([str(sediment_bin), "serve", "--help"], capture_output=True, text=True, check=True).stdout
    flags = set(re.findall(r"^\s*(?:-\w, )?--([a-z][a-z-]*)", help_text, re.M)) - {"config", "check-config", "help"}
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    m = re.search(r"These also have a flag \(the key\s+with dashes, e\.g\. `--node-id`\): (.*?)\.\n\n", readme, re.S)
    assert m, "README lost its list of keys with flags"
    listed = {k.replace("_", "-") for k in re.findall(r"`([a-z_]+)`", m.group(1))}
    assert listed == flags, f"README lists {sorted(listed - flags)} without a flag, misses {sorted(flags - listed)}"


def test_sizes_may_be_plain_byte_counts_in_env_and_file(sediment_bin, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("max_local_bytes = 50000000000\n")
    p = subprocess.run([str(sediment_bin), "serve", "--config", str(conf), "--check-config"],
                       env=_env(SEDIMENT_CACHE_SIZE="1073741824"), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
