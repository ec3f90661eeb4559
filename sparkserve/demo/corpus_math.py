"""Math domain: generated grade-school word problems with step-by-step worked solutions.

Every problem comes from one of the templates in `math_templates_*.py` (names, objects and numbers
drawn from a seeded `random.Random`). Solutions use one learnable style, one operation per line:

    Step 1: Mia starts with 12 apples and buys 7 more, so 12 + 7 = 19.
    Step 2: ...
    The answer is \\boxed{19}.

Operands stay small (mostly two-digit, products of a one-digit and a two-digit number, exact
divisions) so that a model of a few million parameters can learn to get most answers right.
"""

from __future__ import annotations

import random
from typing import Callable

from sparkserve.demo import math_templates_counting as counting
from sparkserve.demo import math_templates_measure as measure
from sparkserve.demo import math_templates_money as money
from sparkserve.demo.corpus_math_base import Problem
from sparkserve.demo.corpus_types import Example

MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."

_BY_NAME = {t.__name__: t for t in counting.TEMPLATES + measure.TEMPLATES + money.TEMPLATES}
# Generation cycles through templates in this order; changing it changes every corpus.
TEMPLATE_ORDER = (
    "buy_more",
    "give_away",
    "gain_then_lose",
    "boxes_total",
    "share_equally",
    "unit_price",
    "change_back",
    "wage_then_spend",
    "pages_left",
    "more_than_together",
    "twice_together",
    "bus_stops",
    "bake_and_eat",
    "garden_rows",
    "weekly_savings",
    "class_absent",
    "bags_then_share",
    "age_later",
    "rectangle_perimeter",
    "rectangle_area",
    "task_minutes",
    "shop_stock",
    "how_many_more",
    "half_then_buy",
    "teams_players",
    "parking_spots",
    "lose_find_share",
    "recipe_short",
    "two_legs_distance",
    "pencils_class",
    "temperature",
    "three_friends",
    "savings_goal",
    "tickets",
    "fish_tanks",
    "library_books",
    "average_score",
    "eggs_cartons",
    "trip_costs",
    "weekly_total",
    "stickers_pages",
    "fruit_stand",
    "shopping_change",
    "farm_legs",
)
TEMPLATES: tuple[Callable[[Problem], str], ...] = tuple(_BY_NAME[n] for n in TEMPLATE_ORDER)


def generate_math(num_examples: int, seed: int) -> list[Example]:
    """`num_examples` distinct problems (templates used round-robin in a seeded order)."""
    rng = random.Random(f"demo-math-{seed}")
    seen: set[str] = set()
    out: list[Example] = []
    attempts = 0
    while len(out) < num_examples:
        attempts += 1
        if attempts > 20 * num_examples + 1000:
            raise RuntimeError(f"math generator saturated at {len(out)} distinct problems")
        template = TEMPLATES[attempts % len(TEMPLATES)]
        prob = Problem(rng)
        question = template(prob)
        prompt = question + MATH_SUFFIX
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append(Example(domain="math", prompt=prompt, response=prob.solution(),
                           reference=str(prob.answer), source=template.__name__))
    return out
