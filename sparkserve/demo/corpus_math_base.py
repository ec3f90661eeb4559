"""Building blocks of the math templates: word lists and `Problem`, which draws numbers and records
solution steps in the one style every template shares."""

from __future__ import annotations

import random

NAMES = (
    "Ava", "Ben", "Chloe", "Daniel", "Emma", "Finn", "Grace", "Henry", "Isla", "Jack", "Kai", "Lily",
    "Mason", "Nora", "Oliver", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wes", "Yuki",
    "Zoe", "Leo", "Maya", "Omar", "Ivy", "Noah", "Ella", "Lucas", "Amir", "Sofia", "Hugo", "Nina",
    "Ravi", "Mila", "Theo", "Aisha", "Carlos", "Hana", "Jonas", "Lena", "Marco", "Ines", "Tomas", "Wen",
)
SMALL_THINGS = (
    "apples", "marbles", "stickers", "pencils", "cards", "shells", "stamps", "coins", "beads", "buttons",
    "crayons", "erasers", "books", "cookies", "oranges", "balloons", "toy cars", "seashells", "candies",
    "blocks", "feathers", "rocks", "ribbons", "postcards", "lemons", "peaches", "muffins", "bottle caps",
)
CONTAINERS = (("box", "boxes"), ("bag", "bags"), ("basket", "baskets"), ("jar", "jars"),
              ("crate", "crates"), ("pack", "packs"), ("tray", "trays"), ("bucket", "buckets"))
SHOP_ITEMS = (
    ("notebook", "notebooks"), ("pen", "pens"), ("sandwich", "sandwiches"), ("ticket", "tickets"),
    ("toy", "toys"), ("plant", "plants"), ("mug", "mugs"), ("kite", "kites"), ("puzzle", "puzzles"),
    ("lamp", "lamps"), ("ball", "balls"), ("hat", "hats"), ("scarf", "scarves"), ("cake", "cakes"),
)


class Problem:
    """Draws numbers and names for one problem and records its solution steps."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lines: list[str] = []
        self.answer: int | None = None

    def name(self) -> str:
        return self.rng.choice(NAMES)

    def names(self, k: int) -> list[str]:
        return self.rng.sample(NAMES, k)

    def thing(self) -> str:
        return self.rng.choice(SMALL_THINGS)

    def pick(self, seq):
        return self.rng.choice(seq)

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def step(self, text: str, a: int, op: str, b: int) -> int:
        """Record `text, so a op b = r.` as the next step and return r (an exact integer)."""
        if op == "+":
            r = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            r = a * b
        elif op == "/":
            assert b != 0 and a % b == 0, (a, b)
            r = a // b
        else:
            raise ValueError(op)
        assert r >= 0, (text, a, op, b)
        self.lines.append(f"Step {len(self.lines) + 1}: {text[:1].upper()}{text[1:]}, so {a} {op} {b} = {r}.")
        self.answer = r
        return r

    def solution(self) -> str:
        return "\n".join(self.lines) + f"\nThe answer is \\boxed{{{self.answer}}}."
