"""A fast heuristic estimate of how hard a chat request is, for the complexity router.

`score(request)` reads an OpenAI chat request and returns a `Complexity`: a `value` in
[0, 1] and the `reasons` behind it. It looks at the last user message (text parts only),
lower-cased; only its first 6,000 and last 2,000 characters are scanned for cues, so a call
takes tens of microseconds for a short prompt and about a millisecond for a huge one.
Words are the scanned text with ASCII punctuation turned into spaces, split on whitespace
(a message over 8,000 characters is taken as 6 characters a word). English cues only.
The value is the sum below, clamped to [0, 1]:

- base 0.25: an ordinary request with no signal either way (it lands on "simple");
- length of the last user message: +0.25 x (words - 30) / 370, from 0 at 30 words to
  +0.25 at 400 words and beyond;
- the rest of the conversation: +0.1 x (its characters / 6) / 3,000, at most +0.1; and
  +0.1 when an earlier message holds a fenced code block (a follow-up in a coding thread
  stays a coding task);
- cues in the last user message, each distinct cue once, together at most +0.6 (the word
  and phrase lists are `_CUES`): proof cues (prove, proof, derive, theorem, lemma,
  rigorous, formally, "by induction") +0.25 each; "step by step" +0.2; design and systems
  cues (design, architecture, trade-offs, optimize, algorithm, complexity or O(...),
  scalable, distributed, consistency, concurrency, latency, root cause) +0.2 each;
  analysis cues (analyze, evaluate, compare, critique, investigate, strategy, generalize)
  +0.15 each; task cues (explain, why, "how does", implement, debug, refactor, "write a
  ... function/class/script/query/test", plan, outline, itinerary, runbook) +0.1 each;
- structure, together at most +0.35: each question mark past the first +0.05 (at most
  +0.15); two or more list items (lines starting `1.`, `1)`, `-`, `*` or a bullet) +0.05
  each (at most +0.15); constraint words (must, must not, should, at least, at most,
  no more than, without, ensure, requirement(s), constraint(s)) +0.05 each distinct (at
  most +0.15); math +0.15 (`$...$`, a LaTeX command such as `\frac`, a symbol from the
  Unicode mathematical-operators block, a power such as `x^2`, or an `=` with a number,
  a one-letter variable or `)` on its left); code +0.15 (a fenced block, a line starting
  with def, class, import, function, const, let, #include, public, fn, select or return,
  or a line ending in `;` or `{`);
- tools offered (`tools` or `functions` in the request): +0.15;
- simple cues, together at most -0.3: a greeting or thanks opening a message of under 8
  words -0.25; translate, rephrase, paraphrase, reword, typo, spell-check, capitalize
  -0.15; summarize in a message of under 60 words ("summarize this sentence") -0.15; a
  short factual question (under 12 words, one question mark, opening with what, who,
  when, where, which, how many/much/old/far/long, is, are, does or did) -0.15, unless
  tools are offered (the answer may need a call); "one word", "yes or no", "briefly",
  "in one sentence", "short answer", "tl;dr" -0.1.

Read as buckets (`Complexity.bucket`): below 0.3 simple, 0.3 to 0.8 medium, above 0.8
complex.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Literal

SIMPLE_BELOW = 0.3
COMPLEX_ABOVE = 0.8

_BASE = 0.25
_SCAN_HEAD = 6000
_SCAN_TAIL = 2000
_CUE_CAP = 0.6
_STRUCTURE_CAP = 0.35
_SIMPLE_CAP = 0.3

# label, weight, whole words, phrases (found anywhere in the lower-cased text).
# fmt: off
_CUES: list[tuple[str, float, tuple[str, ...], tuple[str, ...]]] = [
    ("prove", 0.25, ("prove", "proves", "proving", "proof", "proofs"), ()),
    ("derive", 0.25, ("derive", "derives", "deriving", "derivation"), ()),
    ("theorem", 0.25, ("theorem", "theorems", "lemma", "lemmas", "formally"), ("by induction",)),
    ("rigorous", 0.25, ("rigor", "rigour", "rigorous", "rigorously"), ()),
    ("step by step", 0.2, (), ("step by step", "step-by-step")),
    ("design", 0.2, ("design", "designs", "designing"), ()),
    ("architecture", 0.2, ("architecture", "architectures", "architectural", "architecting"), ()),
    ("trade-offs", 0.2, ("tradeoff", "tradeoffs"), ("trade-off", "trade off")),
    ("optimize", 0.2, ("optimize", "optimise", "optimizes", "optimises", "optimizing",
                       "optimising", "optimization", "optimisation"), ()),
    ("algorithm", 0.2, ("algorithm", "algorithms", "algorithmic"), ()),
    ("complexity", 0.2, ("complexity",), ("big-o", "big o notation")),
    ("scalability", 0.2, ("scalable", "scalability"), ("scale out", "scaling to")),
    ("distributed", 0.2, ("distributed",), ("multi-region", "multi region", "fault-toleran",
                                           "fault toleran")),
    ("consistency", 0.2, ("consistency", "consensus", "linearizable", "linearizability",
                          "replication", "partition", "partitions", "sharding"), ()),
    ("concurrency", 0.2, ("concurrent", "concurrency", "deadlock", "deadlocks"),
     ("race condition", "lock-free", "lock free")),
    ("latency", 0.2, ("latency", "throughput", "p95", "p99", "p999"), ()),
    ("root cause", 0.2, (), ("root cause", "root-cause")),
    ("analyze", 0.15, ("analyze", "analyse", "analyzes", "analyses", "analysis", "analyzing",
                       "analysing"), ()),
    ("evaluate", 0.15, ("evaluate", "evaluates", "evaluating", "evaluation", "assess",
                        "assesses", "assessing", "assessment"), ()),
    ("compare", 0.15, ("compare", "compares", "comparing", "comparison", "contrast"), ()),
    ("critique", 0.15, ("critique", "critiques", "critiquing", "criticize", "criticise"), ()),
    ("investigate", 0.15, ("investigate", "investigates", "investigating", "investigation",
                           "diagnose", "diagnoses", "diagnosing", "diagnosis"), ()),
    ("strategy", 0.15, ("strategy", "strategies", "strategic"), ()),
    ("generalize", 0.15, ("generalize", "generalise", "generalizes", "generalizing",
                          "generalization", "generalisation"), ()),
    ("explain", 0.1, ("explain", "explains", "explaining", "explanation", "why"),
     ("how does ", "how do ")),
    ("implement", 0.1, ("implement", "implements", "implementing", "implementation"), ()),
    ("debug", 0.1, ("debug", "debugging", "traceback", "exception", "stacktrace"),
     ("stack trace",)),
    ("refactor", 0.1, ("refactor", "refactors", "refactoring", "rewrite"), ()),
    ("code task", 0.1, (), ()),  # _CODE_TASK below
    ("plan", 0.1, ("plan", "plans", "planning", "outline", "itinerary", "roadmap", "runbook"),
     ()),
]
# fmt: on
_CUE_BY_WORD = {word: index for index, cue in enumerate(_CUES) for word in cue[2]}
_CUE_PHRASES = [(phrase, index) for index, cue in enumerate(_CUES) for phrase in cue[3]]
_COMPLEXITY_CUE = next(i for i, cue in enumerate(_CUES) if cue[0] == "complexity")
_CODE_TASK_CUE = next(i for i, cue in enumerate(_CUES) if cue[0] == "code task")
_BIG_O = re.compile(r"\bo\([^)]{1,12}\)")
_CODE_TASK = re.compile(
    r"\b(?:write|create|build) (?:an? |the )?(?:[a-z]+ ){0,2}"
    r"(?:function|class|script|program|query|regex|test|api|endpoint|module)\b"
)
_CODE_TASK_VERBS = frozenset({"write", "create", "build"})

_PUNCTUATION_TO_SPACE = str.maketrans(dict.fromkeys(string.punctuation, " "))
_LIST_ITEM = re.compile(r"^[ \t]*(?:\d{1,2}[.)]|[-*\u2022])[ \t]+\S", re.MULTILINE)
_CONSTRAINT_WORDS = frozenset(
    {"must", "should", "without", "ensure", "requirement", "requirements", "constraint",
     "constraints"}
)  # fmt: skip
_CONSTRAINT_PHRASES = ("must not", "at least", "at most", "no more than")
# Each pattern starts with a literal character, which lets `re` skip ahead quickly.
_INLINE_MATH = re.compile(r"\$[^$\n]{1,200}\$")
_LATEX = re.compile(r"\\(?:frac|int|sum|sqrt|lim|prod|begin|mathbb|hat|partial)\b")
_MATH_SYMBOL = re.compile(r"[\u2200-\u22ff]")  # the Unicode block of mathematical operators
_POWER = re.compile(r"\^ ?[\d({a-z]")
_EQUALS = re.compile(r"= ?[-\d(a-z]")
_CODE_LINE = re.compile(
    r"\n[ \t]*(?:def |class |import |from \w+ import|function |const |let |#include"
    r"|public |fn |select |return\b)"
)
_GREETING = re.compile(
    r"\W*(?:hi|hello|hey|hiya|yo|good (?:morning|afternoon|evening)|thanks|thank you"
    r"|thx|cheers|bye|goodbye)\b"
)
_LIGHT_EDIT_WORDS = frozenset(
    {"translate", "translation", "rephrase", "paraphrase", "reword", "typo", "typos",
     "spellcheck", "capitalize", "capitalise"}
)  # fmt: skip
_LIGHT_EDIT_PHRASES = ("spell-check", "spell check", "correct the spelling")
_SUMMARIZE_WORDS = frozenset({"summarize", "summarise", "tldr"})
_FACTUAL = re.compile(
    r"\W*(?:what(?:'s| is| are| was| were)?|who|when|where|which"
    r"|how (?:many|much|old|far|long)|is|are|does|did)\b"
)
_BRIEF_PHRASES = ("one word", "yes or no", "briefly", "in one sentence", "in a sentence",
                  "short answer", "tl;dr")  # fmt: skip


@dataclass(slots=True)
class Complexity:
    value: float
    reasons: list[str] = field(default_factory=list)

    @property
    def bucket(self) -> Literal["simple", "medium", "complex"]:
        if self.value < SIMPLE_BELOW:
            return "simple"
        return "complex" if self.value > COMPLEX_ABOVE else "medium"


def score(request: dict[str, Any]) -> Complexity:
    """How hard `request` (an OpenAI chat request) looks, in [0, 1], with the reasons."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        messages = []
    last_index = _last_user_index(messages)
    text = _text(messages[last_index].get("content")) if last_index is not None else ""
    if len(text) > _SCAN_HEAD + _SCAN_TAIL:
        text_scanned = text[:_SCAN_HEAD] + "\n" + text[-_SCAN_TAIL:]
    else:
        text_scanned = text
    low = text_scanned.lower()
    tokens = low.translate(_PUNCTUATION_TO_SPACE).split()
    vocabulary = set(tokens)
    reasons: list[str] = []
    value = _BASE

    words = len(tokens) if text_scanned is text else len(text) // 6
    if words > 30:
        points = 0.25 * min(1.0, (words - 30) / 370)
        value += points
        reasons.append(f"long message ({words} words) +{points:.2f}")

    earlier = 0
    earlier_code = False
    for index, message in enumerate(messages):
        if index == last_index or not isinstance(message, dict):
            continue
        content = _text(message.get("content"))
        earlier += len(content) // 6
        earlier_code = earlier_code or "```" in content
    if earlier:
        points = min(0.1, 0.1 * earlier / 3000)
        value += points
        reasons.append(f"conversation (~{earlier} earlier words) +{points:.2f}")
    if earlier_code:
        value += 0.1
        reasons.append("code earlier in the conversation +0.10")

    seen = _cues(low, vocabulary)
    if seen:
        cue_points = min(_CUE_CAP, sum(_CUES[i][1] for i in seen))
        value += cue_points
        labels = ", ".join(_CUES[i][0] for i in sorted(seen))
        reasons.append(f"cues: {labels} +{cue_points:.2f}")

    structure, found = _structure(low, vocabulary)
    if structure:
        value += structure
        reasons.append(f"{', '.join(found)} +{structure:.2f}")

    tools = request.get("tools") or request.get("functions")
    if tools:
        value += 0.15
        count = len(tools) if isinstance(tools, list) else 1
        reasons.append(f"{count} tool(s) offered +0.15")

    simple, found = _simple(low, vocabulary, words=words, tools=bool(tools))
    if simple:
        value -= simple
        reasons.append(f"simple: {', '.join(found)} -{simple:.2f}")

    return Complexity(value=round(min(1.0, max(0.0, value)), 4), reasons=reasons)


def _cues(low: str, vocabulary: set[str]) -> set[int]:
    seen = {_CUE_BY_WORD[word] for word in vocabulary.intersection(_CUE_BY_WORD)}
    seen.update(index for phrase, index in _CUE_PHRASES if phrase in low)
    if "o(" in low and _BIG_O.search(low):
        seen.add(_COMPLEXITY_CUE)
    if not _CODE_TASK_VERBS.isdisjoint(vocabulary) and _CODE_TASK.search(low):
        seen.add(_CODE_TASK_CUE)
    return seen


def _structure(text: str, vocabulary: set[str]) -> tuple[float, list[str]]:
    points = 0.0
    found: list[str] = []
    questions = text.count("?")
    if questions > 1:
        points += min(0.15, 0.05 * (questions - 1))
        found.append(f"{questions} questions")
    items = len(_LIST_ITEM.findall(text))
    if items >= 2:
        points += min(0.15, 0.05 * items)
        found.append(f"{items} list items")
    constraints = len(vocabulary & _CONSTRAINT_WORDS) + sum(
        phrase in text for phrase in _CONSTRAINT_PHRASES
    )
    if constraints:
        points += min(0.15, 0.05 * constraints)
        found.append("constraints")
    if _has_math(text):
        points += 0.15
        found.append("math")
    if _has_code(text):
        points += 0.15
        found.append("code")
    return min(_STRUCTURE_CAP, points), found


def _has_math(text: str) -> bool:
    if _MATH_SYMBOL.search(text) or _INLINE_MATH.search(text) or _LATEX.search(text):
        return True
    for match in _POWER.finditer(text):
        before = text[match.start() - 1 : match.start()]
        if before and (before.isalnum() or before in ")}"):
            return True
    return any(_is_equation(text, match.start()) for match in _EQUALS.finditer(text))


def _is_equation(text: str, at: int) -> bool:
    """`=` at `at` with a number, a one-letter variable or `)` on its left: `x = 3y`."""
    if text[at - 1 : at] in ("=", "!", "<", ">"):
        return False
    left = text[max(0, at - 24) : at].rstrip(" ")
    if not left:
        return False
    last = left[-1]
    if last == ")" or last.isdigit():
        return True
    return last.isalpha() and (len(left) == 1 or not (left[-2].isalnum() or left[-2] == "_"))


def _has_code(text: str) -> bool:
    if "```" in text or _CODE_LINE.search("\n" + text):
        return True
    return any(line.rstrip().endswith((";", "{")) for line in text.splitlines())


def _simple(text: str, vocabulary: set[str], *, words: int, tools: bool) -> tuple[float, list[str]]:
    points = 0.0
    found: list[str] = []
    if words < 8 and _GREETING.match(text):
        points += 0.25
        found.append("greeting")
    if not vocabulary.isdisjoint(_LIGHT_EDIT_WORDS) or any(
        phrase in text for phrase in _LIGHT_EDIT_PHRASES
    ):
        points += 0.15
        found.append("light edit")
    if words < 60 and not vocabulary.isdisjoint(_SUMMARIZE_WORDS):
        points += 0.15
        found.append("short summary")
    if not tools and words < 12 and text.count("?") == 1 and _FACTUAL.match(text):
        points += 0.15
        found.append("short factual question")
    if any(phrase in text for phrase in _BRIEF_PHRASES):
        points += 0.1
        found.append("brief answer")
    return min(_SIMPLE_CAP, points), found


def _last_user_index(messages: list[Any]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "user":
            return index
    return len(messages) - 1 if messages and isinstance(messages[-1], dict) else None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
