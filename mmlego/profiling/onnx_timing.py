"""Times an exported latency suite with onnxruntime alone (numpy + onnxruntime; no torch, no mmlego).

The suite is what :func:`mmlego.profiling.onnx_latency.export_latency_suite` writes: ``suite.json`` naming one ONNX
file and one input (``.npy``) per composite and per descendant block. On a device that has only onnxruntime, copy
the suite directory and this file there and run::

    python onnx_timing.py SUITE_DIR [--provider CPUExecutionProvider] [--threads N]

It writes ``SUITE_DIR/timings.json``; bring it back and turn it into the bank's latency table with
``tools/profile_latency.py CONFIG BANK --onnx-timings SUITE_DIR/timings.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np

#: suite.json's format version (written by the exporter, checked here).
SUITE_FORMAT = 1
SUITE_FILE, TIMINGS_FILE = 'suite.json', 'timings.json'


def device_of(provider: str) -> str:
    """The torch device type an execution provider runs on (the latency table's device)."""
    return 'cuda' if provider.startswith(('CUDA', 'Tensorrt')) else 'cpu'


def time_suite(directory: str, provider: str = 'CPUExecutionProvider', threads: int = 0, warmup: int = 3,
               repeats: int = 20, rounds: int = 4) -> dict[str, Any]:
    """Median latency of every model of the suite in onnxruntime, written to ``timings.json`` (and returned).

    Models are visited in ``rounds`` rounds, alternately forward and backward, so a drift of the machine's speed
    spreads evenly over them (as :func:`mmlego.profiling.profile_latency` does in PyTorch).

    Args:
        directory: The suite directory (``suite.json`` and the files it names).
        provider: onnxruntime execution provider.
        threads: Intra-op threads (0: onnxruntime's default).
        warmup: Untimed runs of a model before each round's timed runs.
        repeats: Timed runs per model, split over the rounds.
        rounds: Visits of every model.

    Returns:
        ``{'device', 'provider', 'onnxruntime', 'ms': {entry id: median ms}}``.

    Raises:
        ValueError: Not a suite directory, another format, or bad repeat counts.
    """
    import onnxruntime
    path = os.path.join(directory, SUITE_FILE)
    try:
        with open(path) as file:
            suite = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f'{path} is not a latency suite ({error}); write one with tools/profile_latency.py '
                         '--onnx-suite DIR') from None
    if suite.get('format') != SUITE_FORMAT:
        raise ValueError(f'{path} has suite format {suite.get("format")!r}, this timer reads {SUITE_FORMAT}')
    if repeats < 1 or rounds < 1 or warmup < 0:
        raise ValueError(f'need repeats >= 1, rounds >= 1, warmup >= 0; got {repeats}, {rounds}, {warmup}')
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    sessions, feeds = {}, {}
    for entry in suite['entries']:
        session = onnxruntime.InferenceSession(os.path.join(directory, entry['file']), options,
                                               providers=[provider])
        data = np.load(os.path.join(directory, entry['input']), allow_pickle=False)
        sessions[entry['id']] = session
        feeds[entry['id']] = {session.get_inputs()[0].name: data}
    per_round = max(1, -(-repeats // rounds))
    order = list(sessions)
    samples: dict[str, list[float]] = {key: [] for key in order}
    for visit in range(rounds):
        for key in (order if visit % 2 == 0 else order[::-1]):
            session, feed = sessions[key], feeds[key]
            for i in range(warmup + per_round):
                start = time.perf_counter()
                session.run(None, feed)
                if i >= warmup:
                    samples[key].append((time.perf_counter() - start) * 1000.0)
    timings = dict(device=device_of(provider), provider=provider, onnxruntime=onnxruntime.__version__,
                   threads=threads, ms={key: statistics.median(values) for key, values in samples.items()})
    tmp = os.path.join(directory, f'.{TIMINGS_FILE}.tmp')
    with open(tmp, 'w') as file:
        json.dump(timings, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, os.path.join(directory, TIMINGS_FILE))
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description='Time a latency suite with onnxruntime (writes timings.json)')
    parser.add_argument('suite', help='the suite directory (suite.json)')
    parser.add_argument('--provider', default='CPUExecutionProvider')
    parser.add_argument('--threads', type=int, default=0, help='intra-op threads (0: onnxruntime default)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--rounds', type=int, default=4)
    args = parser.parse_args(argv)
    try:
        timings = time_suite(args.suite, args.provider, args.threads, args.warmup, args.repeats, args.rounds)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print(f'timed {len(timings["ms"])} models on {timings["provider"]}: {os.path.join(args.suite, TIMINGS_FILE)}')


if __name__ == '__main__':
    main()
