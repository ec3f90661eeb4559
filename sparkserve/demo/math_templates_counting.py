"""Math templates about collecting, giving, grouping and sharing objects.

Each template draws its numbers from `p`, records the solution steps with `p.step` and returns
the question. Every intermediate result is a non-negative integer (divisions are exact).
"""

from __future__ import annotations

from sparkserve.demo.corpus_math_base import CONTAINERS, SHOP_ITEMS, Problem


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


def more_than_together(p: Problem) -> str:
    a_name, b_name, t = *p.names(2), p.thing()
    a, k = p.int(10, 45), p.int(3, 30)
    b = p.step(f"{b_name} has {k} more {t} than {a_name}", a, "+", k)
    p.step("together they have", a, "+", b)
    return (f"{a_name} has {a} {t}. {b_name} has {k} more {t} than {a_name}. "
            f"How many {t} do they have together?")


def twice_together(p: Problem) -> str:
    a_name, b_name, t = *p.names(2), p.thing()
    a, m = p.int(5, 30), p.int(2, 4)
    word = {2: "twice", 3: "three times", 4: "four times"}[m]
    b = p.step(f"{b_name} has {word} as many {t} as {a_name}", a, "*", m)
    p.step("together they have", a, "+", b)
    return (f"{a_name} has {a} {t}. {b_name} has {word} as many {t} as {a_name}. "
            f"How many {t} do they have in total?")


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


def bags_then_share(p: Problem) -> str:
    n, t = p.name(), p.thing()
    bags, per = p.int(2, 6), p.int(2, 10)
    total = bags * per
    friends = p.pick([d for d in range(2, 10) if total % d == 0] or [1])
    c = p.step(f"{bags} bags with {per} {t} in each hold", bags, "*", per)
    p.step(f"sharing them equally among {friends} friends gives each friend", c, "/", friends)
    return (f"{n} buys {bags} bags of {t} with {per} {t} in each bag and shares them equally among "
            f"{friends} friends. How many {t} does each friend get?")


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


def fish_tanks(p: Problem) -> str:
    n = p.name()
    tanks, per, added = p.int(2, 6), p.int(3, 12), p.int(2, 20)
    a = p.step(f"{tanks} tanks with {per} fish each hold", tanks, "*", per)
    p.step(f"adding {added} new fish gives", a, "+", added)
    return (f"{n} has {tanks} fish tanks with {per} fish in each tank. {n} buys {added} more fish. "
            f"How many fish does {n} have now?")


def eggs_cartons(p: Problem) -> str:
    hens, per = p.int(3, 12), p.int(2, 6)
    n = p.name()
    eggs = hens * per
    size = p.pick([d for d in (2, 3, 4, 6) if eggs % d == 0] or [1])
    e = p.step(f"{hens} hens laying {per} eggs each give", hens, "*", per)
    p.step(f"putting {size} eggs in each carton fills", e, "/", size)
    return (f"{n} has {hens} hens. Each hen lays {per} eggs a week. {n} puts the eggs into cartons of "
            f"{size}. How many cartons does {n} fill each week?")


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


TEMPLATES = (buy_more, give_away, gain_then_lose, boxes_total, share_equally, more_than_together, twice_together, bake_and_eat, garden_rows, bags_then_share, shop_stock, how_many_more, half_then_buy, lose_find_share, pencils_class, three_friends, fish_tanks, eggs_cartons, stickers_pages,)
