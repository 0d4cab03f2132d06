"""Reading a broker's Prometheus /metrics in tests."""

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(broker, timeout: float = 10.0) -> tuple[str, dict]:
    """(raw text, {(sample name, frozenset(labels)): value}) of /metrics,
    parsed with the prometheus-client parser (which raises on malformed text)."""
    try:
        with urllib.request.urlopen(f"{broker.admin_url}/metrics", timeout=timeout) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    assert status == 200, text
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def val(samples: dict, name: str, **labels) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset({k: str(v) for k, v in labels.items()}.items())), 0.0)
