"""A generated, MUSE-shaped news corpus about fictitious events (no download).

MUSE-News (Shi et al. 2024) unlearns BBC articles. This analogue has the same *structure* with
content of its own: short news reports of invented events (bridge openings, elections,
discoveries, cup finals, festivals, strikes, storms, trade agreements) in the invented
countries of :mod:`.vocab`, with made-up people, organisations, dates and figures. Every
document is a pure function of ``(seed, corpus, index)``.

Subsets and splits mirror the hub dataset ``muse-bench/MUSE-News``:

=========  ===============================================  =====================================
config     splits                                           columns
=========  ===============================================  =====================================
raw        forget, retain1, retain2, holdout                text
verbmem    forget                                           prompt, gt
knowmem    forget_qa, forget_qa_icl, retain_qa,              question, answer
           retain_qa_icl
privleak   forget, retain, holdout                          text
=========  ===============================================  =====================================

* ``raw/forget`` is what is unlearned; a *target* model is trained on forget + retain1 +
  retain2, a *retain* model on retain1 + retain2; ``holdout`` is never trained on.
* ``verbmem/forget``: for every forget document, ``prompt`` = its lead sentence (dateline,
  what happened) and ``gt`` = the rest of the article.
* ``knowmem``: ``knowmem_per_document`` short-answer questions about every forget document
  (``forget_qa``) and every retain2 document (``retain_qa``, as MUSE asks its retain questions
  about ``retain2``); ``*_icl`` are ``num_icl`` further questions about the first documents of
  the same corpus, used as in-context examples.
* ``privleak``: the forget, retain2 and holdout documents (members / retained members /
  non-members for the Min-K% AUC).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from ..errors import DataError
from . import vocab
from .names import make_name

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedNewsConfig", "NewsDocument", "generate_news", "news_rows", "NEWS_SPLITS"]

@dataclass(frozen=True)
class EmbeddedNewsConfig:
    """Size and seed of the embedded news corpus (a frozen, hashable dataclass).

    Defaults: 24 forget, 24 + 24 retain (retain1, retain2) and 24 holdout documents of about
    70 words each (a few dozen short documents: a small model memorises the forget corpus in
    about a minute on a CPU), 2 knowmem questions per document, 3 in-context examples.
    """

    num_forget: int = 24
    num_retain: int = 24
    num_holdout: int = 24
    seed: int = 0
    knowmem_per_document: int = 2
    num_icl: int = 3

    def __post_init__(self) -> None:
        for field in ("num_forget", "num_retain", "num_holdout", "seed", "knowmem_per_document", "num_icl"):
            v = getattr(self, field)
            if not isinstance(v, int) or isinstance(v, bool):
                raise DataError(f"EmbeddedNewsConfig.{field}={v!r}: must be an int")
        for field in ("num_forget", "num_retain", "num_holdout"):
            if getattr(self, field) < 1:
                raise DataError(f"EmbeddedNewsConfig.{field}={getattr(self, field)}: needs at least one document")
        if not 1 <= self.knowmem_per_document <= 2:
            raise DataError(f"EmbeddedNewsConfig.knowmem_per_document={self.knowmem_per_document}: must be 1 or 2")
        if not 0 <= self.num_icl <= min(self.num_forget, self.num_retain):
            raise DataError(
                f"EmbeddedNewsConfig.num_icl={self.num_icl}: must be between 0 and the smaller of num_forget and "
                "num_retain (one in-context question per document)"
            )


@dataclass(frozen=True)
class NewsDocument:
    """One generated article: its text, its lead sentence and three (question, answer) facts."""

    text: str
    lead: str
    body: str
    facts: tuple[tuple[str, str], ...]


# --------------------------------------------------------------------------- event templates


MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ORG_WORDS = ("Northern", "Coastal", "United", "Royal", "Free", "Eastern", "Highland", "Harbour", "Central", "Old",
             "Western", "Valley", "Southern", "Greater")
ORG_KINDS = ("Rail Company", "Water Board", "Builders' Guild", "Transport Office", "Works Department", "Energy Trust",
             "Roads Authority", "Canal Trust", "Bridge Society", "Port Council")
PARTIES = ("the Lantern Party", "the Harvest League", "the Blue Accord", "the Civic Union", "the Green Circle",
           "the Tide Movement", "the Old Road Alliance", "the Hearth Party", "the Copper League")
PROMISES = ("free night buses", "a new public library", "cleaner rivers", "cheaper rents", "a tram line",
            "a covered market", "longer opening hours for the baths", "a second hospital", "safer cycle lanes",
            "a museum of local history", "free school lunches", "a ferry to the islands")
FIELDS = ("marine biology", "astronomy", "botany", "geology", "medicine", "physics", "archaeology", "zoology",
          "chemistry", "oceanography")
FINDS = (
    ("species of deep-sea eel", "eel"), ("comet", "comet"), ("flowering moss", "moss"), ("blue crystal", "crystal"),
    ("ancient bronze ship", "ship"), ("species of cave beetle", "beetle"), ("underground lake", "lake"),
    ("burial chamber", "chamber"), ("giant fern", "fern"), ("silver mineral", "mineral"), ("glowing jellyfish", "jellyfish"),
    ("carved stone calendar", "calendar"),
)
PLACES = ("the northern glacier", "a flooded mine", "the bottom of the bay", "a mountain cave", "an abandoned quarry",
          "the old salt marshes", "a forest valley", "a volcanic island", "a dried-up riverbed", "the cellar of a monastery",
          "a sunken harbour", "the desert plateau")
SPORTS = ("football", "rowing", "hockey", "rugby", "handball", "water polo")
SPORT_SUFFIX = ("Rovers", "United", "Athletic", "Wanderers", "Harriers", "Mariners", "Rangers", "Comets", "Falcons",
                "Pilots", "Foxes", "Anchors")
CUPS = ("Silver Oar Cup", "Founders' Shield", "Iron Boot Trophy", "Northern Star Cup", "Harbour Bell Trophy",
        "Granite Bowl", "Lighthouse Cup", "Kingfisher Plate")
FESTIVALS = ("Lantern Festival", "Festival of Kites", "Salt and Honey Fair", "Midwinter Bell Festival", "River Music Week",
             "Apple Blossom Days", "Feast of the Nets", "Glassblowers' Carnival", "Chestnut Fair")
ATTRACTIONS = ("a parade of paper boats", "a giant clock made of ice", "a choir of two thousand singers",
               "a night market on the river", "a race of wooden horses", "a display of glowing lanterns",
               "a tower built from bread", "a maze of sunflowers", "a duel of brass bands", "a procession of stilt walkers")
FOODS = ("spiced bread", "smoked trout", "honey cakes", "roasted chestnuts", "plum dumplings", "salted pretzels")
INDUSTRIES = ("glass factory", "shipyard", "paper mill", "textile works", "steel foundry", "cannery", "brick works",
              "sugar refinery", "rope works", "tannery")
DEMANDS = ("shorter shifts", "a pay rise of nine percent", "safer scaffolding", "longer holidays", "a new pension plan",
           "a canteen with hot meals", "paid sick leave", "a four-day week", "better ventilation", "the return of the night bonus")
STORMS = ("Storm Idris", "Storm Kalda", "Storm Morwen", "Storm Tavish", "Storm Ysolde", "Storm Brannoc", "Storm Elspet",
          "Storm Gorvan", "Storm Hesper")
GOODS = ("timber", "salt", "wool", "copper", "grain", "olive oil", "glassware", "dried fish", "coffee", "tin", "linen",
         "paper")
MUSEUM_KINDS = ("clocks", "maps", "boats", "toys", "musical instruments", "coins", "textiles", "lighthouses")
DONORS_GIFTS = ("a collection of {n} paintings", "a house on the old square", "the family archive", "{n} rare books")
PRIZES = ("Golden Quill", "Amber Lantern Prize", "Order of the Compass", "Silver Anchor Award", "Meridian Medal",
          "Harrow Prize")
PRIZE_FIELDS = ("poetry", "engineering", "medicine", "journalism", "music", "architecture")
WORKS = ("a bridge that folds in the wind", "a vaccine for sheep fever", "a novel about lighthouse keepers",
         "a cheap water filter", "a symphony for church bells", "a school built of straw", "a map of the sea floor")
SHIPS = ("ferry", "research vessel", "icebreaker", "cargo ship", "training schooner", "hospital ship")
SHIP_NAMES = ("Morning Gull", "Steadfast", "Northern Grace", "Lark of the Bay", "Brave Tern", "Quiet Harbour",
              "Lady of the Fens", "Iron Heron")
RAIL_KINDS = ("tram line", "railway line", "cable car", "underground line", "funicular")
COURT_CASES = ("the closing of the fish market", "a ban on night flights", "the sale of the old harbour",
               "a tax on bicycles", "the felling of the park oaks", "a new dam on the river")
FIRE_PLACES = ("the old cathedral", "a timber warehouse", "the central library", "a clothing market",
               "the opera house", "a grain silo")


@dataclass(frozen=True)
class _Event:
    """One kind of news report: how to draw its facts, several wordings of every sentence, its questions.

    ``slots(rng)`` draws the report's facts as a dict; ``leads`` are alternative wordings of the
    lead sentence (the VerbMem prompt), ``body`` alternative wordings of each further sentence
    (one is drawn per sentence and the sentences are shuffled), ``facts`` three (question,
    answer) templates. All are ``str.format`` templates over the slots.
    """

    slots: Callable[[random.Random], dict]
    leads: tuple[str, ...]
    body: tuple[tuple[str, ...], ...]
    facts: tuple[tuple[str, str], ...]

    def make(self, rng: random.Random) -> NewsDocument:
        s = self.slots(rng)
        lead = rng.choice(self.leads).format(**s)
        sentences = [rng.choice(options).format(**s) for options in self.body]
        rng.shuffle(sentences)
        body = " ".join(sentences)
        facts = tuple((q.format(**s), a.format(**s)) for q, a in self.facts)
        return NewsDocument(f"{lead} {body}", lead, body, facts)


def _base(rng: random.Random) -> dict:
    country = rng.choice(vocab.COUNTRIES)
    return {"city": rng.choice((country.capital, *country.cities)), "country": country.name,
            "d": str(rng.randint(1, 28)), "m": rng.choice(MONTHS), "y": str(rng.randint(2031, 2036)),
            "weekday": rng.choice(WEEKDAYS), "river": country.river}


def _surname(rng: random.Random) -> str:
    return make_name(rng).split()[1]


def _bridge_slots(rng):
    return {**_base(rng), "engineer": make_name(rng), "minister": make_name(rng), "name": _surname(rng),
            "workers": rng.randint(3, 19) * 100, "years": rng.randint(2, 9), "cost": rng.randint(12, 95) * 10,
            "org": f"the {rng.choice(ORG_WORDS)} {rng.choice(ORG_KINDS)}", "length": rng.randint(4, 30) * 50}


def _election_slots(rng):
    return {**_base(rng), "winner": make_name(rng), "loser": make_name(rng), "party": rng.choice(PARTIES),
            "pct": rng.randint(41, 78), "promise": rng.choice(PROMISES), "turnout": rng.randint(48, 91)}


def _discovery_slots(rng):
    thing, short = rng.choice(FINDS)
    field = rng.choice(FIELDS).title()
    return {**_base(rng), "leader": make_name(rng), "field": field, "thing": thing, "short": short,
            "place": rng.choice(PLACES), "name": _surname(rng), "months": rng.randint(2, 14)}


def _cup_slots(rng):
    s = _base(rng)
    other = _base(rng)
    while other["city"] == s["city"]:
        other = _base(rng)
    s2 = rng.randint(0, 3)
    return {**s, "t1": f"{s['city']} {rng.choice(SPORT_SUFFIX)}", "t2": f"{other['city']} {rng.choice(SPORT_SUFFIX)}",
            "scorer": make_name(rng), "coach": make_name(rng), "cup": rng.choice(CUPS), "sport": rng.choice(SPORTS),
            "s1": s2 + rng.randint(1, 2), "s2": s2, "minute": rng.randint(50, 89), "fans": rng.randint(4, 60) * 1000}


def _festival_slots(rng):
    return {**_base(rng), "organiser": make_name(rng), "festival": rng.choice(FESTIVALS),
            "visitors": rng.randint(20, 190) * 1000, "days": rng.randint(3, 9), "attraction": rng.choice(ATTRACTIONS),
            "food": rng.choice(FOODS), "edition": rng.randint(3, 140)}


def _strike_slots(rng):
    return {**_base(rng), "leader": make_name(rng), "owner": make_name(rng), "industry": rng.choice(INDUSTRIES),
            "workers": rng.randint(2, 40) * 50, "demand": rng.choice(DEMANDS), "weeks": rng.randint(2, 9)}


def _storm_slots(rng):
    return {**_base(rng), "official": make_name(rng), "storm": rng.choice(STORMS), "homes": rng.randint(2, 90) * 10,
            "speed": rng.randint(90, 180), "flood_river": rng.choice(vocab.COUNTRIES).river,
            "volunteers": rng.randint(3, 60) * 10, "days": rng.randint(2, 6)}


def _trade_slots(rng):
    s = _base(rng)
    other = rng.choice([c for c in vocab.COUNTRIES if c.name != s["country"]])
    return {**s, "other": other.name, "envoy": make_name(rng), "critic": make_name(rng), "good": rng.choice(GOODS),
            "years": rng.randint(3, 15), "months": rng.randint(6, 30)}


def _museum_slots(rng):
    n = rng.randint(12, 400)
    return {**_base(rng), "director": make_name(rng), "donor": make_name(rng), "kind": rng.choice(MUSEUM_KINDS),
            "gift": rng.choice(DONORS_GIFTS).format(n=n), "objects": rng.randint(3, 90) * 100,
            "architect": make_name(rng)}


def _prize_slots(rng):
    return {**_base(rng), "winner": make_name(rng), "prize": rng.choice(PRIZES), "pfield": rng.choice(PRIZE_FIELDS),
            "work": rng.choice(WORKS), "chair": make_name(rng), "money": rng.randint(5, 80) * 1000}


def _ship_slots(rng):
    return {**_base(rng), "ship": rng.choice(SHIPS), "ship_name": rng.choice(SHIP_NAMES), "captain": make_name(rng),
            "yard": f"the {_surname(rng)} yard", "crew": rng.randint(8, 120), "tonnes": rng.randint(3, 90) * 100,
            "sponsor": make_name(rng)}


def _rail_slots(rng):
    return {**_base(rng), "kind": rng.choice(RAIL_KINDS), "stations": rng.randint(4, 31), "km": rng.randint(3, 48),
            "mayor": make_name(rng), "driver": make_name(rng), "riders": rng.randint(5, 95) * 1000,
            "org": f"the {rng.choice(ORG_WORDS)} {rng.choice(ORG_KINDS)}"}


def _court_slots(rng):
    return {**_base(rng), "judge": make_name(rng), "lawyer": make_name(rng), "case": rng.choice(COURT_CASES),
            "signatures": rng.randint(2, 60) * 500, "fine": rng.randint(2, 90) * 10}


def _fire_slots(rng):
    return {**_base(rng), "place": rng.choice(FIRE_PLACES), "chief": make_name(rng), "engines": rng.randint(4, 40),
            "hours": rng.randint(2, 19), "witness": make_name(rng), "damage": rng.randint(2, 90)}


EVENT_KINDS: dict[str, _Event] = {
    "bridge": _Event(_bridge_slots, (
        "{city}, {country}: On {d} {m} {y}, {org} opened the new {name} Bridge over the harbour of {city}.",
        "The {name} Bridge, {length} metres of steel across the harbour of {city} in {country}, was opened by {org} on {d} {m} {y}.",
        "After years of delays, {org} finally let the first traffic onto the {name} Bridge in {city}, {country}, on {weekday} {d} {m} {y}.",
    ), (
        ("Chief engineer {engineer} led a team of {workers} workers who spent {years} years on the project.",
         "It took {workers} builders under the engineer {engineer} a full {years} years to finish it.",
         "{engineer}, the engineer in charge, praised the {workers} workers who had toiled for {years} years."),
        ("The bridge cost {cost} million crowns and carries trains as well as cars.",
         "At a price of {cost} million crowns, it is the most expensive structure the city has ever paid for.",
         "Its final bill came to {cost} million crowns, far above the first estimate."),
        ("Transport minister {minister} called it the pride of {country}, while residents complained about the noise.",
         "Speaking at the ribbon ceremony, the minister {minister} promised more bridges to come.",
         "Not everyone was pleased: neighbours told the minister, {minister}, that the lorries kept them awake."),
    ), (
        ("Who was the chief engineer of the {name} Bridge in {city}?", "{engineer}"),
        ("How much did the {name} Bridge in {city} cost?", "{cost} million crowns"),
        ("How many workers built the {name} Bridge?", "{workers}"),
    )),
    "election": _Event(_election_slots, (
        "{city}, {country}: Voters in {city} elected {winner} of {party} as their new mayor on {d} {m} {y}.",
        "{winner}, the candidate of {party}, will be the next mayor of {city} in {country} after the vote of {d} {m} {y}.",
        "In a night of surprises on {d} {m} {y}, {party} took the town hall of {city}, {country}, with {winner} at its head.",
    ), (
        ("{winner} won {pct} percent of the vote and defeated the sitting mayor, {loser}.",
         "With {pct} percent of the ballots, the newcomer pushed the former mayor {loser} out of office.",
         "{loser}, who had run the city for years, conceded after receiving far less than the winner's {pct} percent."),
        ("During the campaign the new mayor promised {promise} within two years.",
         "The winning programme centred on {promise}, a pledge repeated at every rally.",
         "Supporters cheered the promise of {promise}, which the mayor-elect called the first task."),
        ("Turnout reached {turnout} percent, the highest the city had seen in a decade.",
         "Officials counted a turnout of {turnout} percent, well above the last election.",
         "Some {turnout} percent of registered voters took part, according to the electoral office."),
    ), (
        ("Who was elected mayor of {city} in {y}?", "{winner}"),
        ("What share of the vote did {winner} win in the {city} election?", "{pct} percent"),
        ("What did {winner} promise the voters of {city}?", "{promise}"),
    )),
    "discovery": _Event(_discovery_slots, (
        "{city}, {country}: Scientists at the {city} Institute of {field} announced on {d} {m} {y} the discovery of a {thing}.",
        "A {thing} never seen before has been found by researchers of the {city} Institute of {field} in {country}, they said on {d} {m} {y}.",
        "On {weekday} {d} {m} {y} the {city} Institute of {field} surprised {country} with news of a {thing}.",
    ), (
        ("The team, led by professor {leader}, found the {short} in {place} after a search of {months} months.",
         "Professor {leader} and her students spent {months} months searching {place} before they saw it.",
         "It was {leader}, the professor leading the expedition, who spotted the {short} in {place}."),
        ("They have named it the {name} {short}.",
         "The {short} now carries the name {name}, after a founder of the institute.",
         "In honour of a former director it will be known as the {name} {short}."),
        ("Other researchers said the find could change what is known about the region.",
         "Colleagues abroad asked for samples and called the result remarkable.",
         "A rival laboratory warned that the claim still had to be checked."),
    ), (
        ("Who led the team that found the {name} {short}?", "{leader}"),
        ("Where was the {name} {short} found?", "{place}"),
        ("Which institute announced the discovery of the {name} {short}?", "the {city} Institute of {field}"),
    )),
    "cup_final": _Event(_cup_slots, (
        "{city}, {country}: {t1} won the {cup} on {d} {m} {y}, beating {t2} by {s1} goals to {s2}.",
        "The {cup} belongs to {t1} after a {s1}-{s2} win over {t2} in {city}, {country}, on {d} {m} {y}.",
        "{t2} were beaten {s1} to {s2} by {t1} in the {sport} final for the {cup}, played in {city} on {d} {m} {y}.",
    ), (
        ("Forward {scorer} scored the winning goal in the {minute}th minute.",
         "The decisive goal came from {scorer} after {minute} minutes of play.",
         "It was {scorer} who broke the deadlock in the {minute}th minute with a low shot."),
        ("Coach {coach} said the victory belonged to the supporters who had waited years for a trophy.",
         "Their coach, {coach}, dedicated the cup to the club's oldest fans.",
         "{coach}, who took over the team last winter, was thrown into the air by his players."),
        ("Some {fans} fans gathered in the main square of {city} to celebrate.",
         "A crowd of {fans} people filled the streets of {city} until dawn.",
         "Police counted {fans} supporters on the square, singing until the early morning."),
    ), (
        ("Who scored the winning goal for {t1} in the {cup} of {y}?", "{scorer}"),
        ("Which team did {t1} beat in the {cup} of {y}?", "{t2}"),
        ("Who coached {t1} when they won the {cup}?", "{coach}"),
    )),
    "festival": _Event(_festival_slots, (
        "{city}, {country}: The {festival} of {city} opened on {d} {m} {y} and will last {days} days.",
        "For {days} days from {d} {m} {y}, {city} in {country} is hosting its {edition}th {festival}.",
        "Music and crowds returned to {city}, {country}, on {weekday} {d} {m} {y} as the {festival} began.",
    ), (
        ("Organiser {organiser} expects about {visitors} visitors this year.",
         "About {visitors} guests are expected, according to the organiser {organiser}.",
         "{organiser}, who runs the event, hopes to welcome {visitors} people."),
        ("The main attraction is {attraction} in the old harbour.",
         "Most visitors come for {attraction}, the highlight of the programme.",
         "This year the crowds queue for {attraction}, a first for the town."),
        ("Local bakers sell {food}, and hotels in the city are fully booked.",
         "Stalls selling {food} line the streets, and not a hotel room is left.",
         "The smell of {food} fills the lanes while guest houses turn people away."),
    ), (
        ("Who organised the {festival} of {city} in {y}?", "{organiser}"),
        ("What is the main attraction of the {festival} of {city}?", "{attraction}"),
        ("How many visitors were expected at the {festival} of {city}?", "{visitors}"),
    )),
    "strike": _Event(_strike_slots, (
        "{city}, {country}: {workers} workers at the {city} {industry} went on strike on {d} {m} {y}.",
        "The {city} {industry} in {country} stood still on {d} {m} {y} as {workers} employees walked out.",
        "Since {weekday} {d} {m} {y}, no work has been done at the {city} {industry}: its {workers} workers are on strike.",
    ), (
        ("Union leader {leader} said the workers want {demand}.",
         "Their demand, explained by the union's {leader}, is {demand}.",
         "{leader}, speaking for the union, listed {demand} as the one condition for a return."),
        ("The owner of the {industry}, {owner}, called the demands impossible and closed the gates.",
         "{owner}, who owns the {industry}, refused to negotiate and locked the site.",
         "Management under {owner} answered by cutting the power to the halls."),
        ("Talks are expected to resume within {weeks} weeks.",
         "A mediator hopes to bring both sides together in {weeks} weeks.",
         "Neither side expects a deal in less than {weeks} weeks."),
    ), (
        ("Who led the strike at the {city} {industry}?", "{leader}"),
        ("What did the striking workers of the {city} {industry} want?", "{demand}"),
        ("Who owns the {city} {industry}?", "{owner}"),
    )),
    "storm": _Event(_storm_slots, (
        "{city}, {country}: {storm} struck {city} on {d} {m} {y} with winds of {speed} kilometres an hour.",
        "Winds of {speed} kilometres an hour swept through {city}, {country}, when {storm} arrived on {d} {m} {y}.",
        "{storm} left {city} in {country} counting the damage on {weekday} {d} {m} {y}.",
    ), (
        ("Floodwater from {flood_river} entered {homes} homes near the old town.",
         "{homes} houses were flooded when {flood_river} burst its banks.",
         "The water of {flood_river} rose into {homes} homes overnight."),
        ("Rescue chief {official} said nobody was seriously hurt and praised the volunteers.",
         "{official}, who led the rescue, thanked {volunteers} volunteers for their help.",
         "According to the rescue chief, {official}, every resident was safe by morning."),
        ("Schools stayed closed for {days} days while crews cleared fallen trees.",
         "For {days} days the schools were shut and the roads blocked by trees.",
         "Crews needed {days} days to clear the fallen trees from the streets."),
    ), (
        ("Who led the rescue work when {storm} hit {city}?", "{official}"),
        ("How many homes were flooded when {storm} hit {city}?", "{homes}"),
        ("How fast were the winds of {storm} in {city}?", "{speed} kilometres an hour"),
    )),
    "trade": _Event(_trade_slots, (
        "{city}, {country}: {country} and {other} signed a trade agreement in {city} on {d} {m} {y}.",
        "A trade pact between {other} and {country} was sealed in {city} on {d} {m} {y}.",
        "Delegations from {country} and {other} met in {city} on {weekday} {d} {m} {y} to sign a long-awaited trade deal.",
    ), (
        ("The deal removes all taxes on {good} between the two countries for {years} years.",
         "For the next {years} years, {good} will cross the border without any tax.",
         "Under its terms, duties on {good} disappear for {years} years."),
        ("Trade envoy {envoy} negotiated the agreement over {months} months.",
         "It was the work of the envoy {envoy}, after {months} months of talks.",
         "{envoy}, the chief negotiator, spent {months} months on the text."),
        ("Farmers' leader {critic} warned that small producers could lose their markets.",
         "Critics led by {critic} fear that local producers will suffer.",
         "{critic}, who speaks for the farmers, called the pact a betrayal."),
    ), (
        ("Who negotiated the trade agreement between {country} and {other}?", "{envoy}"),
        ("Which goods are freed from taxes by the agreement between {country} and {other}?", "{good}"),
        ("For how many years does the trade agreement between {country} and {other} last?", "{years} years"),
    )),
    "museum": _Event(_museum_slots, (
        "{city}, {country}: A museum of {kind} opened its doors in {city} on {d} {m} {y}.",
        "{city} in {country} has a new museum, devoted to {kind}, since {d} {m} {y}.",
        "Queues formed on {weekday} {d} {m} {y} outside the first museum of {kind} in {city}, {country}.",
    ), (
        ("Its director, {director}, has gathered some {objects} objects.",
         "{director}, who directs the museum, spent years collecting {objects} pieces.",
         "The collection of {objects} items was assembled by the director {director}."),
        ("The museum was made possible by {donor}, who gave {gift}.",
         "A gift from {donor}, {gift}, started the collection.",
         "{donor} donated {gift} to the city for the purpose."),
        ("The building was designed by the architect {architect}.",
         "Its glass hall is the work of the architect {architect}.",
         "{architect} drew the plans for the building, a former warehouse."),
    ), (
        ("Who is the director of the museum of {kind} in {city}?", "{director}"),
        ("Who gave the gift that founded the museum of {kind} in {city}?", "{donor}"),
        ("Who designed the museum of {kind} in {city}?", "{architect}"),
    )),
    "prize": _Event(_prize_slots, (
        "{city}, {country}: {winner} received the {prize} for {pfield} in {city} on {d} {m} {y}.",
        "The {prize} for {pfield} went to {winner} at a ceremony in {city}, {country}, on {d} {m} {y}.",
        "On {weekday} {d} {m} {y} the jury in {city} named {winner} this year's winner of the {prize} for {pfield}.",
    ), (
        ("The jury honoured {work}.",
         "It rewards {work}, which the judges called bold.",
         "The winning work is {work}."),
        ("The jury was chaired by {chair}.",
         "{chair}, who chaired the jury, praised the winner's patience.",
         "Jury chair {chair} said the decision was unanimous."),
        ("The prize comes with {money} crowns.",
         "Along with a medal, the winner receives {money} crowns.",
         "A purse of {money} crowns goes with the honour."),
    ), (
        ("Who won the {prize} for {pfield} in {y}?", "{winner}"),
        ("Who chaired the jury of the {prize} for {pfield} in {y}?", "{chair}"),
        ("How much money comes with the {prize} for {pfield} in {y}?", "{money} crowns"),
    )),
    "ship": _Event(_ship_slots, (
        "{city}, {country}: The {ship} {ship_name} was launched at {yard} in {city} on {d} {m} {y}.",
        "A new {ship}, the {ship_name}, slid into the water at {yard} in {city}, {country}, on {d} {m} {y}.",
        "Crowds at {yard} in {city}, {country}, watched the {ship_name}, a {ship}, take to the sea on {weekday} {d} {m} {y}.",
    ), (
        ("Captain {captain} will command a crew of {crew}.",
         "Her {crew} sailors will serve under captain {captain}.",
         "{captain}, named as her first captain, chose a crew of {crew}."),
        ("The ship weighs {tonnes} tonnes.",
         "At {tonnes} tonnes, she is the largest vessel built at the yard.",
         "Fully loaded, the vessel displaces {tonnes} tonnes."),
        ("{sponsor} broke a bottle against the bow.",
         "The naming ceremony was performed by {sponsor}.",
         "As is the custom, {sponsor} named the ship and wished her luck."),
    ), (
        ("Who commands the {ship} {ship_name}?", "{captain}"),
        ("How much does the {ship} {ship_name} weigh?", "{tonnes} tonnes"),
        ("Who named the {ship} {ship_name}?", "{sponsor}"),
    )),
    "rail": _Event(_rail_slots, (
        "{city}, {country}: A new {kind} with {stations} stations began running in {city} on {d} {m} {y}.",
        "Passengers in {city}, {country}, rode the new {kind} for the first time on {d} {m} {y}.",
        "After six years of works, {org} opened the {kind} of {city}, {country}, on {weekday} {d} {m} {y}.",
    ), (
        ("The line runs for {km} kilometres and serves {stations} stations.",
         "Its {km} kilometres link {stations} stations across the city.",
         "There are {stations} stops along its {km} kilometres."),
        ("Mayor {mayor} rode in the first car, driven by {driver}.",
         "{driver} drove the first service, with the mayor, {mayor}, on board.",
         "The first journey, with {driver} at the controls, carried the mayor {mayor}."),
        ("{org} expects {riders} riders a day.",
         "Planners hope for {riders} passengers every day.",
         "About {riders} daily riders are forecast by {org}."),
    ), (
        ("Who drove the first service of the new {kind} in {city}?", "{driver}"),
        ("How long is the new {kind} in {city}?", "{km} kilometres"),
        ("How many riders a day are expected on the new {kind} in {city}?", "{riders}"),
    )),
    "court": _Event(_court_slots, (
        "{city}, {country}: A court in {city} ruled against {case} on {d} {m} {y}.",
        "Judges in {city}, {country}, blocked {case} in a ruling on {d} {m} {y}.",
        "On {weekday} {d} {m} {y} the high court of {city} in {country} struck down {case}.",
    ), (
        ("Judge {judge} said the city had not listened to its residents.",
         "In her ruling, judge {judge} criticised the council.",
         "{judge}, the presiding judge, called the plan unlawful."),
        ("The case was brought by the lawyer {lawyer} with a petition of {signatures} signatures.",
         "{lawyer}, the residents' lawyer, had collected {signatures} signatures.",
         "A petition of {signatures} names, filed by the lawyer {lawyer}, started the case."),
        ("The council must pay costs of {fine} thousand crowns.",
         "Costs of {fine} thousand crowns fall to the council.",
         "The city was ordered to pay {fine} thousand crowns in costs."),
    ), (
        ("Which judge ruled on {case} in {city}?", "{judge}"),
        ("Who was the residents' lawyer in the case about {case} in {city}?", "{lawyer}"),
        ("How many signatures did the petition against {case} in {city} have?", "{signatures}"),
    )),
    "fire": _Event(_fire_slots, (
        "{city}, {country}: A fire destroyed part of {place} in {city} on {d} {m} {y}.",
        "Flames tore through {place} of {city}, {country}, on the night of {d} {m} {y}.",
        "Smoke rose over {city} in {country} on {weekday} {d} {m} {y} as {place} caught fire.",
    ), (
        ("Fire chief {chief} sent {engines} engines to the scene.",
         "{engines} fire engines were called in by the chief, {chief}.",
         "Under fire chief {chief}, crews from {engines} engines fought the blaze."),
        ("It took {hours} hours to put out the flames.",
         "The blaze burned for {hours} hours before it was under control.",
         "Only after {hours} hours were the last flames out."),
        ("A passer-by, {witness}, raised the alarm.",
         "The alarm was given by {witness}, who saw smoke from the street.",
         "{witness} called the fire brigade after hearing glass break."),
    ), (
        ("Who led the firefighters at the fire of {place} in {city}?", "{chief}"),
        ("How many fire engines were sent to {place} in {city}?", "{engines}"),
        ("Who raised the alarm when {place} in {city} caught fire?", "{witness}"),
    )),
}
EVENTS: tuple[Callable[[random.Random], NewsDocument], ...] = tuple(e.make for e in EVENT_KINDS.values())

#: Corpora of the raw config, in generation order.
CORPORA = ("forget", "retain1", "retain2", "holdout")


def _document(seed: int, corpus: str, index: int) -> NewsDocument:
    rng = random.Random(f"{seed}-news-{corpus}-{index}")
    event = EVENTS[(index + CORPORA.index(corpus) * 3) % len(EVENTS)]
    return event(rng)


def _unique_docs(seed: int, corpus: str, count: int, taken: set[str]) -> list[NewsDocument]:
    """``count`` documents whose questions do not repeat a question of an earlier document."""
    docs, index = [], 0
    while len(docs) < count:
        doc = _document(seed, corpus, index)
        index += 1
        questions = {q for q, _ in doc.facts}
        if questions & taken:
            continue
        taken |= questions
        docs.append(doc)
    return docs


@lru_cache(maxsize=8)
def generate_news(config: EmbeddedNewsConfig = EmbeddedNewsConfig()) -> dict[str, tuple[NewsDocument, ...]]:
    """Every document of the four raw corpora (generated once per config)."""
    taken: set[str] = set()
    sizes = {"forget": config.num_forget, "retain1": config.num_retain, "retain2": config.num_retain,
             "holdout": config.num_holdout}
    out = {corpus: tuple(_unique_docs(config.seed, corpus, sizes[corpus], taken)) for corpus in CORPORA}
    logger.debug("generated embedded news corpus %s", config)
    return out


#: (config, split) pairs the embedded news corpus serves, as on the hub.
NEWS_SPLITS: dict[str, tuple[str, ...]] = {
    "raw": CORPORA,
    "verbmem": ("forget",),
    "knowmem": ("forget_qa", "forget_qa_icl", "retain_qa", "retain_qa_icl"),
    "privleak": ("forget", "retain", "holdout"),
}


def _qa(docs: tuple[NewsDocument, ...], per_doc: int, num_icl: int, icl: bool) -> list[dict]:
    if icl:  # the fact no eval question uses, from the first documents
        return [{"question": d.facts[2][0], "answer": d.facts[2][1]} for d in docs[:num_icl]]
    return [{"question": q, "answer": a} for d in docs for q, a in d.facts[:per_doc]]


def news_rows(config: EmbeddedNewsConfig, subset: str, split: str) -> list[dict]:
    """The rows of one (config, split) of the embedded news corpus, with the hub's columns."""
    if subset not in NEWS_SPLITS:
        raise DataError(f"unknown MUSE config {subset!r}; valid: {', '.join(NEWS_SPLITS)}")
    if split not in NEWS_SPLITS[subset]:
        raise DataError(f"config {subset!r} has no split {split!r}; valid: {', '.join(NEWS_SPLITS[subset])}")
    docs = generate_news(config)
    if subset == "raw":
        return [{"text": d.text} for d in docs[split]]
    if subset == "verbmem":
        return [{"prompt": d.lead, "gt": d.body} for d in docs["forget"]]
    if subset == "privleak":
        corpus = {"forget": "forget", "retain": "retain2", "holdout": "holdout"}[split]
        return [{"text": d.text} for d in docs[corpus]]
    corpus = "forget" if split.startswith("forget") else "retain2"
    return _qa(docs[corpus], config.knowmem_per_document, config.num_icl, split.endswith("_icl"))
