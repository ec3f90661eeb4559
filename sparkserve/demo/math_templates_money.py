"""Math templates about prices, wages, savings and change.

Each template draws its numbers from `p`, records the solution steps with `p.step` and returns
the question. Every intermediate result is a non-negative integer (divisions are exact).
"""

from __future__ import annotations

from sparkserve.demo.corpus_math_base import CONTAINERS, SHOP_ITEMS, Problem


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


def weekly_savings(p: Problem) -> str:
    n = p.name()
    start, per, weeks = p.int(5, 40), p.int(3, 15), p.int(2, 8)
    s = p.step(f"{n} saves ${per} a week for {weeks} weeks", per, "*", weeks)
    p.step(f"adding the ${start} {n} already had gives", start, "+", s)
    return (f"{n} has ${start} saved. {n} saves ${per} every week for {weeks} weeks. "
            f"How many dollars does {n} have then?")


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
    p.step("all the tickets cost", a, "+", c)
    return (f"At the {place}, an adult ticket costs ${adult} and a child ticket costs ${child}. A family "
            f"buys {na} adult tickets and {nc} child tickets. How many dollars do they pay?")


def trip_costs(p: Problem) -> str:
    n = p.name()
    budget = p.int(70, 99)
    food, fuel = p.int(5, 30), p.int(5, 30)
    gifts = p.int(2, budget - food - fuel - 1)
    a = p.step("food and fuel cost", food, "+", fuel)
    b = p.step(f"adding ${gifts} for gifts gives", a, "+", gifts)
    p.step(f"from the ${budget} budget, {n} has left", budget, "-", b)
    return (f"{n} takes ${budget} on a trip and spends ${food} on food, ${fuel} on fuel and ${gifts} on "
            f"gifts. How many dollars does {n} have left?")


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
    c = p.step("together they cost", a, "+", b)
    p.step("paying with $100 leaves", 100, "-", c)
    return (f"{n} buys {k1} {i1s} for ${p1} each and {k2} {i2s} for ${p2} each, and pays with a $100 "
            f"bill. How many dollars of change does {n} get?")


TEMPLATES = (unit_price, change_back, wage_then_spend, weekly_savings, recipe_short, savings_goal, tickets, trip_costs, fruit_stand, shopping_change,)
