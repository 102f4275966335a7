#!/usr/bin/env python3
"""Reads a converted event directory back with the tensorboard package itself and
compares every scalar with the JSONL log it came from (run by check.sh).

    check.py LOG.jsonl EVENT_DIR
"""
import json
import math
import struct
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(log_path, event_dir):
    steps, evals = {}, {}
    for line in open(log_path, encoding="utf-8"):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r.get("type") == "step":
            steps[r["step"]] = r
        elif r.get("type") == "eval":
            evals[r["step"]] = r
    acc = EventAccumulator(event_dir, size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    checked = 0
    for tag in ("train/loss", "train/lr", "train/grad_norm", "eval/val_loss"):
        source = evals if tag.startswith("eval/") else steps
        key = tag.split("/", 1)[1]
        if not source:
            continue
        assert tag in tags, f"{tag} missing from {event_dir} (has {tags})"
        events = acc.Scalars(tag)
        assert [e.step for e in events] == sorted(source), f"{tag}: steps differ"
        for e in events:
            # Event values are float32, and the log's 9-digit floats are float32s.
            want = struct.unpack("<f", struct.pack("<f", float(source[e.step][key])))[0]
            assert e.value == want or (math.isnan(e.value) and math.isnan(want)), f"{tag} step {e.step}: {e.value} != {want}"
            checked += 1
    print(f"tensorboard reads {checked} scalars of {log_path} back exactly ({len(tags)} tags)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
