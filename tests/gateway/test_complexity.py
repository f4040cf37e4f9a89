"""The complexity scorer against a labelled set of requests written for this test."""

from __future__ import annotations

from typing import Any

import pytest

from apiary.gateway.complexity import score


def _ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
_OPS_TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("search_logs", "run_sql", "read_file")
]

_ARTICLE = " ".join(
    [
        "Remote work has changed how companies hire, where people live and how cities plan"
        " their transport."
    ]
    * 16
)
_SPEC = (
    "\n".join(
        f"{i}. The service must handle case {i} and log it without losing the request id."
        for i in range(1, 9)
    )
    + "\n"
    + ("Background: the current system is a monolith with a shared database. " * 40)
)

SIMPLE = [
    _ask("hi"),
    _ask("Hello! How are you today?"),
    _ask("Thanks, that's all."),
    _ask("Translate 'good morning' into Spanish."),
    _ask("Translate this to French: Where is the train station?"),
    _ask("What is the capital of Australia?"),
    _ask("Who wrote Pride and Prejudice?"),
    _ask("Summarize this sentence: The meeting has been moved from Tuesday to Thursday at 3pm."),
    _ask("How many legs does a spider have?"),
    _ask("Fix the typo: 'I recieved the package yesterday.'"),
    _ask("Tell me a joke about cats."),
    _ask("What's 15% of 80?"),
    _ask("Rephrase this more politely: send me the report now."),
    _ask("When did World War II end?"),
]

MEDIUM = [
    _ask("Explain the difference between TCP and UDP, with an example of when to use each."),
    _ask(
        "Write a Python function that checks whether a string is a palindrome, ignoring"
        " punctuation and case."
    ),
    _ask("Compare PostgreSQL and MySQL for a small web app."),
    _ask("Why does my React component re-render twice in development mode?"),
    _ask(f"Summarize the main arguments of this article in five bullet points:\n{_ARTICLE}"),
    _ask(
        "Write a SQL query that returns the top 5 customers by total order value in 2023,"
        " joining the orders and customers tables."
    ),
    _ask(
        "This throws a KeyError sometimes. Can you help me debug it?\n"
        "```python\ndef get(d, k):\n    return d[k]\n```"
    ),
    _ask("How does garbage collection work in Java? Explain the generational model."),
    {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "Write a function that sums a list of numbers."},
            {
                "role": "assistant",
                "content": "```python\ndef total(xs):\n    return sum(x for x in xs if x > 0)\n```",
            },
            {"role": "user", "content": "Can you make it handle negative numbers too?"},
        ],
    },
    _ask(
        "Refactor this JavaScript to use async/await instead of callbacks:\n"
        "```js\nfs.readFile(p, (err, data) => { if (err) throw err; use(data); });\n```"
    ),
    _ask("What's the weather in Paris tomorrow?", tools=[_WEATHER_TOOL]),
    _ask("Give me a 3-day itinerary for Rome with museums and food recommendations."),
]

COMPLEX = [
    _ask(
        "Prove that there are infinitely many primes of the form 4k+3. Give a rigorous,"
        " step-by-step proof."
    ),
    _ask(
        "Design a distributed rate limiter for a multi-region API gateway handling 1M requests"
        " per second. Discuss the architecture, analyze the trade-offs between token bucket and"
        " sliding window algorithms, and explain how you would keep counters consistent across"
        " regions."
    ),
    _ask(
        "Derive the closed-form solution for ordinary least squares, $\\hat\\beta ="
        " (X^TX)^{-1}X^Ty$, step by step, and prove it is the minimum-variance unbiased linear"
        " estimator under the Gauss-Markov assumptions."
    ),
    _ask(
        "Optimize this O(n^2) algorithm to O(n log n) and prove it is still correct:\n"
        "```python\ndef pairs(xs, t):\n"
        "    return [(a, b) for a in xs for b in xs if a + b == t]\n```"
    ),
    _ask(
        "I need an architecture for a multi-tenant SaaS billing system. Requirements:\n"
        "1. usage-based pricing\n2. invoices in 30 currencies\n3. must handle 10k tenants\n"
        "4. an audit log that cannot be altered\n"
        "Analyze the trade-offs of event sourcing versus a relational ledger and recommend a"
        " design."
    ),
    _ask(
        "Investigate why last night's ETL job failed, find the root cause in the logs, and"
        " propose a fix with a migration plan.",
        tools=_OPS_TOOLS,
    ),
    _ask(
        "Analyze the time and space complexity of the following recursive function, then"
        " rewrite it iteratively and prove the two versions are equivalent.\n"
        "```python\ndef f(n):\n    return n if n < 2 else f(n - 1) + f(n - 2)\n```"
    ),
    _ask(
        "Compare the consistency models of Spanner, DynamoDB and Cassandra. What guarantees"
        " does each give? How does each behave during network partitions? What latency does"
        " that cost? Which would you choose for a global payments ledger, and why?"
    ),
    _ask(f"Implement the following service.\n{_SPEC}"),
    _ask(
        "Step by step, work out the expected number of coin flips to get three heads in a row,"
        " then generalize to n heads and prove the formula by induction."
    ),
    _ask(
        "Evaluate three strategies for migrating a 5TB PostgreSQL database to a new region"
        " with under 5 minutes of downtime: logical replication, physical streaming and dual"
        " writes. Weigh consistency, rollback and cost, and recommend one with a step-by-step"
        " runbook."
    ),
    _ask(
        "Design a lock-free concurrent queue in C++ for multiple producers and consumers."
        " Explain how you avoid the ABA problem, and analyze its throughput under contention."
    ),
]


def test_the_labelled_set_is_big_enough() -> None:
    assert len(SIMPLE) + len(MEDIUM) + len(COMPLEX) >= 30


@pytest.mark.parametrize("request_", COMPLEX)
def test_complex_requests_score_above_0_8(request_: dict[str, Any]) -> None:
    result = score(request_)
    assert result.value > 0.8, result.reasons


@pytest.mark.parametrize("request_", SIMPLE)
def test_simple_requests_score_below_0_3(request_: dict[str, Any]) -> None:
    result = score(request_)
    assert result.value < 0.3, result.reasons


def test_three_way_bucketing_is_at_least_90_percent_accurate() -> None:
    labelled = (
        [(r, "simple") for r in SIMPLE]
        + [(r, "medium") for r in MEDIUM]
        + [(r, "complex") for r in COMPLEX]
    )
    wrong = [(r["messages"][-1]["content"][:60], want, score(r).bucket) for r, want in labelled]
    wrong = [w for w in wrong if w[1] != w[2]]
    accuracy = 1 - len(wrong) / len(labelled)
    assert accuracy >= 0.9, wrong


def test_value_is_within_bounds_and_explained() -> None:
    for request in SIMPLE + MEDIUM + COMPLEX:
        result = score(request)
        assert 0.0 <= result.value <= 1.0
    assert any("cues" in reason for reason in score(COMPLEX[0]).reasons)
    assert any("greeting" in reason for reason in score(SIMPLE[0]).reasons)


def test_reasoning_cues_raise_the_score() -> None:
    plain = score(_ask("Tell me about sorting lists in Python."))
    reasoned = score(
        _ask("Tell me about sorting lists in Python, and prove the algorithm is correct.")
    )
    assert reasoned.value > plain.value


def test_a_longer_message_never_scores_lower() -> None:
    sentence = "The quarterly report shows revenue grew in every region except the north. "
    values = [score(_ask("Explain this report: " + sentence * n)).value for n in (1, 5, 20, 60)]
    assert values == sorted(values)
    assert values[-1] > values[0]


def test_tools_raise_the_score() -> None:
    text = "Book a table for two at an Italian restaurant tonight."
    assert score(_ask(text, tools=[_WEATHER_TOOL])).value > score(_ask(text)).value


def test_a_greeting_lowers_the_score() -> None:
    assert score(_ask("Hello there")).value < score(_ask("Lists in Python")).value


def test_more_sub_questions_never_score_lower() -> None:
    one = score(_ask("How does DNS resolution work?"))
    three = score(
        _ask("How does DNS resolution work? What is cached where? What happens on a miss?")
    )
    assert three.value > one.value


def test_content_parts_and_odd_requests_are_handled() -> None:
    parts = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Prove the theorem step by step, rigorously."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                ],
            }
        ]
    }
    assert score(parts).value > 0.8
    assert 0.0 <= score({}).value < 0.3
    assert 0.0 <= score({"messages": "not a list"}).value < 0.3
