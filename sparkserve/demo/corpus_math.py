"""Math domain: generated grade-school word problems with step-by-step worked solutions.

Every problem comes from one of the templates below (names, objects and numbers drawn from a seeded
`random.Random`). Solutions use one learnable style, one arithmetic operation per line:

    Step 1: Mia starts with 12 apples and buys 7 more, so 12 + 7 = 19.
    Step 2: ...
    The answer is \\boxed{19}.

Operands stay small (mostly two-digit, products of a one-digit and a two-digit number, exact
divisions) so that a model of a few million parameters can learn to get most answers right.
"""

from __future__ import annotations

import random
from typing import Callable

from sparkserve.demo.corpus_types import Example

MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."

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
PLACES = ("library", "bakery", "farm", "school", "zoo", "museum", "market", "garden", "store", "park")


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


# --- templates: each draws its numbers, records its steps and returns the question text ----------

def buy_more(p: Problem) -> str:
    n, t, a, b = p.name(), p.thing(), p.int(10, 60), p.int(5, 39)
    p.step(f"{n} starts with {a} {t} and gets {b} more", a, "+", b)
    return f"{n} has {a} {t}. {n} gets {b} more {t}. How many {t} does {n} have now?"


def give_away(p: Problem) -> str:
    n, m, t = *p.names(2), p.thing()
    a = p.int(20, 90)
    b = p.int(3, a - 5)
    p.step(f"{n} starts with {a} {t} and gives {b} to {m}", a, "-", b)
    return f"{n} has {a} {t} and gives {b} of them to {m}. How many {t} does {n} have left?"


def gain_then_lose(p: Problem) -> str:
    n, t = p.name(), p.thing()
    a, b = p.int(10, 50), p.int(5, 40)
    c = p.int(2, a + b - 1)
    s = p.step(f"{n} has {a} {t} and finds {b} more", a, "+", b)
    p.step(f"then {n} loses {c} of the {s} {t}", s, "-", c)
    return (f"{n} had {a} {t}. {n} found {b} more {t} at the park, and later lost {c} of them. "
            f"How many {t} does {n} have now?")


def boxes_total(p: Problem) -> str:
    n, t = p.name(), p.thing()
    (box, boxes), k, per = p.pick(CONTAINERS), p.int(2, 9), p.int(4, 25)
    p.step(f"{k} {boxes} with {per} {t} in each {box} hold", k, "*", per)
    return f"{n} has {k} {boxes}. Each {box} holds {per} {t}. How many {t} does {n} have in all?"


def share_equally(p: Problem) -> str:
    n, t = p.name(), p.thing()
    k, each = p.int(2, 9), p.int(3, 15)
    total = k * each
    p.step(f"{total} {t} shared equally among {k} friends gives each friend", total, "/", k)
    return (f"{n} has {total} {t} and shares them equally among {k} friends. "
            f"How many {t} does each friend get?")


def unit_price(p: Problem) -> str:
    n, (item, items) = p.name(), p.pick(SHOP_ITEMS)
    k, price = p.int(2, 9), p.int(3, 25)
    p.step(f"{k} {items} at ${price} each cost", k, "*", price)
    return f"{n} buys {k} {items}. Each {item} costs ${price}. How many dollars does {n} spend?"


def change_back(p: Problem) -> str:
    n, (item, items) = p.name(), p.pick(SHOP_ITEMS)
    k, price = p.int(2, 6), p.int(3, 15)
    cost = k * price
    bill = p.pick([b for b in (20, 50, 100) if b >= cost] or [100])
    c = p.step(f"{k} {items} at ${price} each cost", k, "*", price)
    p.step(f"paying with ${bill} leaves", bill, "-", c)
    return (f"{n} buys {k} {items} that cost ${price} each and pays with a ${bill} bill. "
            f"How much change, in dollars, does {n} get back?")


def wage_then_spend(p: Problem) -> str:
    n = p.name()
    rate, hours = p.int(5, 15), p.int(2, 8)
    earned = rate * hours
    spent = p.int(3, earned - 1)
    e = p.step(f"{n} earns ${rate} per hour for {hours} hours", rate, "*", hours)
    p.step(f"after spending ${spent}, {n} keeps", e, "-", spent)
    return (f"{n} earns ${rate} per hour and works {hours} hours. Then {n} spends ${spent} on lunch. "
            f"How many dollars does {n} have left?")


def pages_left(p: Problem) -> str:
    n = p.name()
    per, days = p.int(5, 20), p.int(2, 7)
    read = per * days
    total = read + p.int(5, 60)
    r = p.step(f"{n} reads {per} pages a day for {days} days", per, "*", days)
    p.step(f"the book has {total} pages, so the pages left are", total, "-", r)
    return (f"{n}'s book has {total} pages. {n} reads {per} pages every day for {days} days. "
            f"How many pages are left to read?")


def more_than_together(p: Problem) -> str:
    a_name, b_name, t = *p.names(2), p.thing()
    a, k = p.int(10, 45), p.int(3, 30)
    b = p.step(f"{b_name} has {k} more {t} than {a_name}", a, "+", k)
    p.step(f"together they have", a, "+", b)
    return (f"{a_name} has {a} {t}. {b_name} has {k} more {t} than {a_name}. "
            f"How many {t} do they have together?")


def twice_together(p: Problem) -> str:
    a_name, b_name, t = *p.names(2), p.thing()
    a, m = p.int(5, 30), p.int(2, 4)
    word = {2: "twice", 3: "three times", 4: "four times"}[m]
    b = p.step(f"{b_name} has {word} as many {t} as {a_name}", a, "*", m)
    p.step(f"together they have", a, "+", b)
    return (f"{a_name} has {a} {t}. {b_name} has {word} as many {t} as {a_name}. "
            f"How many {t} do they have in total?")


def bus_stops(p: Problem) -> str:
    start = p.int(15, 50)
    off = p.int(2, start - 3)
    on = p.int(2, 30)
    r = p.step(f"{start} passengers minus {off} who get off", start, "-", off)
    p.step(f"then {on} people get on", r, "+", on)
    return (f"A bus has {start} passengers. At the first stop {off} passengers get off and {on} "
            f"passengers get on. How many passengers are on the bus now?")


def bake_and_eat(p: Problem) -> str:
    n = p.name()
    trays, per = p.int(2, 6), p.int(6, 15)
    total = trays * per
    eaten = p.int(2, min(total - 1, 20))
    c = p.step(f"{trays} trays with {per} cookies each make", trays, "*", per)
    p.step(f"after eating {eaten}, there are", c, "-", eaten)
    return (f"{n} bakes {trays} trays of cookies with {per} cookies on each tray. "
            f"The family eats {eaten} cookies. How many cookies are left?")


def garden_rows(p: Problem) -> str:
    n = p.name()
    rows, per, extra = p.int(2, 9), p.int(4, 15), p.int(2, 20)
    plant = p.pick(("tomato plants", "tulips", "carrots", "sunflowers", "rose bushes", "pepper plants"))
    r = p.step(f"{rows} rows of {per} {plant} make", rows, "*", per)
    p.step(f"adding {extra} more {plant} gives", r, "+", extra)
    return (f"{n} plants {rows} rows of {plant} with {per} in each row, and then plants {extra} more "
            f"{plant} by the fence. How many {plant} did {n} plant?")


def weekly_savings(p: Problem) -> str:
    n = p.name()
    start, per, weeks = p.int(5, 40), p.int(3, 15), p.int(2, 8)
    s = p.step(f"{n} saves ${per} a week for {weeks} weeks", per, "*", weeks)
    p.step(f"adding the ${start} {n} already had gives", start, "+", s)
    return (f"{n} has ${start} saved. {n} saves ${per} every week for {weeks} weeks. "
            f"How many dollars does {n} have then?")


def class_absent(p: Problem) -> str:
    boys, girls = p.int(8, 20), p.int(8, 20)
    absent = p.int(1, 9)
    s = p.step(f"the class has {boys} boys and {girls} girls", boys, "+", girls)
    p.step(f"with {absent} students absent, the students present are", s, "-", absent)
    return (f"A class has {boys} boys and {girls} girls. {absent} students are absent today. "
            f"How many students are in class today?")


def bags_then_share(p: Problem) -> str:
    n, t = p.name(), p.thing()
    bags, per = p.int(2, 6), p.int(2, 10)
    total = bags * per
    friends = p.pick([d for d in range(2, 10) if total % d == 0] or [1])
    c = p.step(f"{bags} bags with {per} {t} in each hold", bags, "*", per)
    p.step(f"sharing them equally among {friends} friends gives each friend", c, "/", friends)
    return (f"{n} buys {bags} bags of {t} with {per} {t} in each bag and shares them equally among "
            f"{friends} friends. How many {t} does each friend get?")


def age_later(p: Problem) -> str:
    a_name, b_name = p.names(2)
    a, older, later = p.int(5, 40), p.int(2, 30), p.int(2, 15)
    b = p.step(f"{b_name} is {older} years older than {a_name}", a, "+", older)
    p.step(f"in {later} years {b_name} will be", b, "+", later)
    return (f"{a_name} is {a} years old. {b_name} is {older} years older than {a_name}. "
            f"How old will {b_name} be in {later} years?")


def rectangle_perimeter(p: Problem) -> str:
    length, width = p.int(5, 40), p.int(3, 30)
    thing = p.pick(("garden", "playground", "table", "field", "room", "poster", "pool"))
    s = p.step(f"one length plus one width is", length, "+", width)
    p.step(f"the perimeter is twice that", s, "*", 2)
    return (f"A rectangular {thing} is {length} meters long and {width} meters wide. "
            f"What is the perimeter of the {thing} in meters?")


def rectangle_area(p: Problem) -> str:
    length, width = p.int(3, 9), p.int(4, 30)
    thing = p.pick(("rug", "garden", "patio", "wall", "board", "floor"))
    p.step(f"the area is length times width", length, "*", width)
    return (f"A rectangular {thing} is {length} meters wide and {width} meters long. "
            f"What is its area in square meters?")


def task_minutes(p: Problem) -> str:
    n = p.name()
    per, k, rest = p.int(3, 15), p.int(2, 9), p.int(5, 20)
    task = p.pick(("math problems", "letters", "drawings", "puzzles", "songs", "laps"))
    m = p.step(f"{k} {task} at {per} minutes each take", k, "*", per)
    p.step(f"adding a {rest} minute break gives", m, "+", rest)
    return (f"{n} spends {per} minutes on each of {k} {task} and then takes a {rest} minute break. "
            f"How many minutes is that in total?")


def shop_stock(p: Problem) -> str:
    place = p.pick(("bakery", "market", "store", "cafe", "bookshop"))
    (item, items) = p.pick(SHOP_ITEMS)
    morning, afternoon = p.int(5, 30), p.int(5, 30)
    stock = morning + afternoon + p.int(3, 40)
    sold = p.step(f"the {place} sells {morning} in the morning and {afternoon} in the afternoon",
                  morning, "+", afternoon)
    p.step(f"from {stock} {items}, the {items} left are", stock, "-", sold)
    return (f"A {place} has {stock} {items}. It sells {morning} {items} in the morning and "
            f"{afternoon} {items} in the afternoon. How many {items} are left?")


def how_many_more(p: Problem) -> str:
    a_name, b_name, t = *p.names(2), p.thing()
    b = p.int(5, 50)
    a = b + p.int(2, 40)
    p.step(f"{a_name} has {a} and {b_name} has {b}", a, "-", b)
    return f"{a_name} has {a} {t} and {b_name} has {b} {t}. How many more {t} does {a_name} have than {b_name}?"


def half_then_buy(p: Problem) -> str:
    n, m, t = *p.names(2), p.thing()
    half, bought = p.int(4, 40), p.int(3, 30)
    a = 2 * half
    h = p.step(f"{n} gives half of {a} {t} to {m}, keeping", a, "/", 2)
    p.step(f"then {n} buys {bought} more", h, "+", bought)
    return (f"{n} has {a} {t} and gives half of them to {m}. Then {n} buys {bought} more {t}. "
            f"How many {t} does {n} have now?")


def teams_players(p: Problem) -> str:
    teams, per, coaches = p.int(2, 8), p.int(5, 12), p.int(2, 9)
    sport = p.pick(("soccer", "basketball", "volleyball", "hockey", "rugby", "baseball"))
    r = p.step(f"{teams} teams with {per} players each have", teams, "*", per)
    p.step(f"adding {coaches} coaches gives", r, "+", coaches)
    return (f"A {sport} tournament has {teams} teams with {per} players on each team, plus {coaches} "
            f"coaches. How many people are at the tournament?")


def parking_spots(p: Problem) -> str:
    levels, per = p.int(2, 6), p.int(10, 30)
    total = levels * per
    used = p.int(5, total - 1)
    s = p.step(f"{levels} levels with {per} spots each have", levels, "*", per)
    p.step(f"with {used} cars parked, the empty spots are", s, "-", used)
    return (f"A parking garage has {levels} levels with {per} spots on each level. {used} cars are "
            f"parked there. How many spots are empty?")


def lose_find_share(p: Problem) -> str:
    n, t = p.name(), p.thing()
    friends, each = p.int(2, 6), p.int(3, 12)
    total = friends * each
    found = p.int(1, min(15, total - 1))
    lost = p.int(2, 15)
    start = total - found + lost
    a = p.step(f"{n} starts with {start} {t} and loses {lost}", start, "-", lost)
    b = p.step(f"then {n} finds {found}", a, "+", found)
    p.step(f"{b} {t} shared equally among {friends} friends gives each friend", b, "/", friends)
    return (f"{n} has {start} {t}. {n} loses {lost} of them, then finds {found} more. {n} shares all "
            f"the {t} equally among {friends} friends. How many {t} does each friend get?")


def recipe_short(p: Problem) -> str:
    n = p.name()
    per, batches = p.int(2, 9), p.int(2, 6)
    need = per * batches
    have = p.int(1, need - 1)
    food = p.pick(("cups of flour", "eggs", "cups of sugar", "cups of milk", "spoons of butter"))
    c = p.step(f"{batches} batches with {per} {food} each need", batches, "*", per)
    p.step(f"{n} has {have}, so {n} still needs", c, "-", have)
    return (f"One batch of muffins needs {per} {food}. {n} wants to make {batches} batches and has "
            f"{have} {food}. How many more {food} does {n} need?")


def two_legs_distance(p: Problem) -> str:
    n = p.name()
    s1, h1, s2, h2 = p.int(3, 20), p.int(2, 5), p.int(3, 20), p.int(2, 5)
    vehicle = p.pick(("bikes", "walks", "rides a scooter", "drives a cart", "rows a boat"))
    a = p.step(f"{n} goes {s1} km per hour for {h1} hours", s1, "*", h1)
    b = p.step(f"then {s2} km per hour for {h2} hours", s2, "*", h2)
    p.step(f"the total distance is", a, "+", b)
    return (f"{n} {vehicle} at {s1} km per hour for {h1} hours, then at {s2} km per hour for {h2} "
            f"hours. How many kilometers does {n} travel in total?")


def pencils_class(p: Problem) -> str:
    n = p.name()
    students, each = p.int(2, 9), p.int(2, 6)
    left = students * each
    used = p.int(2, 15)
    per_pack = p.int(4, 12)
    packs = -(-(left + used) // per_pack)
    used = packs * per_pack - left
    total = p.step(f"{packs} packs of {per_pack} pencils hold", packs, "*", per_pack)
    r = p.step(f"after using {used} pencils, {n} has", total, "-", used)
    p.step(f"sharing {r} pencils equally among {students} students gives each student", r, "/", students)
    return (f"{n} buys {packs} packs of pencils with {per_pack} pencils in each pack. {n} uses {used} "
            f"pencils and shares the rest equally among {students} students. How many pencils does "
            f"each student get?")


def temperature(p: Problem) -> str:
    start, rise = p.int(5, 25), p.int(2, 15)
    fall = p.int(2, start + rise - 1)
    city = p.pick(("the town", "the city", "the village", "the desert", "the valley"))
    a = p.step(f"the temperature starts at {start} degrees and rises {rise}", start, "+", rise)
    p.step(f"then it falls {fall} degrees", a, "-", fall)
    return (f"In {city} the temperature was {start} degrees in the morning. It rose {rise} degrees by "
            f"noon and fell {fall} degrees by night. What was the temperature at night?")


def three_friends(p: Problem) -> str:
    a_name, b_name, c_name = p.names(3)
    t = p.thing()
    a, more, fewer = p.int(10, 40), p.int(2, 20), p.int(2, 9)
    b = p.step(f"{b_name} has {more} more than {a_name}", a, "+", more)
    c = p.step(f"{c_name} has {fewer} fewer than {b_name}", b, "-", fewer)
    ab = p.step(f"{a_name} and {b_name} together have", a, "+", b)
    p.step(f"adding {c_name}'s {t} gives", ab, "+", c)
    return (f"{a_name} has {a} {t}. {b_name} has {more} more {t} than {a_name}, and {c_name} has "
            f"{fewer} fewer {t} than {b_name}. How many {t} do the three friends have in all?")


def savings_goal(p: Problem) -> str:
    n, (item, _) = p.name(), p.pick(SHOP_ITEMS)
    per, weeks = p.int(2, 12), p.int(2, 9)
    have = p.int(2, 40)
    price = have + per * weeks
    need = p.step(f"the {item} costs ${price} and {n} has ${have}, so {n} needs", price, "-", have)
    p.step(f"saving ${per} a week takes", need, "/", per)
    return (f"{n} wants a {item} that costs ${price}. {n} has ${have} and saves ${per} each week. "
            f"How many weeks will it take {n} to have enough money?")


def tickets(p: Problem) -> str:
    adult, child = p.int(5, 15), p.int(2, 9)
    na, nc = p.int(2, 6), p.int(2, 6)
    place = p.pick(("zoo", "museum", "aquarium", "circus", "fair", "cinema"))
    a = p.step(f"{na} adult tickets at ${adult} each cost", na, "*", adult)
    c = p.step(f"{nc} child tickets at ${child} each cost", nc, "*", child)
    p.step(f"all the tickets cost", a, "+", c)
    return (f"At the {place}, an adult ticket costs ${adult} and a child ticket costs ${child}. A family "
            f"buys {na} adult tickets and {nc} child tickets. How many dollars do they pay?")


def fish_tanks(p: Problem) -> str:
    n = p.name()
    tanks, per, added = p.int(2, 6), p.int(3, 12), p.int(2, 20)
    a = p.step(f"{tanks} tanks with {per} fish each hold", tanks, "*", per)
    p.step(f"adding {added} new fish gives", a, "+", added)
    return (f"{n} has {tanks} fish tanks with {per} fish in each tank. {n} buys {added} more fish. "
            f"How many fish does {n} have now?")


def library_books(p: Problem) -> str:
    per, days = p.int(2, 9), p.int(2, 6)
    out = per * days
    start = p.int(max(40, out + 1), 99)
    back = p.int(1, out)
    a = p.step(f"{per} books are borrowed each day for {days} days", per, "*", days)
    b = p.step(f"the library had {start} books, so after lending it has", start, "-", a)
    p.step(f"then {back} books are returned", b, "+", back)
    return (f"A library shelf has {start} books. Each day {per} books are borrowed, for {days} days. "
            f"Then {back} books are returned. How many books are on the shelf now?")


def average_score(p: Problem) -> str:
    n = p.name()
    avg = p.int(17, 30)
    a, b = p.int(avg - 8, avg + 8), p.int(avg - 8, avg + 8)
    c = 3 * avg - a - b
    game = p.pick(("games", "quizzes", "rounds", "matches"))
    s = p.step(f"the first two {game} give", a, "+", b)
    t = p.step(f"adding the third gives", s, "+", c)
    p.step(f"the average over 3 {game} is", t, "/", 3)
    return (f"{n} scored {a}, {b} and {c} points in three {game}. What is {n}'s average score?")


def eggs_cartons(p: Problem) -> str:
    hens, per = p.int(3, 12), p.int(2, 6)
    n = p.name()
    eggs = hens * per
    size = p.pick([d for d in (2, 3, 4, 6) if eggs % d == 0] or [1])
    e = p.step(f"{hens} hens laying {per} eggs each give", hens, "*", per)
    p.step(f"putting {size} eggs in each carton fills", e, "/", size)
    return (f"{n} has {hens} hens. Each hen lays {per} eggs a week. {n} puts the eggs into cartons of "
            f"{size}. How many cartons does {n} fill each week?")


def trip_costs(p: Problem) -> str:
    n = p.name()
    budget = p.int(70, 99)
    food, fuel = p.int(5, 30), p.int(5, 30)
    gifts = p.int(2, budget - food - fuel - 1)
    a = p.step(f"food and fuel cost", food, "+", fuel)
    b = p.step(f"adding ${gifts} for gifts gives", a, "+", gifts)
    p.step(f"from the ${budget} budget, {n} has left", budget, "-", b)
    return (f"{n} takes ${budget} on a trip and spends ${food} on food, ${fuel} on fuel and ${gifts} on "
            f"gifts. How many dollars does {n} have left?")


def weekly_total(p: Problem) -> str:
    n = p.name()
    weekday, weekend = p.int(2, 12), p.int(5, 20)
    act = p.pick(("minutes of piano", "pages", "push-ups", "laps in the pool", "words of a new language"))
    a = p.step(f"on 5 weekdays {n} does {weekday} {act} each day", 5, "*", weekday)
    b = p.step(f"on 2 weekend days {n} does {weekend} each day", 2, "*", weekend)
    p.step(f"the week's total is", a, "+", b)
    return (f"{n} practices {weekday} {act} on each weekday and {weekend} {act} on each day of the "
            f"weekend. How many {act} is that in one week?")


def stickers_pages(p: Problem) -> str:
    n, m = p.names(2)
    pages, per = p.int(2, 9), p.int(3, 12)
    gift = p.int(2, 20)
    a = p.step(f"{pages} pages with {per} stickers each hold", pages, "*", per)
    total = p.step(f"{m} gives {n} {gift} more", a, "+", gift)
    rest = p.int(1, total - 1)
    p.step(f"after putting {rest} on a poster, {n} has", total, "-", rest)
    return (f"{n}'s album has {pages} pages with {per} stickers on each page. {m} gives {n} {gift} more "
            f"stickers. {n} then puts {rest} stickers on a poster. How many stickers does {n} have left?")


def fruit_stand(p: Problem) -> str:
    (box, boxes) = p.pick(CONTAINERS)
    fruit = p.pick(("apples", "pears", "oranges", "plums", "lemons", "peaches"))
    k, per, bad = p.int(2, 7), p.int(5, 15), p.int(2, 12)
    price = p.int(2, 5)
    total = k * per
    bad = min(bad, total - 1)
    a = p.step(f"{k} {boxes} of {per} {fruit} hold", k, "*", per)
    good = p.step(f"throwing away {bad} bad {fruit} leaves", a, "-", bad)
    p.step(f"selling each for ${price} earns", good, "*", price)
    return (f"A fruit stand gets {k} {boxes} with {per} {fruit} in each {box}. {bad} {fruit} are bad and "
            f"are thrown away. The rest sell for ${price} each. How many dollars does the stand earn?")


def shopping_change(p: Problem) -> str:
    n = p.name()
    (i1, i1s), (i2, i2s) = p.rng.sample(SHOP_ITEMS, 2)
    k1, p1, k2, p2 = p.int(2, 5), p.int(2, 9), p.int(2, 5), p.int(2, 9)
    a = p.step(f"{k1} {i1s} at ${p1} each cost", k1, "*", p1)
    b = p.step(f"{k2} {i2s} at ${p2} each cost", k2, "*", p2)
    c = p.step(f"together they cost", a, "+", b)
    p.step(f"paying with $100 leaves", 100, "-", c)
    return (f"{n} buys {k1} {i1s} for ${p1} each and {k2} {i2s} for ${p2} each, and pays with a $100 "
            f"bill. How many dollars of change does {n} get?")


def farm_legs(p: Problem) -> str:
    n = p.name()
    cows, hens = p.int(2, 15), p.int(2, 20)
    four = p.pick(("cows", "goats", "sheep", "pigs", "horses"))
    two = p.pick(("chickens", "ducks", "geese", "turkeys"))
    a = p.step(f"{cows} {four} with 4 legs each have", cows, "*", 4)
    b = p.step(f"{hens} {two} with 2 legs each have", hens, "*", 2)
    p.step(f"all the animals have", a, "+", b)
    return f"{n}'s farm has {cows} {four} and {hens} {two}. How many legs do the animals have in all?"


TEMPLATES: tuple[Callable[[Problem], str], ...] = (
    buy_more, give_away, gain_then_lose, boxes_total, share_equally, unit_price, change_back,
    wage_then_spend, pages_left, more_than_together, twice_together, bus_stops, bake_and_eat,
    garden_rows, weekly_savings, class_absent, bags_then_share, age_later, rectangle_perimeter,
    rectangle_area, task_minutes, shop_stock, how_many_more, half_then_buy, teams_players,
    parking_spots, lose_find_share, recipe_short, two_legs_distance, pencils_class, temperature,
    three_friends, savings_goal, tickets, fish_tanks, library_books, average_score, eggs_cartons,
    trip_costs, weekly_total, stickers_pages, fruit_stand, shopping_change, farm_legs,
)


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
