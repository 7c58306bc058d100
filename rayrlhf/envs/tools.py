"""Tool calls in a model's turn, and the tools: a calculator (in process, a safe arithmetic
evaluator) and Python (in a sandboxed subprocess).

A parser turns a turn's text into the tool calls it makes; environments name theirs
(:data:`PARSERS`). ``tag``: ``<NAME>ARGUMENT</NAME>`` for each known tool name, the form small
models learn fastest; ``json``: ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, the
form chat templates with tool support use.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ToolCall:
    """One call: the tool's name and its argument text (``error`` when it could not be read)."""

    name: str
    argument: str
    error: str | None = None


def parse_tags(text: str, names: list[str]) -> list[ToolCall]:
    """``<NAME>ARGUMENT</NAME>`` calls of the tools ``names``, in order of appearance."""
    pattern = "|".join(re.escape(n) for n in names)
    found = re.finditer(rf"<({pattern})>(.*?)</\1>", text, flags=re.DOTALL)
    return [ToolCall(m.group(1), m.group(2).strip()) for m in found]


def parse_json_calls(text: str, names: list[str]) -> list[ToolCall]:
    """``<tool_call>{"name": NAME, "arguments": ARG}</tool_call>`` calls (ARG a string or an
    object, passed on as JSON); a call that is not such JSON is an error call."""
    calls = []
    for m in re.finditer(r"<tool_call>(.*?)</tool_call>", text, flags=re.DOTALL):
        try:
            body = json.loads(m.group(1))
            name, arg = body["name"], body.get("arguments", "")
        except (ValueError, KeyError, TypeError) as err:
            calls.append(ToolCall("?", m.group(1).strip(), f"unreadable tool call: {err}"))
            continue
        arg = arg if isinstance(arg, str) else json.dumps(arg)
        error = None if name in names else f"unknown tool {name!r}"
        calls.append(ToolCall(str(name), arg, error))
    return calls


PARSERS: dict[str, Callable[[str, list[str]], list[ToolCall]]] = {
    "tag": parse_tags,
    "json": parse_json_calls,
}

_OPS: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def calculate(expression: str) -> str:
    """Evaluate arithmetic (numbers, + - * / // % **, parentheses) without ``eval``: the
    result's text, an integer where it is one. ValueError on anything else, or a power or a
    number too large to be arithmetic a word problem needs."""

    def value(node: ast.AST) -> float | int:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError(f"not arithmetic: {ast.dump(node)[:40]}")

    text = expression.replace(",", "").replace("×", "*").replace("÷", "/").strip()
    if not text or len(text) > 200:
        raise ValueError("empty or over-long expression")
    try:
        result = value(ast.parse(text, mode="eval").body)
    except (SyntaxError, ZeroDivisionError, OverflowError) as err:
        raise ValueError(str(err) or type(err).__name__) from None
    if isinstance(result, float) and result.is_integer() and abs(result) < 1e15:
        result = int(result)
    if abs(result) > 1e18:
        raise ValueError("result too large")
    return str(round(result, 6) if isinstance(result, float) else result)
