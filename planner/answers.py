"""Cleaning a model's answer text before anyone reads it or builds on it.

Small models (the embedded SmolLM2-135M) leak the scaffolding of their prompt
into their answers: a closing `</result>` copied from the data blocks, chat
template tokens, the prompt's own headings ("## Final answer", "Goal: ..."),
or a lead-in such as "The final answer is:" with nothing after it. Nothing
here calls a model or knows about Prefect: `clean_answer` is a pure function of
the text (and, optionally, the goal it answers), so it is unit-tested alone.

`is_clean_answer` is what the first-answer benchmark counts: a non-empty text
free of markup.
"""

from __future__ import annotations

import re

__all__ = ["EMBEDDED_STOP", "clean_answer", "is_clean_answer"]

# Stop sequences for the embedded model's free-text calls (nodes, synthesis): it
# tends to open another data block or prompt heading once it has said its piece.
EMBEDDED_STOP: tuple[str, ...] = ("<result", "</result", "<|im_start|>", "<|im_end|>", "\n## ", "\nGoal:")

# Tags of our prompts (<result ...>, </result>, the escaped <\/result>) and chat-template tokens.
_TAGS = re.compile(
    r"<\\?/?\s*result\b[^>\n]*>?"  # <result id=.. task=..>, </result>, <\/result>, a cut-off "</result"
    r"|<\|[a-z_]+\|>"  # <|im_start|>, <|im_end|>, <|endoftext|>
    r"|</?s>",  # sentencepiece BOS/EOS spelled out
    re.IGNORECASE,
)
_ROLE_LINE = re.compile(r"^\s*(assistant|user|system)\s*$", re.IGNORECASE | re.MULTILINE)
# Headings and labels the prompts use: an echo of them is not an answer.
_PROMPT_LINE = re.compile(
    r"^\s*(#+\s*(final answer|your task\b.*|your decision)\s*:?"
    r"|results of the tasks this one depends on:?"
    r"|goal:.*)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
# A lead-in that promises an answer; dropped when nothing follows it.
_DANGLING_LEAD_IN = re.compile(
    r"(?:^|\n)\s*(?:\*\*)?(?:so,?\s+)?(?:the\s+)?(?:final\s+)?(?:answer|result)(?:\s+is)?\s*(?:\*\*)?\s*[:\-]?\s*(?:\*\*)?\s*$",
    re.IGNORECASE,
)
_BLANK_RUNS = re.compile(r"\n\s*\n(\s*\n)+")
_MARKUP = re.compile(r"<\\?/?\s*result\b|<\|[a-z_]+\|>|</?s>", re.IGNORECASE)


def clean_answer(text: str, *, goal: str | None = None) -> str:
    """`text` without prompt scaffolding; "" when nothing of an answer is left.

    Removes our prompt's tags (`<result ...>`, `</result>`), chat-template tokens,
    echoed prompt lines ("Goal: ...", "## Final answer", "## Your task (id: t1)"),
    a bare echo of `goal`, and a trailing "The final answer is:" with nothing after it.
    Everything else, including markdown the model chose to write, is kept.
    """
    cleaned = _TAGS.sub("", text)
    cleaned = _ROLE_LINE.sub("", cleaned)
    cleaned = _PROMPT_LINE.sub("", cleaned)
    if goal:
        bare_goal = " ".join(goal.split()).rstrip(".?! ").lower()
        lines = [line for line in cleaned.split("\n")
                 if " ".join(line.split()).rstrip(".?! ").lower() != bare_goal]
        cleaned = "\n".join(lines)
    previous = None
    while previous != cleaned:  # "Answer:\nThe final answer is:" peels off line by line
        previous = cleaned
        cleaned = _DANGLING_LEAD_IN.sub("", cleaned.rstrip())
    cleaned = _BLANK_RUNS.sub("\n\n", cleaned)
    return cleaned.strip()


def is_clean_answer(text: str) -> bool:
    """A non-empty answer with no prompt tags or template tokens left in it."""
    return bool(text.strip()) and _MARKUP.search(text) is None
