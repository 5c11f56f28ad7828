"""Question text and answer extraction against lmms-eval's Video-MME conventions, written out by hand."""

import numpy as np
import pytest

from mminference.eval import MCQItem, TextPart, VideoPart, extract_answer, question_text

VIDEO = VideoPart(frames=np.zeros((2, 8, 8, 3), dtype=np.uint8))


def test_question_text_is_the_video_mme_prompt():
    item = MCQItem("1", "What colour is the car? ", ("Red", "Blue", "Green", "White"), "B", (VIDEO,))
    assert question_text(item) == (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only "
        "the letter (A, B, C, or D) of the correct option.\n"
        "What colour is the car?\n"
        "A. Red\nB. Blue\nC. Green\nD. White\n"
        "The best answer is:")


def test_question_text_follows_the_option_count_and_the_context():
    two = MCQItem("2", "Yes?", ("yes", "no"), "A", (VIDEO,))
    assert "(A or B) of the correct option" in question_text(two)
    five = MCQItem("5", "Which?", tuple("vwxyz"), "E", (VIDEO, TextPart("some text")))
    text = question_text(five)
    assert "(A, B, C, D, or E)" in text and "based on the video and the text." in text
    assert text.splitlines()[-2] == "E. z"


@pytest.mark.parametrize("reply, expected", [
    ("B", "B"),
    ("  C.", "C"),
    ("The best answer is: D", "D"),
    ("The best answer is D because the car is white.", "D"),
    ("Answer: C", "C"),            # not the A of "Answer"
    ("Best option: A", "A"),       # not the B of "Best"
    ("Best answer: C", "C"),
    ("The correct option is (B)", "B"),
    ("(A) Red", "A"),
    ("Because of the colour, D", "B"),  # the convention: first capital option letter after the prefixes
    ("I think it is the red one", None),
    ("", None),
    ("E", None),
])
def test_extract_answer(reply, expected):
    assert extract_answer(reply) == expected


def test_extract_answer_uses_the_items_letters():
    assert extract_answer("E.", "ABCDE") == "E"
    assert extract_answer("C", "AB") is None
    with pytest.raises(TypeError, match="reply must be a str"):
        extract_answer(None)
