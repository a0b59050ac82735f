"""What an interop run's historian (`mosquitto_sub -t .../records`) received, de-duplicated
by seq: the sample and gap records, each with its seq, in arrival order."""
import json


def load(path):
    samples, gaps, seen = [], [], set()
    for line in open(path):
        if not line.strip():
            continue
        for r in json.loads(line)["records"]:
            if r["seq"] in seen:
                continue
            seen.add(r["seq"])
            body = r["body"]
            if "sample" in body:
                samples.append((r["seq"], body["sample"]))
            if "gap" in body:
                gaps.append((r["seq"], body["gap"]))
    return samples, gaps
