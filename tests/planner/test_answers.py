"""Answer cleaning: prompt scaffolding leaked by a small model never reaches the user."""

from __future__ import annotations

import pytest

from planner.answers import EMBEDDED_STOP, clean_answer, is_clean_answer

GOAL = "Plan a 3-day trip to Lisbon"


class TestStrayMarkup:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("Paris is the capital.</result>", "Paris is the capital."),
            ('<result id="t1" task="Find the capital">\nParis\n</result>', "Paris"),
            ("Day 1: Alfama <\\/result>", "Day 1: Alfama"),
            ("<|im_start|>assistant\nVisit Belém.<|im_end|>", "Visit Belém."),
            ("Visit Sintra.\n</result", "Visit Sintra."),
        ],
    )
    def test_tags_and_template_tokens_go(self, raw: str, expected: str) -> None:
        assert clean_answer(raw) == expected


class TestEmptyLeadIns:
    @pytest.mark.parametrize("raw", ["The final answer is:\n</result>", "The final answer is:", "Answer:",
                                     "**Final answer:**", "Final answer -", "  \n "])
    def test_a_lead_in_with_nothing_after_is_no_answer(self, raw: str) -> None:
        assert clean_answer(raw) == ""
        assert not is_clean_answer(clean_answer(raw))

    def test_a_lead_in_followed_by_the_answer_is_kept(self) -> None:
        assert clean_answer("The final answer is: 42") == "The final answer is: 42"
        assert clean_answer("The final answer is:\n\nGo by tram.") == "The final answer is:\n\nGo by tram."

    def test_words_that_merely_start_like_a_lead_in_are_kept(self) -> None:
        assert clean_answer("The result is important because prices rise.") == (
            "The result is important because prices rise."
        )


class TestPromptEcho:
    def test_echoed_prompt_lines_go(self) -> None:
        raw = f"Goal: {GOAL}\n\n## Final answer\nDay 1: Alfama. Day 2: Belém. Day 3: Sintra."
        assert clean_answer(raw, goal=GOAL) == "Day 1: Alfama. Day 2: Belém. Day 3: Sintra."

    def test_a_bare_echo_of_the_goal_goes(self) -> None:
        assert clean_answer(f"{GOAL}.\nBook a hotel in Baixa.", goal=GOAL) == "Book a hotel in Baixa."
        assert clean_answer(GOAL, goal=GOAL) == ""

    def test_task_heading_echo_goes(self) -> None:
        assert clean_answer("## Your task (id: t2)\nCompare fares.") == "Compare fares."

    def test_markdown_of_the_answer_is_kept(self) -> None:
        raw = "## Itinerary\n- Day 1: Alfama\n- Day 2: Belém"
        assert clean_answer(raw) == raw

    def test_blank_runs_collapse(self) -> None:
        assert clean_answer("a\n\n\n\n\nb") == "a\n\nb"


class TestIsClean:
    def test_clean_and_not(self) -> None:
        assert is_clean_answer("Paris.")
        assert not is_clean_answer("")
        assert not is_clean_answer("Paris</result>")
        assert not is_clean_answer("<|im_end|>")

    def test_cleaning_always_gives_a_clean_or_empty_answer(self) -> None:
        for raw in ["x</result>", "<result id='a'>y</result>", "<|im_start|>z", "</s>w<s>"]:
            cleaned = clean_answer(raw)
            assert cleaned == "" or is_clean_answer(cleaned), raw

    def test_stop_sequences_cover_the_tags(self) -> None:
        assert "</result" in EMBEDDED_STOP and "<result" in EMBEDDED_STOP
