"""Question text and answer extraction, following lmms-eval's Video-MME task: an instruction, the
question, one "X. option" line per option and "The best answer is:"; the answer is the first option
letter left in the reply after stripping the usual answer prefixes."""

from __future__ import annotations

import re
from typing import Optional

from .tasks import MCQItem, TextPart

POST_PROMPT = "The best answer is:"
ANSWER_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                   "The best option is", "The correct option is", "Best answer:", "Best option:", "Answer:",
                   "Option:")


def _letter_list(letters: str) -> str:
    """"A, B, C, or D" (two letters: "A or B")."""
    if len(letters) == 2:
        return f"{letters[0]} or {letters[1]}"
    return ", ".join(letters[:-1]) + f", or {letters[-1]}"


def instruction(item: MCQItem) -> str:
    """The Video-MME instruction, naming the item's letters (and the text when the context has some)."""
    source = "the video and the text" if any(isinstance(p, TextPart) for p in item.parts) else "the video"
    return (f"Select the best answer to the following multiple-choice question based on {source}. "
            f"Respond with only the letter ({_letter_list(item.letters)}) of the correct option.")


def question_text(item: MCQItem) -> str:
    """The text after the context: instruction, question, "A. ..." lines, "The best answer is:"."""
    options = [f"{letter}. {text}" for letter, text in zip(item.letters, item.options)]
    return "\n".join([instruction(item), item.question.strip(), *options, POST_PROMPT])


def extract_answer(reply: str, letters: str = "ABCD") -> Optional[str]:
    """The option letter a reply gives, or None.

    The prefixes in `ANSWER_PREFIXES` are removed first (their capitals would match: "Answer: C" must
    not give "A", "Best option: D" not "B"); the answer is then the first of `letters` (upper case)
    left anywhere in the reply, None when there is none."""
    if not isinstance(reply, str):
        raise TypeError(f"reply must be a str, got {type(reply).__name__}")
    text = reply.strip()
    for prefix in ANSWER_PREFIXES:
        text = text.replace(prefix, "")
    match = re.search(f"[{re.escape(letters)}]", text)
    return None if match is None else match.group(0)
