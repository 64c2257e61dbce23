"""``numbarnn demo`` explains the course's rising loss and ends with a per-character loss (issue 12, item 11)."""
import contextlib
import io
import math
import re

from numbarnn.demo import run_demo


def test_demo_explains_its_loss_and_shows_it_fall_per_character():
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert run_demo(iterations=2001) == 0
    text = printed.getvalue()
    assert "5 x ln 27 = 16.5" in text and "climbs at first" in text
    per_char = float(re.search(r"loss per character over all names: ([0-9.]+)", text).group(1))
    assert per_char < math.log(27) - 0.8  # well below uniform guessing after 2,000 names
