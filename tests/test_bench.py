"""The benchmark code is correct: its CBC baseline and instances (bench/selection.py), its report (bench/run.py)."""
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))

import selection  # noqa: E402

from mmlego.scaling_optimizer import solve  # noqa: E402


@pytest.mark.parametrize('kind', ['structured', 'independent'])
def test_random_instances_are_monotone(kind):
    problem = selection.random_problem(random.Random(0), 12, kind)
    for options in problem.blocks.values():
        assert [o.sparsity for o in options] == sorted(o.sparsity for o in options)
        for a, b in zip(options, options[1:]):
            assert b.latency_ms <= a.latency_ms and b.memory_bytes <= a.memory_bytes
            assert b.accuracy_drop >= a.accuracy_drop
        assert options[0].accuracy_drop == 0.0


def test_cbc_baseline_finds_the_brute_force_optimum():
    rng = random.Random(1)
    problem = selection.random_problem(rng, 5, 'independent')
    for latency_ms, memory_bytes in selection.draw_budgets([problem], rng, 9):
        want = selection.weighted_drop([problem], solve(problem, latency_ms, memory_bytes, solver='brute_force'))
        got = selection.cbc_legodnn([problem], latency_ms, memory_bytes)
        assert (got is None) == (want is None)
        assert got is None or got == pytest.approx(want, abs=1e-9)


def test_measure_instance_checks_every_answer():
    rng = random.Random(2)
    problems = [selection.random_problem(rng, 4, 'structured', 'a'),
                selection.random_problem(rng, 3, 'structured', 'b')]
    measured = selection.measure_instance(problems, selection.draw_budgets(problems, rng, 6), brute=True)
    assert measured['worse'] == 0 and measured['fallbacks'] == 0
    assert len(measured['ours_ms']) == len(measured['cbc_ms']) == 6
    row = selection.summarize('two models', [measured])
    assert row['budgets'] == 6 and row['speedup'] == pytest.approx(row['cbc_median_ms'] / row['ours_median_ms'])


def test_run_writes_the_summary_and_plots(tmp_path):
    subprocess.run([sys.executable, str(ROOT / 'bench' / 'run.py'), '--only', 'fidelity', '--out', str(tmp_path)],
                   check=True, capture_output=True, cwd=ROOT, timeout=300)
    text = (tmp_path / 'summary.md').read_text()
    assert '## B5 Fidelity' in text and '| tsn |' in text
    assert (tmp_path / 'fidelity.json').exists()
