"""Russian utterances for the synthetic corpus: hand-written sentences and templates (ru_sentences.txt) filled from
faker's ru_RU providers, with numbers spelled out by num2words. Deterministic given a `random.Random`.

`TextSource.utterance(rng)` returns the text to speak (with capitals and punctuation, for espeak's intonation);
`to_transcript(spoken, keep_yo)` turns it into an Open STT transcript: lowercase Cyrillic and spaces, hyphenated
words joined, ё kept only when asked (Open STT keeps it in ~12 % of utterances).
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

from num2words import num2words

SENTENCES_FILE = Path(__file__).with_name("ru_sentences.txt")
ALPHABET = set(" абвгдеёжзийклмнопрстуфхцчшщъыьэюя")

_SLOT = re.compile(r"\{(\w+)(?::([^}]*))?\}")
_GENDERED = re.compile(r"\[([^|\]]*)\|([^\]]*)\]")
_INNER_HYPHEN = re.compile(r"(?<=\w)[-\u2010\u2011]+(?=\w)")
_NOT_LETTER = re.compile(r"[\s!-/:-@\[-`{-~«»„“”…—–]+")

MONTHS_GEN = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября", "октября",
              "ноября", "декабря")
WEEKDAYS = ("понедельник", "вторник", "среда", "четверг", "пятница", "суббота", "воскресенье")
WEEKDAYS_ACC = ("понедельник", "вторник", "среду", "четверг", "пятницу", "субботу", "воскресенье")
STREET_TYPES = {"ул.": "улица", "алл.": "аллея", "наб.": "набережная", "пр.": "проспект", "пер.": "переулок",
                "бул.": "бульвар", "ш.": "шоссе"}
LEGAL_FORMS = re.compile(r"^(ООО|ОАО|ЗАО|АО|ПАО|РАО|НПО|ИП|МКК|КБ|ЛК|ТК|НИИ|Группа компаний|ГК)\s+")


def to_transcript(spoken: str, keep_yo: bool = False) -> str:
    """Open STT form: lowercase, hyphenated words joined, everything but letters → single spaces."""
    text = _INNER_HYPHEN.sub("", spoken.lower())
    if not keep_yo:
        text = text.replace("ё", "е")
    text = _NOT_LETTER.sub(" ", text).strip()
    if not set(text) <= ALPHABET:  # digits and Latin must be spelled out by the source, never dropped
        raise ValueError(f"cannot write {spoken!r} in Open STT's alphabet: {sorted(set(text) - ALPHABET)}")
    return text


def plural(n: int, forms: tuple[str, str, str]) -> str:
    """Russian noun form after the number n: (один) рубль, (два) рубля, (пять) рублей."""
    if 11 <= n % 100 <= 14:
        return forms[2]
    return forms[0] if n % 10 == 1 else forms[1] if 2 <= n % 10 <= 4 else forms[2]


def cardinal(n: int, gender: str = "m") -> str:
    return num2words(n, lang="ru", gender=gender)


def _small(rng: random.Random) -> int:
    """Mostly small numbers, sometimes up to a hundred: like counts in everyday speech."""
    return rng.randint(1, 12) if rng.random() < 0.5 else rng.randint(1, 99)


def _big(rng: random.Random) -> int:
    return int(10 ** rng.uniform(2, 6))


class TextSource:
    """Sentences, templates and the name / place lists that fill them."""

    def __init__(self, path: Path = SENTENCES_FILE):
        from faker import Faker
        from faker.providers.address.ru_RU import Provider as Address
        from faker.providers.job.ru_RU import Provider as Job
        from faker.providers.person.ru_RU import Provider as Person

        sections: dict[str, list[str]] = {"short": [], "sentences": [], "templates": []}
        current = "sentences"
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@"):
                current = line[1:]
                continue
            sections[current].append(line)
        self.short, self.sentences, self.templates = sections["short"], sections["sentences"], sections["templates"]
        self.first = {"m": list(Person.first_names_male), "f": list(Person.first_names_female)}
        self.last = {"m": list(Person.last_names_male), "f": list(Person.last_names_female)}
        self.middle = {"m": list(Person.middle_names_male), "f": list(Person.middle_names_female)}
        self.cities = [c for c in Address.city_names if _speakable(c)]
        self.countries = [c for c in Address.countries if _speakable(c)]
        self.street_titles = list(Address.street_titles)
        self.street_types = list(STREET_TYPES.values())
        self.jobs = [j for j in (j.lower() for j in Job.jobs) if _speakable(j)]
        self._faker = Faker("ru_RU")  # only for the phrase generators (company, bs, catch_phrase, color)

    def utterance(self, rng: random.Random) -> str:
        """One utterance to speak: 1–3 words (~10 %), one sentence or template, or two joined (~15 %)."""
        r = rng.random()
        if r < 0.10:
            return rng.choice(self.short).capitalize()
        first = self._one(rng)
        if r > 0.85:
            second = self._one(rng)
            if len((first + " " + second).split()) <= 18:
                return first + " " + second
        return first

    def _one(self, rng: random.Random) -> str:
        if rng.random() < 0.7:
            return self.fill(rng.choice(self.templates), rng)
        return rng.choice(self.sentences)

    def fill(self, template: str, rng: random.Random) -> str:
        gender = rng.choice("mf")
        text = _GENDERED.sub(lambda m: m.group(1) if gender == "m" else m.group(2), template)
        text = _SLOT.sub(lambda m: self._slot(m.group(1), m.group(2), gender, rng), text)
        return text[0].upper() + text[1:]

    def _slot(self, name: str, forms: str | None, gender: str, rng: random.Random) -> str:
        if forms is not None:  # a counted noun: {n:рубль|рубля|рублей}
            words = tuple(forms.split("|"))
            n = _big(rng) if name.startswith("big") else _small(rng)
            g = "f" if name.endswith("f") else "n" if name == "nn" else "m"
            return f"{cardinal(n, g)} {plural(n, words)}"
        first, last, middle = (rng.choice(self.first[gender]), rng.choice(self.last[gender]),
                               rng.choice(self.middle[gender]))
        if name == "name":
            return first
        if name == "surname":
            return last
        if name == "full":
            return f"{first} {last}"
        if name == "fio":
            return f"{last} {first} {middle}"
        if name == "io":
            return f"{first} {middle}"
        if name == "city":
            return rng.choice(self.cities)
        if name == "country":
            return rng.choice(self.countries)
        if name == "street":
            return f"{rng.choice(self.street_types)} {rng.choice(self.street_titles)}"
        if name == "job":
            return rng.choice(self.jobs)
        if name in ("company", "bs", "phrase", "color"):
            return self._faker_phrase(name, rng)
        if name == "weekday":
            return rng.choice(WEEKDAYS)
        if name == "weekday_acc":
            return rng.choice(WEEKDAYS_ACC)
        if name == "month":
            return _month(rng.randrange(12))
        if name == "date":
            return f"{num2words(rng.randint(1, 28), lang='ru', to='ordinal', case='genitive')} " \
                   f"{rng.choice(MONTHS_GEN)}"
        if name == "year_loc":
            return num2words(_year(rng), lang="ru", to="ordinal", case="prepositional")
        if name == "year_gen":
            return num2words(_year(rng), lang="ru", to="ordinal", case="genitive")
        if name == "year_ord":
            return num2words(_year(rng), lang="ru", to="ordinal")
        if name == "time":
            h, m = rng.randrange(24), rng.choice((0, 0, 5, 10, 15, 20, 30, 40, 45, 50, rng.randrange(60)))
            hours = f"{cardinal(h)} {plural(h, ('час', 'часа', 'часов'))}"
            return hours if m == 0 else f"{hours} {cardinal(m, 'f')} {plural(m, ('минута', 'минуты', 'минут'))}"
        if name == "n":
            return cardinal(rng.randint(0, 100))
        if name == "big":
            return cardinal(_big(rng))
        if name == "ord":
            return num2words(rng.randint(1, 30), lang="ru", to="ordinal")
        if name == "ordf":
            return num2words(rng.randint(1, 30), lang="ru", to="ordinal", gender="f")
        if name == "pct":
            n = rng.randint(1, 99)
            return f"{cardinal(n)} {plural(n, ('процент', 'процента', 'процентов'))}"
        if name == "temp":
            n = rng.randint(0, 35)
            sign = "" if n == 0 else rng.choice(("плюс ", "минус "))
            return f"{sign}{cardinal(n)} {plural(n, ('градус', 'градуса', 'градусов'))}"
        raise KeyError(f"unknown slot {{{name}}}")

    def _faker_phrase(self, name: str, rng: random.Random) -> str:
        self._faker.seed_instance(rng.getrandbits(32))
        for _ in range(20):
            if name == "company":
                text = LEGAL_FORMS.sub("", self._faker.company()).replace("«", "").replace("»", "")
            elif name == "bs":
                text = self._faker.bs().lower()
            elif name == "phrase":
                text = self._faker.catch_phrase()
            else:
                text = self._faker.color_name().lower()
            if _speakable(text):
                return text
        return "ромашка"

    def space_size(self) -> float:
        """Rough count of distinct sentences one draw can produce (log10), to show it cannot be memorised."""
        person = max(len(self.first["m"]) * len(self.last["m"]) * len(self.middle["m"]), 1)
        sizes = {"name": len(self.first["m"]) + len(self.first["f"]), "surname": len(self.last["m"]) * 2,
                 "full": person / len(self.middle["m"]) * 2, "fio": person * 2,
                 "io": len(self.first["m"]) * len(self.middle["m"]) * 2, "city": len(self.cities),
                 "country": len(self.countries), "street": len(self.street_types) * len(self.street_titles),
                 "job": len(self.jobs), "company": 1000, "bs": 1000, "phrase": 1000, "color": 50, "weekday": 7,
                 "weekday_acc": 7, "month": 12, "date": 28 * 12, "year_loc": 200, "year_gen": 200,
                 "year_ord": 200, "time": 24 * 60, "n": 101, "big": 10000, "ord": 30, "ordf": 30, "pct": 99,
                 "temp": 71}
        total = len(self.short) + len(self.sentences)
        for template in self.templates:
            count = 2.0 if _GENDERED.search(template) else 1.0
            for m in _SLOT.finditer(template):
                count *= 99 if m.group(2) is not None and not m.group(1).startswith("big") else \
                    10000 if m.group(2) is not None else sizes[m.group(1)]
            total += count
        singles = total
        return math.log10(singles + singles * singles * 0.15)


def _month(i: int) -> str:
    return ("январь", "февраль", "март", "апрель", "май", "июнь", "июль", "август", "сентябрь", "октябрь", "ноябрь",
            "декабрь")[i]


def _year(rng: random.Random) -> int:
    return rng.randint(1900, 2030) if rng.random() < 0.8 else rng.randint(1000, 1899)


def _speakable(text: str) -> bool:
    """Only Cyrillic words (no digits, Latin or abbreviations espeak would spell out)."""
    words = re.findall(r"[^\s,.;:!?«»()\"—–-]+", text)
    return bool(words) and all(re.fullmatch(r"[А-Яа-яЁё]+", w) and not (len(w) > 1 and w.isupper())
                               for w in words)
