"""Fetch an xturn HTTP endpoint and print what a monitoring system would see, as JSON.

/metrics is parsed with the prometheus_client package's OpenMetrics parser (strict: it
rejects a malformed exposition, including one without "# EOF"); each sample is printed as
"name{label=value,...}" sorted by label. Other paths print their status code and body.
Usage: scrape_metrics.py URL
"""
import json
import sys
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    url = sys.argv[1]
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            status, body, ctype = r.status, r.read().decode(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        status, body, ctype = e.code, e.read().decode(), e.headers.get("Content-Type")
    out = {"status": status, "content_type": ctype}
    if url.endswith("/metrics") and status == 200:
        samples = {}
        types = {}
        for fam in text_string_to_metric_families(body):
            types[fam.name] = fam.type
            for s in fam.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}"] = s.value
        out["samples"] = samples
        out["types"] = types
    else:
        out["body"] = body
    print(json.dumps(out))


main()
