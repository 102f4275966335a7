#!/usr/bin/env python3
"""Converts a strata JSONL run log (strata train --log, examples' --log) into a
TensorBoard event file, so that `tensorboard --logdir DIR` shows the run.

    tools/tensorboard/jsonl_to_tensorboard.py run/log.jsonl run/tensorboard
    tensorboard --logdir run/tensorboard        # (tensorboard from PyPI, in its own venv)

Standard library only: the event file is written directly in TensorBoard's format
(TFRecord frames of Event protocol buffers, masked CRC32C), so converting needs no
TensorFlow or tensorboard install; tools/tensorboard/check.sh reads the output back
with the tensorboard package itself.
Invariant: every step record's numeric fields become scalars under train/<name>,
eval records' val_loss under eval/val_loss; "nan"/"inf" strings become IEEE values;
a step that a resumed run repeated is written once, with its latest values.
"""
import json
import math
import os
import socket
import struct
import sys
import time

# CRC32C (Castagnoli), reflected polynomial 0x82F63B78, table-driven.
_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    return varint((number << 3) | wire) + payload


def length_delimited(number: int, payload: bytes) -> bytes:
    return field(number, 2, varint(len(payload)) + payload)


def event(wall_time: float, step: int, summary: bytes = b"", file_version: str = "") -> bytes:
    # Event: wall_time = 1 (double), step = 2 (int64), file_version = 3, summary = 5.
    e = field(1, 1, struct.pack("<d", wall_time)) + field(2, 0, varint(step & 0xFFFFFFFFFFFFFFFF))
    if file_version:
        e += length_delimited(3, file_version.encode())
    if summary:
        e += length_delimited(5, summary)
    return e


def scalar_summary(values) -> bytes:
    # Summary { repeated Value value = 1 }; Value { tag = 1, simple_value = 2 (float) }.
    out = b""
    for tag, v in values:
        out += length_delimited(1, length_delimited(1, tag.encode()) + field(2, 5, struct.pack("<f", v)))
    return out


def record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data))


def number(v):
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if v in ("nan", "inf", "-inf"):
        return float(v)
    return None


def convert(log_path: str, out_dir: str) -> str:
    steps, evals = {}, {}
    with open(log_path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                print(f"{log_path}:{line_number}: skipped a line that is not JSON (cut by a crash?)", file=sys.stderr)
                continue
            kind = r.get("type")
            if kind == "step":
                steps[int(r["step"])] = r  # a repeated step (resume without a cut log): the latest wins
            elif kind == "eval":
                evals[int(r["step"])] = r
    if not steps and not evals:
        raise SystemExit(f"{log_path}: no step or eval records; is it a strata run log?")
    os.makedirs(out_dir, exist_ok=True)
    now = time.time()
    path = os.path.join(out_dir, f"events.out.tfevents.{int(now)}.{socket.gethostname()}.strata")
    with open(path, "wb") as f:
        f.write(record(event(now, 0, file_version="brain.Event:2")))
        for s in sorted(steps):
            r = steps[s]
            values = [("train/" + k, x) for k, v in r.items()
                      if k not in ("type", "step", "units", "warnings") and (x := number(v)) is not None]
            f.write(record(event(now, s, scalar_summary(values))))
        for s in sorted(evals):
            x = number(evals[s].get("val_loss"))
            if x is not None:
                f.write(record(event(now, s, scalar_summary([("eval/val_loss", x)]))))
    return path


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n")[1] if len(argv) > 1 else __doc__, file=sys.stderr)
        print("usage: jsonl_to_tensorboard.py LOG.jsonl OUT_DIR", file=sys.stderr)
        return 0 if len(argv) > 1 and argv[1] in ("-h", "--help") else 2
    path = convert(argv[1], argv[2])
    print(f"{argv[1]} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
