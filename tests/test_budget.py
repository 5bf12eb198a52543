"""The one budget parser behind the CLI, OnlineScalingHook, LegoDNN.scale and scale_model."""
import math

import pytest

from mmlego.scaling_optimizer.budget import format_budget, is_relative, parse_budget, resolve_budget


@pytest.mark.parametrize('given, expected', [
    (None, {'latency_ms': None, 'memory_mb': None}),
    (dict(memory_mb=12), {'latency_ms': None, 'memory_mb': 12.0}),
    (dict(latency_ms=30.5, memory_mb=math.inf), {'latency_ms': 30.5, 'memory_mb': None}),
    (dict(memory='1.5GB', latency='0.03s'), {'latency_ms': 30.0, 'memory_mb': 1536.0}),
    (dict(memory_mb='512KB'), {'latency_ms': None, 'memory_mb': 0.5}),
    (dict(memory_mb='20'), {'latency_ms': None, 'memory_mb': 20.0}),
    ('memory=12.5MB, latency=30', {'latency_ms': 30.0, 'memory_mb': 12.5}),
    ('MEMORY=60%,latency_ms=80.0%', {'latency_ms': '80%', 'memory_mb': '60%'}),
    ('latency=inf', {'latency_ms': None, 'memory_mb': None}),
])
def test_accepted_budgets(given, expected):
    assert parse_budget(given) == expected


@pytest.mark.parametrize('given, message', [
    (dict(memory_mb=True), 'memory_mb must be a number >= 0'),
    (dict(memory_mb=-1), 'memory_mb must be a number >= 0'),
    (dict(latency_ms=float('nan')), 'latency_ms must be a number >= 0'),
    (dict(latency_ms='-3ms'), 'latency_ms must be a number >= 0'),
    (dict(memory_mb='12GHz'), "unknown unit 'GHz'"),
    (dict(memory_mb='20ms'), "unknown unit 'ms'"),
    (dict(memory_mb='-5%'), 'finite percentage >= 0'),
    (dict(memory_mb=[1]), 'memory_mb must be a number'),
    (dict(mem=12), 'unknown key'),
    ('memory=1,memory=2', 'twice'),
    ('memory12', 'expected key=value'),
    ('', 'empty'),
    (12.5, 'must be a dict or a string'),
])
def test_rejected_budgets_name_the_problem_and_the_fix(given, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_budget(given, where='the budget')
    text = str(error.value)
    assert text.startswith('the budget') and ("'60%'" in text or 'latency_ms' in text)


def test_a_huge_wrong_value_is_not_echoed_whole():
    with pytest.raises(ValueError) as error:
        parse_budget(dict(memory_mb='x' * 2 ** 21))
    assert len(str(error.value)) < 600 and '2097154 characters' in str(error.value)


def test_shares_resolve_against_the_full_model():
    budget = parse_budget('memory=60%,latency=25ms')
    assert is_relative(budget) and not is_relative(parse_budget('memory=6MB'))
    assert resolve_budget(budget, full_latency_ms=40.0, full_memory_mb=50.0) == \
        {'latency_ms': 25.0, 'memory_mb': pytest.approx(30.0)}
    with pytest.raises(ValueError, match='not profiled'):
        resolve_budget(parse_budget('latency=50%'), full_latency_ms=None, full_memory_mb=10.0)
    assert format_budget(budget) == 'latency<=25.00ms, memory<=60%'
    assert format_budget(parse_budget(None)) == 'unconstrained'


def test_the_cli_and_the_hook_read_budgets_with_the_same_parser():
    from mmlego.engine import OnlineScalingHook
    from .conftest import load_tool
    tool = load_tool('test')
    assert tool.parse_budget_arg('memory=60%,latency=30ms') == {'memory_mb': '60%', 'latency_ms': 30.0}
    hook = OnlineScalingHook(budget='memory=60%,latency=30ms')
    assert hook._source.fixed == parse_budget('memory=60%,latency=30ms')
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match='--budget: unknown unit'):
        tool.parse_budget_arg('memory=1parsec')
