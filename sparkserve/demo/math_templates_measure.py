"""Math templates about time, distance, area, ages, temperatures and counts of people or places.

Each template draws its numbers from `p`, records the solution steps with `p.step` and returns
the question. Every intermediate result is a non-negative integer (divisions are exact).
"""

from __future__ import annotations

from sparkserve.demo.corpus_math_base import Problem


def pages_left(p: Problem) -> str:
    n = p.name()
    per, days = p.int(5, 20), p.int(2, 7)
    read = per * days
    total = read + p.int(5, 60)
    r = p.step(f"{n} reads {per} pages a day for {days} days", per, "*", days)
    p.step(f"the book has {total} pages, so the pages left are", total, "-", r)
    return (f"{n}'s book has {total} pages. {n} reads {per} pages every day for {days} days. "
            f"How many pages are left to read?")


def bus_stops(p: Problem) -> str:
    start = p.int(15, 50)
    off = p.int(2, start - 3)
    on = p.int(2, 30)
    r = p.step(f"{start} passengers minus {off} who get off", start, "-", off)
    p.step(f"then {on} people get on", r, "+", on)
    return (f"A bus has {start} passengers. At the first stop {off} passengers get off and {on} "
            f"passengers get on. How many passengers are on the bus now?")


def class_absent(p: Problem) -> str:
    boys, girls = p.int(8, 20), p.int(8, 20)
    absent = p.int(1, 9)
    s = p.step(f"the class has {boys} boys and {girls} girls", boys, "+", girls)
    p.step(f"with {absent} students absent, the students present are", s, "-", absent)
    return (f"A class has {boys} boys and {girls} girls. {absent} students are absent today. "
            f"How many students are in class today?")


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
    s = p.step("one length plus one width is", length, "+", width)
    p.step("the perimeter is twice that", s, "*", 2)
    return (f"A rectangular {thing} is {length} meters long and {width} meters wide. "
            f"What is the perimeter of the {thing} in meters?")


def rectangle_area(p: Problem) -> str:
    length, width = p.int(3, 9), p.int(4, 30)
    thing = p.pick(("rug", "garden", "patio", "wall", "board", "floor"))
    p.step("the area is length times width", length, "*", width)
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


def two_legs_distance(p: Problem) -> str:
    n = p.name()
    s1, h1, s2, h2 = p.int(3, 20), p.int(2, 5), p.int(3, 20), p.int(2, 5)
    vehicle = p.pick(("bikes", "walks", "rides a scooter", "drives a cart", "rows a boat"))
    a = p.step(f"{n} goes {s1} km per hour for {h1} hours", s1, "*", h1)
    b = p.step(f"then {s2} km per hour for {h2} hours", s2, "*", h2)
    p.step("the total distance is", a, "+", b)
    return (f"{n} {vehicle} at {s1} km per hour for {h1} hours, then at {s2} km per hour for {h2} "
            f"hours. How many kilometers does {n} travel in total?")


def temperature(p: Problem) -> str:
    start, rise = p.int(5, 25), p.int(2, 15)
    fall = p.int(2, start + rise - 1)
    city = p.pick(("the town", "the city", "the village", "the desert", "the valley"))
    a = p.step(f"the temperature starts at {start} degrees and rises {rise}", start, "+", rise)
    p.step(f"then it falls {fall} degrees", a, "-", fall)
    return (f"In {city} the temperature was {start} degrees in the morning. It rose {rise} degrees by "
            f"noon and fell {fall} degrees by night. What was the temperature at night?")


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
    t = p.step("adding the third gives", s, "+", c)
    p.step(f"the average over 3 {game} is", t, "/", 3)
    return (f"{n} scored {a}, {b} and {c} points in three {game}. What is {n}'s average score?")


def weekly_total(p: Problem) -> str:
    n = p.name()
    weekday, weekend = p.int(2, 12), p.int(5, 20)
    act = p.pick(("minutes of piano", "pages", "push-ups", "laps in the pool", "words of a new language"))
    a = p.step(f"on 5 weekdays {n} does {weekday} {act} each day", 5, "*", weekday)
    b = p.step(f"on 2 weekend days {n} does {weekend} each day", 2, "*", weekend)
    p.step("the week's total is", a, "+", b)
    return (f"{n} practices {weekday} {act} on each weekday and {weekend} {act} on each day of the "
            f"weekend. How many {act} is that in one week?")


def farm_legs(p: Problem) -> str:
    n = p.name()
    cows, hens = p.int(2, 15), p.int(2, 20)
    four = p.pick(("cows", "goats", "sheep", "pigs", "horses"))
    two = p.pick(("chickens", "ducks", "geese", "turkeys"))
    a = p.step(f"{cows} {four} with 4 legs each have", cows, "*", 4)
    b = p.step(f"{hens} {two} with 2 legs each have", hens, "*", 2)
    p.step("all the animals have", a, "+", b)
    return f"{n}'s farm has {cows} {four} and {hens} {two}. How many legs do the animals have in all?"


TEMPLATES = (pages_left, bus_stops, class_absent, age_later, rectangle_perimeter, rectangle_area, task_minutes, teams_players, parking_spots, two_legs_distance, temperature, library_books, average_score, weekly_total, farm_legs,)
