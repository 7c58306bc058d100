"""Tools: calls parsed from a turn, the calculator (arithmetic only, never eval), the calculator
environment, and the sandbox that runs code with a time limit, a memory limit and no network."""

from __future__ import annotations

import socket

import pytest

from rayrlhf.envs import load_environment
from rayrlhf.envs.calculator import CalculatorEnv
from rayrlhf.envs.sandbox import run_python
from rayrlhf.envs.tools import ToolCall, calculate, parse_json_calls, parse_tags


def test_parsers_find_the_calls_of_known_tools():
    text = "so <calc>12 * 34</calc> and <other>x</other> then <calc>1+1</calc>"
    assert parse_tags(text, ["calc"]) == [ToolCall("calc", "12 * 34"), ToolCall("calc", "1+1")]
    calls = parse_json_calls(
        '<tool_call>{"name": "calc", "arguments": {"x": 1}}</tool_call>'
        "<tool_call>not json</tool_call>"
        '<tool_call>{"name": "rm", "arguments": "-rf"}</tool_call>',
        ["calc"],
    )
    assert calls[0] == ToolCall("calc", '{"x": 1}')
    assert calls[1].error.startswith("unreadable") and calls[2].error == "unknown tool 'rm'"


@pytest.mark.parametrize(
    ("expression", "result"),
    [("12 * 34", "408"), ("1,234 + 1", "1235"), ("7 / 2", "3.5"), ("(2+3)**2", "25"),
     ("-4 - 6", "-10"), ("10 / 4 * 2", "5")],
)  # fmt: skip
def test_the_calculator_does_arithmetic(expression, result):
    assert calculate(expression) == result


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('true')", "1/0", "2 ** 1000", "x + 1", "", "open('f')", "1e300**2"],
)
def test_the_calculator_refuses_everything_else(expression):
    with pytest.raises(ValueError):
        calculate(expression)


def test_the_calculator_environment_answers_a_call_and_ends_on_an_answer():
    env = load_environment("rayrlhf.envs.calculator:CalculatorEnv")()
    assert isinstance(env, CalculatorEnv)
    first = env.reset({"prompt": "What is 12 times 34?", "answer": "408"}, "0-0")
    assert first.startswith("What is 12 times 34?\n") and "<calc>" in first
    step = env.step("I compute <calc>12*34</calc>", [])
    assert (step.observation, step.tool_calls, step.tool_errors, step.done) == (
        " = 408\n",
        1,
        0,
        False,
    )
    bad = env.step("<calc>12 apples</calc>", [])
    assert bad.observation.startswith(" = error:") and bad.tool_errors == 1 and not bad.done
    assert env.step("Answer: 408", []).done
    with pytest.raises(ValueError, match="not a class with reset and step"):
        load_environment("rayrlhf.envs.tools:calculate")


def test_code_runs_with_its_output_and_within_its_limits():
    assert run_python("print(6 * 7)").stdout == "42\n"
    assert run_python("while True: pass", timeout_s=1.0).error == "timed out after 1.0 s"
    big = run_python("x = bytearray(400 * 2**20)", memory_mb=128)
    assert big.error == "out of memory (limit 128 MiB)"
    assert run_python("raise SystemExit(3)").error == "exit code 3"


def test_code_reaches_no_network():
    with socket.socket() as server:  # a listener on this machine's loopback
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)\nprint('in')"
        out = run_python(code)
    assert out.stdout == "" and out.error == "exit code 1" and "OSError" in out.stderr
    assert out.isolation in ("namespace", "python")
