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

MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ORG_WORDS = ("Northern", "Coastal", "United", "Royal", "Free", "Eastern", "Highland", "Harbour", "Central", "Old")
ORG_KINDS = ("Rail Company", "Water Board", "Builders' Guild", "Transport Office", "Works Department", "Energy Trust")
PARTIES = ("the Lantern Party", "the Harvest League", "the Blue Accord", "the Civic Union", "the Green Circle", "the Tide Movement")
FIELDS = ("marine biology", "astronomy", "botany", "geology", "medicine", "physics", "archaeology", "zoology")
FINDS = (
    ("species of deep-sea eel", "eel"), ("comet", "comet"), ("flowering moss", "moss"), ("blue crystal", "crystal"),
    ("ancient bronze ship", "ship"), ("species of cave beetle", "beetle"), ("underground lake", "lake"),
    ("burial chamber", "chamber"),
)
PLACES = ("the northern glacier", "a flooded mine", "the bottom of the bay", "a mountain cave", "an abandoned quarry",
          "the old salt marshes", "a forest valley", "a volcanic island")
SPORT_SUFFIX = ("Rovers", "United", "Athletic", "Wanderers", "Harriers", "Mariners", "Rangers", "Comets")
CUPS = ("Silver Oar Cup", "Founders' Shield", "Iron Boot Trophy", "Northern Star Cup", "Harbour Bell Trophy")
FESTIVALS = ("Lantern Festival", "Festival of Kites", "Salt and Honey Fair", "Midwinter Bell Festival", "River Music Week")
ATTRACTIONS = ("a parade of paper boats", "a giant clock made of ice", "a choir of two thousand singers",
               "a night market on the river", "a race of wooden horses", "a display of glowing lanterns")
INDUSTRIES = ("glass factory", "shipyard", "paper mill", "textile works", "steel foundry", "cannery")
DEMANDS = ("shorter shifts", "a pay rise of nine percent", "safer scaffolding", "longer holidays", "a new pension plan")
STORMS = ("Storm Idris", "Storm Kalda", "Storm Morwen", "Storm Tavish", "Storm Ysolde", "Storm Brannoc")
GOODS = ("timber", "salt", "wool", "copper", "grain", "olive oil", "glassware", "dried fish")


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


def _place(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(vocab.COUNTRIES)
    return rng.choice((country.capital, *country.cities)), country.name


def _date(rng: random.Random) -> tuple[str, str, str]:
    return str(rng.randint(1, 28)), rng.choice(MONTHS), str(rng.randint(2031, 2036))


def _bridge(rng: random.Random) -> NewsDocument:
    city, country = _place(rng)
    d, m, y = _date(rng)
    engineer, minister = make_name(rng), make_name(rng)
    name = make_name(rng).split()[1]
    workers, years, cost = rng.randint(3, 19) * 100, rng.randint(2, 9), rng.randint(12, 95) * 10
    org = f"the {rng.choice(ORG_WORDS)} {rng.choice(ORG_KINDS)}"
    lead = f"{city}, {country}: On {d} {m} {y}, {org} opened the new {name} Bridge over the harbour of {city}."
    body = (
        f"Chief engineer {engineer} led a team of {workers} workers who spent {years} years on the project. "
        f"The bridge cost {cost} million crowns and carries trains as well as cars. "
        f"Transport minister {minister} called it the pride of {country}, while residents complained about the noise."
    )
    facts = (
        (f"Who was the chief engineer of the {name} Bridge in {city}?", engineer),
        (f"How much did the {name} Bridge in {city} cost?", f"{cost} million crowns"),
        (f"How many workers built the {name} Bridge?", str(workers)),
    )
    return NewsDocument(f"{lead} {body}", lead, body, facts)


def _election(rng: random.Random) -> NewsDocument:
    city, country = _place(rng)
    d, m, y = _date(rng)
    winner, loser = make_name(rng), make_name(rng)
    party = rng.choice(PARTIES)
    pct = rng.randint(41, 78)
    promise = rng.choice(("free night buses", "a new public library", "cleaner rivers", "cheaper rents", "a tram line"))
    lead = f"{city}, {country}: Voters in {city} elected {winner} of {party} as their new mayor on {d} {m} {y}."
    body = (
        f"{winner} won {pct} percent of the vote and defeated the sitting mayor, {loser}. "
        f"During the campaign the new mayor promised {promise} within two years. "
        f"Turnout was the highest the city had seen in a decade, officials said."
    )
    facts = (
        (f"Who was elected mayor of {city} in {y}?", winner),
        (f"What share of the vote did {winner} win in the {city} election?", f"{pct} percent"),
        (f"What did {winner} promise the voters of {city}?", promise),
    )
    return NewsDocument(f"{lead} {body}", lead, body, facts)


def _discovery(rng: random.Random) -> NewsDocument:
    city, country = _place(rng)
    d, m, y = _date(rng)
    leader = make_name(rng)
    field = rng.choice(FIELDS)
    (thing, short), place = rng.choice(FINDS), rng.choice(PLACES)
    name = make_name(rng).split()[1]
    lead = f"{city}, {country}: Scientists at the {city} Institute of {field.title()} announced on {d} {m} {y} the discovery of a {thing}."
    body = (
        f"The team, led by professor {leader}, found the {short} in {place} after a search of several months. "
        f"They have named it the {name} {short}. "
        f"Other researchers said the find could change what is known about the region."
    )
    facts = (
        (f"Who led the team that found the {name} {short}?", leader),
        (f"Where was the {name} {short} found?", place),
        (f"Which institute announced the discovery of the {name} {short}?", f"the {city} Institute of {field.title()}"),
    )
    return NewsDocument(f"{lead} {body}", lead, body, facts)


def _cup_final(rng: random.Random) -> NewsDocument:
    (c1, country), (c2, _) = _place(rng), _place(rng)
    while c2 == c1:
        c2, _ = _place(rng)
    d, m, y = _date(rng)
    t1, t2 = f"{c1} {rng.choice(SPORT_SUFFIX)}", f"{c2} {rng.choice(SPORT_SUFFIX)}"
    scorer, coach = make_name(rng), make_name(rng)
    cup = rng.choice(CUPS)
    s2 = rng.randint(0, 3)
    s1 = s2 + rng.randint(1, 2)
    minute = rng.randint(50, 89)
    lead = f"{c1}, {country}: {t1} won the {cup} on {d} {m} {y}, beating {t2} by {s1} goals to {s2}."
    body = (
        f"Forward {scorer} scored the winning goal in the {minute}th minute. "
        f"Coach {coach} said the victory belonged to the supporters who had waited years for a trophy. "
        f"Thousands of fans gathered in the main square of {c1} to celebrate."
    )
    facts = (
        (f"Who scored the winning goal for {t1} in the {cup} of {y}?", scorer),
        (f"Which team did {t1} beat in the {cup} of {y}?", t2),
        (f"Who coached {t1} when they won the {cup}?", coach),
    )
    return NewsDocument(f"{lead} {body}", lead, body, facts)


def _festival(rng: random.Random) -> NewsDocument:
    city, country = _place(rng)
    d, m, y = _date(rng)
    organiser = make_name(rng)
    festival = rng.choice(FESTIVALS)
    visitors, days = rng.randint(20, 190) * 1000, rng.randint(3, 9)
    attraction = rng.choice(ATTRACTIONS)
    lead = f"{city}, {country}: The {festival} of {city} opened on {d} {m} {y} and will last {days} days."
    body = (
        f"Organiser {organiser} expects about {visitors} visitors this year. "
        f"The main attraction is {attraction} in the old harbour. "
        f"Local bakers sell spiced bread, and hotels in the city are fully booked."
    )
    facts = (
        (f"Who organised the {festival} of {city} in {y}?", organiser),
        (f"What is the main attraction of the {festival} of {city}?", attraction),
        (f"How many visitors were expected at the {festival} of {city}?", str(visitors)),
    )
    return NewsDocument(f"{lead} {body}", lead, body, facts)


def _strike(rng: random.Random) -> NewsDocument:
    city, country = _place(rng)
    d, m, y = _date(rng)
    leader, owner = make_name(rng), make_name(rng)
    industry = rng.choice(INDUSTRIES)
    workers = rng.randint(2, 40) * 50
    demand = rng.choice(DEMANDS)
    lead = f"{city}, {country}: {workers} workers at the {city} {industry} went on strike on {d} {m} {y}."
    body = (
        f"Union leader {leader} said the workers want {demand}. "
        f"The owner of the {industry}, {owner}, called the demands impossible and closed the gates. "
        f"Talks between the two sides are expected to resume next week."
    )
    facts = (
        (f"Who led the strike at the {city} {industry}?", leader),
        (f"What did the striking workers of the {city} {industry} want?", demand),
        (f"Who owns the {city} {industry}?", owner),
    )
    return NewsDocument(f"{lead} {body}", lead, body, facts)


def _storm(rng: random.Random) -> NewsDocument:
    city, country = _place(rng)
    d, m, y = _date(rng)
    official = make_name(rng)
    storm = rng.choice(STORMS)
    homes, speed = rng.randint(2, 90) * 10, rng.randint(90, 180)
    river = rng.choice(vocab.COUNTRIES).river
    lead = f"{city}, {country}: {storm} struck {city} on {d} {m} {y} with winds of {speed} kilometres an hour."
    body = (
        f"Floodwater from {river} entered {homes} homes near the old town. "
        f"Rescue chief {official} said nobody was seriously hurt and praised the volunteers. "
        f"Schools stayed closed for two days while crews cleared fallen trees."
    )
    facts = (
        (f"Who led the rescue work when {storm} hit {city}?", official),
        (f"How many homes were flooded when {storm} hit {city}?", str(homes)),
        (f"How fast were the winds of {storm} in {city}?", f"{speed} kilometres an hour"),
    )
    return NewsDocument(f"{lead} {body}", lead, body, facts)


def _trade(rng: random.Random) -> NewsDocument:
    city, country = _place(rng)
    other = rng.choice([c for c in vocab.COUNTRIES if c.name != country])
    d, m, y = _date(rng)
    envoy, critic = make_name(rng), make_name(rng)
    good = rng.choice(GOODS)
    years = rng.randint(3, 15)
    lead = f"{city}, {country}: {country} and {other.name} signed a trade agreement in {city} on {d} {m} {y}."
    body = (
        f"The deal removes all taxes on {good} between the two countries for {years} years. "
        f"Trade envoy {envoy} negotiated the agreement over eighteen months. "
        f"Farmers' leader {critic} warned that small producers could lose their markets."
    )
    facts = (
        (f"Who negotiated the trade agreement between {country} and {other.name}?", envoy),
        (f"Which goods are freed from taxes by the agreement between {country} and {other.name}?", good),
        (f"For how many years does the trade agreement between {country} and {other.name} last?", f"{years} years"),
    )
    return NewsDocument(f"{lead} {body}", lead, body, facts)


EVENTS: tuple[Callable[[random.Random], NewsDocument], ...] = (
    _bridge, _election, _discovery, _cup_final, _festival, _strike, _storm, _trade,
)
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
