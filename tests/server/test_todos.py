"""TODO detection and the task text of a selection (server/todos.py)."""

from __future__ import annotations

import pytest
from handoff.server.todos import find_todos, task_from_comments, todo_at, todos_in


@pytest.mark.parametrize(
    "line, tag, text",
    [
        ("# TODO: add validation", "TODO", "add validation"),
        ("    x = 1  # FIXME handle None", "FIXME", "handle None"),
        ("// TODO - use the cache", "TODO", "use the cache"),
        ("/// TODO document this", "TODO", "document this"),
        ("int i = 0; // XXX overflow", "XXX", "overflow"),
        ("-- TODO: index this column", "TODO", "index this column"),
        ("; TODO rewrite in elisp", "TODO", "rewrite in elisp"),
        (";; FIXME: slow", "FIXME", "slow"),
        ("/* TODO: free the buffer */", "TODO", "free the buffer"),
        ("<!-- TODO: add alt text -->", "TODO", "add alt text"),
        ("x = f()  /* XXX: racy */ + 1", "XXX", "racy"),
        ("#TODO no space", "TODO", "no space"),
        ("#include <x.h> // TODO drop this", "TODO", "drop this"),
        ("i--; // TODO count up", "TODO", "count up"),
    ],
)
def test_markers_in_every_comment_syntax(line, tag, text):
    [todo] = find_todos(line)
    assert (todo.tag, todo.text, todo.line) == (tag, text, 0)
    assert line[todo.column :].startswith(tag)


@pytest.mark.parametrize(
    "text",
    [
        'msg = "# TODO: not a comment"',
        "s = '// FIXME nope'",
        "# this is not a TODO, just prose",
        "TODO: not in a comment",
        "url = 'http://x' # TODOS are words",
        "x = a--b",
        "# TODOLIST",
    ],
)
def test_not_markers(text):
    assert find_todos(text) == []


def test_agent_marker_and_owner():
    [a, b] = find_todos("# TODO(agent): write tests\n# TODO(bob): ask bob\n")
    assert a.for_agent and a.owner == "agent" and a.text == "write tests"
    assert not b.for_agent and b.owner == "bob"


def test_hanging_indent_continues_the_marker():
    text = (
        "def f():\n"
        "    # TODO(agent): validate the arguments\n"
        "    #   and raise ValueError on bad input\n"
        "    # unrelated comment\n"
        "    return 1\n"
    )
    [t] = find_todos(text)
    assert t.text == "validate the arguments and raise ValueError on bad input"
    assert (t.line, t.end_line) == (1, 2)
    assert todo_at(text, 2) == t and todo_at(text, 3) is None


def test_block_comments_across_lines():
    text = (
        "/*\n"
        " * Helpers.\n"
        " * TODO: cache the results\n"
        " *       of the lookup\n"
        " * FIXME: thread safety\n"
        " */\n"
        "int x; <!-- no -->\n"
        "<!--\n"
        "  XXX: outdated section\n"
        "-->\n"
    )
    todos = find_todos(text)
    assert [(t.tag, t.text, t.line) for t in todos] == [
        ("TODO", "cache the results of the lookup", 2),
        ("FIXME", "thread safety", 4),
        ("XXX", "outdated section", 8),
    ]


def test_crlf_and_cr_line_ends_count_like_lsp():
    text = "a = 1\r\n# TODO: one\rb = 2\n// TODO two"
    assert [(t.line, t.text) for t in find_todos(text)] == [(1, "one"), (3, "two")]


def test_todos_in_range():
    text = "# TODO: a\nx\n# TODO: b\ny\n# TODO: c\n"
    assert [t.text for t in todos_in(text, 1, 3)] == ["b"]


class TestTaskFromComments:
    def test_todo_in_range_wins(self):
        text = "# helper\ndef f():\n    # TODO: return 2\n    return 1\n"
        assert task_from_comments(text, 1, 3) == "return 2"

    def test_comments_inside_the_range(self):
        text = "def f():\n    # make this iterative\n    return f()\n"
        assert task_from_comments(text, 0, 2) == "make this iterative"

    def test_comment_block_above(self):
        text = "x = 1\n# Rewrite with a dict\n# lookup instead.\n\ndef f(k):\n    return k\n"
        assert task_from_comments(text, 4, 5) == "Rewrite with a dict\nlookup instead."

    def test_trailing_comment_of_code_above_is_not_the_task(self):
        text = "x = 1  # the answer\ndef f():\n    pass\n"
        assert task_from_comments(text, 1, 2) is None

    def test_nothing(self):
        assert task_from_comments("a = 1\nb = 2\n", 1, 1) is None
